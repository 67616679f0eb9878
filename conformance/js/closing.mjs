// Disconnecting official socket.io-client sockets without losing their goodbye.
// A long-polling engine sends its CLOSE packet in a POST after disconnect() returns
// (after the POST carrying the DISCONNECT packet): a process that exits at once
// loses it, and the server only sees the transport vanish (keeping the session for
// recovery, its pending long-poll open). The engine drops its listeners as it
// closes, so this watches the transport's state: closed, and its last POST done.

// Disconnect `socket` and resolve once its engine's goodbye went out (at most 5 s).
export function disconnectAndFlush(socket) {
  const engine = socket.io.engine;
  const transport = socket.connected && engine ? engine.transport : null;
  socket.disconnect();
  if (!transport || transport.name !== "polling") return Promise.resolve();
  const deadline = Date.now() + 5000;
  return new Promise((resolve) => {
    const check = () => {
      const sent = engine.readyState === "closed" && transport.writable === true;
      if (sent || Date.now() > deadline) resolve();
      else setTimeout(check, 10);
    };
    check();
  });
}
