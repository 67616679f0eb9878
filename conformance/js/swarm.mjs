// Many official socket.io-client sockets in one Node.js process (each with its own
// engine.io connection), for the no-sticky-sessions tests.
// stdin: one JSON command per line ({id, cmd, ...}); stdout: one JSON reply per line.
//   connect {url, count, transports}  -> {connected, errors}
//   news                              -> for each socket, the "news" it received
//   transports                        -> for each socket, its engine's transport now
//   close                             -> disconnects every socket
// Every socket answers "question" (v, ack) with ack(v + 1).
import { io } from "socket.io-client";
import { disconnectAndFlush, serveCommands } from "./driver.mjs";

const sockets = [];
const news = [];

function connectOne(url, transports) {
  return new Promise((resolve) => {
    const index = sockets.length;
    const socket = io(url, { transports, forceNew: true, reconnection: false, timeout: 20000 });
    sockets.push(socket);
    news.push([]);
    socket.on("news", (value) => news[index].push(value));
    socket.on("question", (value, ack) => ack(value + 1));
    socket.once("connect", () => resolve(null));
    socket.once("connect_error", (err) => resolve(String((err && err.message) || err)));
  });
}

async function handle(command) {
  switch (command.cmd) {
    case "connect": {
      const results = await Promise.all(
        Array.from({ length: command.count }, () => connectOne(command.url, command.transports)));
      const errors = results.filter((r) => r !== null);
      return { connected: results.length - errors.length, errors };
    }
    case "news":
      return news;
    case "transports":
      return sockets.map((s) => (s.io.engine && s.connected ? s.io.engine.transport.name : null));
    case "close":
      await Promise.all(sockets.map(disconnectAndFlush));
      return true;
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

serveCommands(handle, () => Promise.all(sockets.map(disconnectAndFlush)));
