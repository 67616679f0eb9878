// The official socket.io-client (npm, installed in conformance/js) as a driver of
// benchmarks/bench_distributor.py (--client js): the same figures as its Python client.
//
//   node benchmarks/distributor_client.mjs URL NAMESPACE
//
// Connects over websocket and prints {"ready": true}; then, for each JSON command on
// stdin, one JSON line on stdout:
//   {"cmd": "acked", "n": N, "window": W} -> {"seconds": S}     N acked events, W at once
//   {"cmd": "latency", "n": N}            -> {"latencies": [S]}  N calls one after another
//   {"cmd": "emits", "n": N}              -> {"seconds": S}     N events emitted to it
// or {"error": "..."}. Each command is bounded (120 s); the process exits when its stdin
// closes (its parent ended).
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

const require = createRequire(new URL("../conformance/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const WAIT_MS = 120_000;
const [url, nsp] = process.argv.slice(2);
const socket = io(url + nsp, { transports: ["websocket"], reconnection: false });

function call(event, data) {
  return socket.timeout(WAIT_MS).emitWithAck(event, data);
}

async function acked(count, window) {
  let next = 0;
  async function sender() {
    while (next < count) {
      const i = next++;
      if ((await call("ping", i)) !== i) throw new Error(`ping ${i} acked with something else`);
    }
  }
  const began = performance.now();
  await Promise.all(Array.from({ length: Math.min(window, count) }, sender));
  return (performance.now() - began) / 1000;
}

async function latencies(count) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const began = performance.now();
    if ((await call("ping", i)) !== i) throw new Error(`ping ${i} acked with something else`);
    out.push((performance.now() - began) / 1000);
  }
  return out;
}

let onEvent = () => {};
socket.on("e", (i) => onEvent(i));

function emits(count) {
  return new Promise((resolve, reject) => {
    let received = 0;
    const began = performance.now();
    const bound = setTimeout(() => {
      reject(new Error(`${received} of ${count} emitted events arrived in ${WAIT_MS} ms`));
    }, WAIT_MS);
    onEvent = (i) => {
      if (i !== received) reject(new Error(`event ${i} arrived as number ${received}`));
      received += 1;
      if (received === count) {
        clearTimeout(bound);
        resolve((performance.now() - began) / 1000);
      }
    };
    call("burst", count).then((answer) => {
      if (answer !== count) reject(new Error("burst acked with something else"));
    }, reject);
  });
}

async function run(command) {
  switch (command.cmd) {
    case "acked": return { seconds: await acked(command.n, command.window) };
    case "latency": return { latencies: await latencies(command.n) };
    case "emits": return { seconds: await emits(command.n) };
    default: throw new Error(`unknown command ${command.cmd}`);
  }
}

function report(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function main() {
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
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
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
