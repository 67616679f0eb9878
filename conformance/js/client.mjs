// Drives the official socket.io-client for the recovery conformance suite.
// stdin: one JSON command per line ({id, cmd, ...}); stdout: one JSON report per line
// (replies to commands, and connect / disconnect / event reports).
import { Manager } from "socket.io-client";
import { disconnectAndFlush, serveCommands } from "./driver.mjs";

let manager = null;
const sockets = new Map();

function report(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function wire(socket, nsp) {
  socket.on("connect", () => {
    report({
      type: "connect", nsp, sid: socket.id, recovered: socket.recovered === true,
      pid: socket._pid ?? null, eio: manager.engine ? manager.engine.id : null,
    });
  });
  socket.on("disconnect", (reason) => report({ type: "disconnect", nsp, reason }));
  socket.on("connect_error", (err) => {
    report({ type: "connect_error", nsp, message: String(err && err.message) });
  });
  socket.onAny((event, ...args) => {
    let acked = false;
    if (args.length && typeof args[args.length - 1] === "function") {
      args.pop()();  // the server asked for an ack: answer with nothing
      acked = true;
    }
    // With recovery the client passes the offset to handlers as the last argument
    // (and records it as _lastOffset once they return): report it apart.
    let offset = null;
    if (!acked && socket._pid && args.length && typeof args[args.length - 1] === "string") {
      offset = args.pop();
    }
    report({ type: "event", nsp, event, args: args.map(toJson), offset, acked });
  });
}

// binary arguments travel to Python as {"$bin": base64}
function toJson(value) {
  if (value instanceof ArrayBuffer) value = Buffer.from(value);
  if (Buffer.isBuffer(value)) return { $bin: value.toString("base64") };
  if (Array.isArray(value)) return value.map(toJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

async function handle(command) {
  switch (command.cmd) {
    case "connect": {
      if (manager === null) {
        manager = new Manager(command.url, {
          transports: command.transports, reconnection: false, autoConnect: false,
        });
        for (const nsp of command.namespaces) {
          const socket = manager.socket(nsp, { auth: command.auth ?? {} });
          wire(socket, nsp);
          sockets.set(nsp, socket);
        }
      } else {
        // the same client comes back, maybe through another node (as a load balancer
        // without sticky sessions would send it): the Manager opens its next engine
        // on this URL, and each socket sends its pid and last offset itself
        manager.uri = command.url;
        if (command.auth) {
          for (const socket of sockets.values()) socket.auth = command.auth;
        }
      }
      for (const socket of sockets.values()) socket.connect();
      return true;
    }
    case "disconnect":
      await Promise.all([...sockets.values()].map(disconnectAndFlush));
      return true;
    case "call": {
      const socket = sockets.get(command.nsp);
      return await socket.timeout(10000).emitWithAck(command.event, command.value);
    }
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

serveCommands(handle, () => Promise.all([...sockets.values()].map(disconnectAndFlush)));
