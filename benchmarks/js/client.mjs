// The official socket.io-client (npm, installed in benchmarks/js) as the receiving
// client of benchmarks/bench_cross_node.py (--client js): what its Python client
// measures, in a Node.js process.
//
//   node benchmarks/js/client.mjs URL
//
// Connects over websocket (the client's defaults otherwise, as shipped: it offers
// permessage-deflate) and prints {"ready": true}. Then one JSON line on stdout for each
// JSON command on stdin, answered at once:
//   {"cmd": "reset", "concurrency": C}  -> {"ok": true}   zero the counters; events
//        {"i": i, "k": k} from emitter k of C are expected in the order i = k, k+C, ...
//   {"cmd": "progress"}  -> {"count": N, "last": T, "warm": W, "out_of_order": O}
//   {"cmd": "join", "room": R}  -> {"ok": ACK}           the node's "join" handler
//   {"cmd": "latencies"}  -> {"latencies": [S, ...]}
// or {"error": "..."}. T, and the latencies (now - the event's "t"), are CLOCK_MONOTONIC
// seconds (process.hrtime.bigint()), the clock of Python's time.monotonic() on Linux.
// The process exits when its stdin closes (its parent ended).
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(new URL("./package.json", import.meta.url));
const { io } = require("socket.io-client");

const WAIT_MS = 10_000;
const [url] = process.argv.slice(2);
const socket = io(url, { transports: ["websocket"], reconnection: false });

function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

let count = 0;
let last = null;
let warm = 0;
let outOfOrder = 0;
let concurrency = 1;
let next = new Map();
let latencies = [];

socket.on("e", (data) => {
  const now = monotonic();
  const k = data.k ?? 0;
  if (data.i !== (next.get(k) ?? k)) outOfOrder += 1;
  next.set(k, data.i + concurrency);
  count += 1;
  last = now;
});
socket.on("lat", (data) => {
  const now = monotonic();
  latencies.push(now - data.t);
  count += 1;
  last = now;
});
socket.on("warm", () => {
  warm += 1;
});

async function run(command) {
  switch (command.cmd) {
    case "reset":
      count = 0;
      last = null;
      outOfOrder = 0;
      concurrency = command.concurrency ?? 1;
      next = new Map();
      latencies = [];
      return { ok: true };
    case "progress":
      return { count, last, warm, out_of_order: outOfOrder };
    case "join":
      return { ok: await socket.timeout(WAIT_MS).emitWithAck("join", command.room) };
    case "latencies":
      return { latencies };
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

function report(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function main() {
  await new Promise((resolve, reject) => {
    const bound = setTimeout(() => reject(new Error(`no connection in ${WAIT_MS} ms`)),
      WAIT_MS);
    socket.once("connect", () => {
      clearTimeout(bound);
      resolve();
    });
    socket.once("connect_error", reject);
  });
  report({ ready: true });
  for await (const line of createInterface({ input: process.stdin })) {
    try {
      report(await run(JSON.parse(line)));
    } catch (err) {
      report({ error: String(err && err.message ? err.message : err) });
    }
  }
  socket.disconnect();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
