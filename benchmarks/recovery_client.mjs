// The official socket.io-client (npm, installed in conformance/js) as the recovering
// client of benchmarks/bench_recovery.py (--client js).
//
//   node benchmarks/recovery_client.mjs
//
// One JSON command per line on stdin, one JSON line on stdout for each:
//   {"cmd": "connect", "url": U}        a new client on U, in room "r"
//                                       -> {"sid", "eio", "pid", "transport", "connect_ms"}
//   {"cmd": "hello"}                    -> {"offset"} once an event carried one
//   {"cmd": "dropped"}                  -> {"reason"} once the transport was lost
//   {"cmd": "recover", "url": U, "expected": N}
//        back on U: the clock starts just before the reconnection, and stops when the
//        handler gets the N-th missed "ev"; then 100 ms more for any extra event
//        -> {"recover_ms", "connect_ms", "first_event_ms", "upgrade_ms",
//            "on_polling", "values", "sid", "recovered", "transport"}
//   {"cmd": "close"}                    -> {}
// or {"error": "..."}. Every wait is bounded (60 s); the process exits when its stdin
// closes.
//
// The client has its default transports and options (polling first, then the upgrade
// to websocket, permessage-deflate offered), but for `reconnection: false`: the bench
// starts the reconnection itself, on another node (socket.io.uri = U, then
// socket.connect(), as the conformance driver does), instead of after the
// Manager's randomized 0.5-1.5 s delay, to the same URL. The reconnection itself is
// the same code: a new engine, then CONNECT carrying the pid and the last offset.
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

const require = createRequire(new URL("../conformance/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const WAIT_MS = 60_000;
const EXTRA_MS = 100;

let socket = null;
let onEvent = () => {};
let dropped = null;
let hello = null;

// `promise`, or an error after WAIT_MS naming `what` (a string, or a function giving one)
function within(promise, what) {
  let timer;
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const text = typeof what === "function" ? what() : what;
      reject(new Error(`${text}: not within ${WAIT_MS} ms`));
    }, WAIT_MS);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

function connected() {
  return new Promise((resolve, reject) => {
    const ok = () => { socket.off("connect_error", bad); resolve(); };
    const bad = (err) => { socket.off("connect", ok); reject(err); };
    socket.once("connect", ok);
    socket.once("connect_error", bad);
  });
}

async function connect(url) {
  if (socket !== null) socket.disconnect();
  const began = performance.now();
  socket = io(url, { reconnection: false, forceNew: true });
  dropped = new Promise((resolve) => socket.once("disconnect", resolve));
  hello = new Promise((resolve) => socket.once("hello", (_value, off) => resolve(off)));
  socket.on("ev", (value) => onEvent(value));
  await within(connected(), "connect");
  const connectMs = performance.now() - began;
  if ((await socket.timeout(WAIT_MS).emitWithAck("join", "r")) !== true) {
    throw new Error("could not join r");
  }
  return {
    sid: socket.id, eio: socket.io.engine.id, pid: socket._pid ?? null,
    transport: socket.io.engine.transport.name, connect_ms: connectMs,
  };
}

async function recover(url, expected) {
  const values = [];
  const engineTimes = {};
  let last = null;
  let first = null;
  let onPolling = 0;
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  onEvent = (value) => {
    const now = performance.now();
    if (first === null) first = now;
    if (socket.io.engine.transport.name === "polling") onPolling += 1;
    values.push(value);
    if (values.length === expected) {
      last = now;
      done();
    }
  };
  const lost = new Promise((resolve) => socket.once("disconnect", resolve));
  socket.io.uri = url;
  const began = performance.now();
  const back = connected().then(() => { engineTimes.connect = performance.now(); });
  socket.connect();
  const engine = socket.io.engine;
  engine.once("upgrade", () => { engineTimes.upgrade = performance.now(); });
  await within(Promise.race([all, lost.then((r) => {
    throw new Error(`disconnected (${r}) after ${values.length} events`);
  })]), () => `${values.length} of ${expected} missed events`);
  await back;
  await new Promise((resolve) => setTimeout(resolve, EXTRA_MS));
  onEvent = () => {};
  const ms = (t) => (t === undefined ? null : t - began);
  return {
    recover_ms: last - began, connect_ms: ms(engineTimes.connect),
    first_event_ms: first - began, upgrade_ms: ms(engineTimes.upgrade),
    on_polling: onPolling, values, sid: socket.id, recovered: socket.recovered === true,
    transport: socket.io.engine.transport.name,
  };
}

async function run(command) {
  switch (command.cmd) {
    case "connect": return await connect(command.url);
    case "hello": return { offset: await within(hello, "hello") };
    case "dropped": return { reason: await within(dropped, "disconnect") };
    case "recover": return await recover(command.url, command.expected);
    case "close":
      if (socket !== null) socket.disconnect();
      socket = null;
      return {};
    default: throw new Error(`unknown command ${command.cmd}`);
  }
}

function report(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

for await (const line of createInterface({ input: process.stdin })) {
  try {
    report(await run(JSON.parse(line)));
  } catch (err) {
    report({ error: String(err && err.message ? err.message : err) });
  }
}
if (socket !== null) socket.disconnect();
process.exit(0);
