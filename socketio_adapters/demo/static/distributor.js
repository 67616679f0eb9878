// The distributor demo's page: socketio_adapters/demo/chat_backend.py and
// counter_backend.py answer it, through the edge worker (edge.py) this tab is on.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const name = sessionStorage.getItem("distributor-demo-name")
    || `tab-${Math.random().toString(36).slice(2, 6)}`;
  sessionStorage.setItem("distributor-demo-name", name);
  $("me").textContent = name;
  const ACK_MS = 30000;

  // Two namespaces, one connection: both sockets share the client's Manager, so
  // they reach the same edge worker, which relays each to its own backend.
  const chat = io("/chat", { auth: { name } });
  const counter = io("/counter", { auth: { name } });
  let bestTotal = null;   // the highest total this tab saw (a new backend asks it)

  function showPid(id, pid) {
    if (pid === null || pid === undefined) return;
    $(id).textContent = `pid ${pid}`;
    $(id).dataset.pid = String(pid);
  }

  function showTransport() {
    const engine = chat.io.engine;
    const transport = engine && engine.transport ? engine.transport.name : "none";
    $("transport").textContent = transport;
    $("transport").dataset.transport = transport;
  }
  chat.io.on("open", () => {
    showTransport();
    chat.io.engine.on("upgrade", showTransport);
  });
  chat.io.on("close", showTransport);

  function setState(state, text) {
    $("state").dataset.state = state;
    $("state").textContent = text;
  }

  // "backend 1234 · edge 5678": who handled it, who relayed it
  function label(message) {
    const span = document.createElement("span");
    span.className = "label";
    const backend = document.createElement("span");
    backend.className = "backend";
    backend.textContent = `backend ${message.backend}`;
    const edge = document.createElement("span");
    edge.className = "edge";
    edge.textContent = `edge ${message.edge ?? "?"}`;
    span.append(backend, " · ", edge);
    return span;
  }

  function row(list, message, ...parts) {
    const item = document.createElement("li");
    item.dataset.backend = String(message.backend);
    item.dataset.edge = String(message.edge);
    item.dataset.name = message.name;
    if (message.name === name) item.classList.add("mine");
    item.append(label(message), " ", ...parts);
    list.append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  // Asks the backend who serves this tab; again if it does not answer (restarting).
  function hello(socket, backendId, then) {
    socket.timeout(ACK_MS).emit("hello", (err, info) => {
      if (err) {
        if (socket.connected) setTimeout(() => hello(socket, backendId, then), 1000);
        return;
      }
      showPid("edge", info.edge);
      showPid(backendId, info.backend);
      then(info);
    });
  }

  // ---------------------------------------------------------------- chat
  chat.on("connect", () => {
    setState("connected", "connected");
    hello(chat, "chat-backend", () => {});
  });
  chat.on("disconnect", (reason) => setState("disconnected", `disconnected (${reason})`));
  chat.on("connect_error", (err) => setState("disconnected", `cannot connect (${err.message})`));

  chat.on("members", (online) => {
    $("online").replaceChildren(...online.map((entry) => {
      const item = document.createElement("li");
      item.dataset.name = entry.name;
      item.dataset.edge = String(entry.edge);
      item.textContent = `${entry.name} · edge ${entry.edge ?? "?"}`;
      if (entry.name === name) item.classList.add("mine");
      return item;
    }));
  });

  chat.on("chat", (message) => {
    showPid("chat-backend", message.backend);
    const who = document.createElement("b");
    who.textContent = message.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    row($("messages"), message, who, ": ", text).dataset.id = message.id;
  });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (text) chat.emit("chat", { text });
    $("text").value = "";
  });

  // ---------------------------------------------------------------- counter
  function showGame(total, score) {
    if (typeof total === "number") {
      // never backwards: an ack may arrive after a later click's broadcast
      bestTotal = Math.max(bestTotal ?? 0, total);
      $("total").textContent = String(bestTotal);
      $("total").dataset.total = String(bestTotal);
    }
    if (typeof score === "number") {
      $("score").textContent = String(score);
      $("score").dataset.score = String(score);
    }
  }

  function showLeaders(leaders) {
    $("leaders").replaceChildren(...leaders.map((entry) => {
      const item = document.createElement("li");
      item.dataset.name = entry.name;
      item.dataset.score = String(entry.score);
      item.textContent = `${entry.name}: ${entry.score}`;
      if (entry.name === name) item.classList.add("mine");
      return item;
    }));
  }

  counter.on("connect", () => {
    hello(counter, "counter-backend", (info) => {
      showGame(info.total, info.score);
      showLeaders(info.leaders);
      $("click").disabled = false;
    });
  });
  counter.on("disconnect", () => { $("click").disabled = true; });

  // a (re)started counter backend asks every page for the highest total it saw
  counter.on("sync", (answer) => answer(bestTotal));

  counter.on("count", (update) => {
    showPid("counter-backend", update.backend);
    showGame(update.total, update.name === name ? update.score : undefined);
    showLeaders(update.leaders);
    const who = document.createElement("b");
    who.textContent = update.name;
    const item = row($("clicks"), update, who, ` +1 → total ${update.total}`);
    item.dataset.total = String(update.total);
  });

  $("click").addEventListener("click", () => {
    $("click").disabled = true;
    // the ack: the new total and this player's new score
    counter.timeout(ACK_MS).emit("click", (err, result) => {
      $("click").disabled = !counter.connected;
      if (!err) showGame(result.total, result.score);
    });
  });
})();
