// What the Node.js drivers of the official socket.io-client share: the command loop
// on stdin/stdout, and disconnecting without losing the goodbye.
import readline from "node:readline";

// Read one JSON command per line ({id, cmd, ...}) from stdin, answer each with
// {type: "reply", id, value} or {type: "reply", id, error} on stdout; once stdin
// closes, await `onEnd()` and exit.
export function serveCommands(handle, onEnd) {
  const input = readline.createInterface({ input: process.stdin });
  input.on("line", async (line) => {
    let command;
    try {
      command = JSON.parse(line);
    } catch (err) {
      process.stderr.write(`bad command line: ${line}\n`);
      return;
    }
    let reply;
    try {
      reply = { type: "reply", id: command.id, value: (await handle(command)) ?? null };
    } catch (err) {
      reply = { type: "reply", id: command.id, error: String((err && err.message) || err) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  });
  input.on("close", async () => {
    await onEnd();
    process.exit(0);
  });
}

// Disconnecting sockets without losing their goodbye.
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
