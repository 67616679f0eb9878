// The demo chat page: see socketio_adapters/demo/chat.py for the server side.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const name = sessionStorage.getItem("demo-name")
    || `tab-${Math.random().toString(36).slice(2, 6)}`;
  sessionStorage.setItem("demo-name", name);
  $("me").textContent = name;

  // The client's defaults: long-polling first, then the upgrade to websocket. The
  // workers share one port with no sticky routing: a request or websocket that
  // reaches another worker than the session's owner is served through the owner.
  const socket = io({ auth: { name } });
  let worker = null;        // {pid, node} of the worker this tab is connected to
  let received = 0;         // chat messages received so far
  let receivedAtConnect = 0;
  let connections = 0;
  let dropped = false;      // the user pressed "Drop connection"

  function setState(state, text) {
    $("state").dataset.state = state;
    $("state").textContent = text;
  }

  function setRecovery(state, text, missed = "") {
    $("recovery").dataset.state = state;
    $("recovery").dataset.missed = String(missed);
    $("recovery").textContent = text;
  }

  function showTransport() {
    const engine = socket.io.engine;
    const transport = engine && engine.transport ? engine.transport.name : "none";
    $("transport").textContent = transport;
    $("transport").dataset.transport = transport;
  }
  socket.io.on("open", () => {
    showTransport();
    socket.io.engine.on("upgrade", showTransport);
  });
  socket.io.on("close", showTransport);

  socket.on("connect", () => {
    connections += 1;
    receivedAtConnect = received;
    setState("connected", "connected");
    // Through the cluster's log, the answer comes after every event this tab missed.
    socket.emit("hello");
  });

  socket.on("disconnect", (reason) => {
    setState("disconnected", `disconnected (${reason})`);
  });

  socket.on("connect_error", (err) => {
    setState("disconnected", `cannot connect (${err.message})`);
  });

  socket.on("hello", (info) => {
    worker = info;
    $("worker").textContent = `pid ${info.pid}`;
    $("worker").dataset.pid = String(info.pid);
    $("worker").dataset.node = info.node;
    $("node").textContent = `(node ${info.node})`;
    for (const item of $("messages").children) markWorker(item);
    if (socket.recovered) {
      const missed = received - receivedAtConnect;
      const items = $("messages").children;
      for (let i = items.length - missed; i < items.length; i += 1) {
        items[i].classList.add("recovered");
      }
      setRecovery("recovered",
        `recovered ${missed} missed message${missed === 1 ? "" : "s"}`, missed);
    } else if (connections > 1) {
      setRecovery("new", "reconnected with a new session: missed messages are lost");
    } else {
      setRecovery("new", "new session");
    }
  });

  // messages relayed by another worker than the one this tab is on now
  function markWorker(item) {
    item.classList.toggle("elsewhere", worker !== null && item.dataset.pid !== String(worker.pid));
  }

  socket.on("presence", (online) => {
    const list = $("online");
    list.replaceChildren(...online.map((entry) => {
      const item = document.createElement("li");
      item.dataset.name = entry.name;
      item.dataset.pid = String(entry.pid);
      item.textContent = `${entry.name} on worker pid ${entry.pid ?? "?"}`;
      if (entry.name === name) item.classList.add("mine");
      return item;
    }));
  });

  socket.on("chat", (message) => {
    received += 1;
    const item = document.createElement("li");
    item.dataset.id = message.id;
    item.dataset.pid = String(message.pid);
    item.dataset.name = message.name;
    const label = document.createElement("span");
    label.className = "worker";
    label.textContent = `worker ${message.pid}`;
    const who = document.createElement("b");
    who.textContent = message.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    item.append(label, " ", who, ": ", text);
    if (message.name === name) item.classList.add("mine");
    markWorker(item);
    $("messages").append(item);
    item.scrollIntoView({ block: "nearest" });
  });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (text) socket.emit("chat", { text });
    $("text").value = "";
  });

  $("drop").addEventListener("click", () => {
    dropped = !dropped;
    if (dropped) {
      // close the transport as a network failure would, and stay away until asked
      socket.io.reconnection(false);
      if (socket.io.engine) socket.io.engine.close();
      $("drop").textContent = "Reconnect";
    } else {
      socket.io.reconnection(true);
      socket.connect();
      $("drop").textContent = "Drop connection";
    }
  });
})();
