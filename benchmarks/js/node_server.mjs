// One Node.js socket.io node of benchmarks/bench_cross_node.py: the `node` scenario
// (socket.io + @socket.io/redis-adapter, as its README sets it up) and `node-single`
// (no adapter), driven like benchmarks/node.py.
//
//   node benchmarks/js/node_server.mjs --mode adapter|single [--url redis://...]
//       [--channel NAME] [--port 0]
//
// Serves socket.io (server defaults: no websocket compression) on 127.0.0.1 and prints
// one JSON line, {"ready": true, "port": P, "pid": PID, "mode": M}. Then, over HTTP:
//   POST /bench/emit?n=N         io.emit("e", {i}) for i < n, in one loop (Node's emits
//                                are fire-and-forget: the adapter queues the PUBLISH)
//   POST /bench/latency?n=N&room=R&interval=S   io.to(R).emit("lat", {i, t}), then
//                                sleep S seconds, n times
//   POST /bench/warm             one io.emit("warm", {t})
//   GET  /bench/status           the current or last job, as benchmarks/node.py reports it
// "flushed" is when Redis answered a PING sent after the loop on the publishing client
// (node-redis keeps the order of commands): every PUBLISH had reached Redis then.
// Times (t, started) are CLOCK_MONOTONIC seconds (process.hrtime.bigint()), the clock
// of Python's time.monotonic() on Linux, so the Python driver can compare them.
// The process stops on SIGTERM/SIGINT, and by itself when its parent dies.
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const { values: opts } = parseArgs({
  options: {
    mode: { type: "string", default: "adapter" },
    url: { type: "string", default: "" },
    channel: { type: "string", default: "bench" },
    port: { type: "string", default: "0" },
  },
});
if (!["adapter", "single"].includes(opts.mode)) {
  throw new Error(`--mode adapter|single, not ${opts.mode}`);
}
if (opts.mode === "adapter" && !opts.url) throw new Error("--mode adapter needs --url");

const HOST = "127.0.0.1";
const parent = process.ppid;

/** CLOCK_MONOTONIC in seconds: what Python's time.monotonic() reads on Linux. */
function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

let pubClient = null;
let subClient = null;
let job = null;

function report(j) {
  const since = (mark) => (mark === null ? null : mark - j.started);
  return {
    kind: j.kind, n: j.n, done: j.done, error: j.error, started: j.started,
    loop_seconds: since(j.loopDone), flushed_seconds: since(j.flushed),
  };
}

async function flush() {
  if (pubClient !== null) await pubClient.ping();
}

function startJob(kind, n, loop) {
  if (job !== null && !job.done) return [409, { error: `${job.kind} job still running` }];
  const j = { kind, n, done: false, error: null, started: monotonic(), loopDone: null,
    flushed: null };
  job = j;
  (async () => {
    try {
      await loop(j);
      j.loopDone = monotonic();
      await flush();
      j.flushed = monotonic();
    } catch (err) {
      j.error = String(err && err.stack ? err.stack : err);
      process.stderr.write(`${kind} job failed: ${j.error}\n`);
    } finally {
      j.done = true;
    }
  })();
  return [202, report(j)];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function route(method, path, query) {
  const n = Number(query.get("n") ?? "20000");
  if (method === "POST" && path === "/bench/emit") {
    return startJob("emit", n, async (j) => {
      for (let i = 0; i < j.n; i++) io.emit("e", { i });
    });
  }
  if (method === "POST" && path === "/bench/latency") {
    const room = query.get("room") ?? "lat";
    const interval = Number(query.get("interval") ?? "0.002");
    return startJob("latency", Number(query.get("n") ?? "2000"), async (j) => {
      for (let i = 0; i < j.n; i++) {
        io.to(room).emit("lat", { i, t: monotonic() });
        await sleep(interval * 1000);
      }
    });
  }
  if (method === "POST" && path === "/bench/warm") {
    io.emit("warm", { t: monotonic() });
    await flush();
    return [200, { ok: true }];
  }
  if (method === "GET" && path === "/bench/status") {
    return [200, { mode: opts.mode, pid: process.pid, clients: io.engine.clientsCount,
      job: job === null ? null : report(job) }];
  }
  return [404, { error: `no ${method} ${path} on a Node.js node` }];
}

const httpServer = createServer((req, res) => {
  const url = new URL(req.url, `http://${HOST}`);
  route(req.method, url.pathname, url.searchParams).then(([status, body]) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  }, (err) => {
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: String(err) }));
  });
});

const io = new Server(httpServer);
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack(true);
  });
});

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  const bound = setTimeout(() => process.exit(code), 5000);
  bound.unref();
  io.disconnectSockets(true);
  await new Promise((resolve) => io.close(() => resolve()));
  for (const client of [subClient, pubClient]) {
    if (client !== null) await client.quit().catch(() => {});
  }
  process.exit(code);
}

async function main() {
  if (opts.mode === "adapter") {
    pubClient = createClient({ url: opts.url });
    subClient = pubClient.duplicate();
    for (const client of [pubClient, subClient]) {
      client.on("error", (err) => process.stderr.write(`redis: ${err}\n`));
    }
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient, { key: opts.channel }));
  }
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(Number(opts.port), HOST, resolve);
  });
  for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => stop(0));
  // the parent died (we were re-parented): stop, as benchmarks/node.py does
  setInterval(() => {
    if (process.ppid !== parent) stop(0);
  }, 1000).unref();
  process.stdout.write(JSON.stringify({ ready: true, port: httpServer.address().port,
    pid: process.pid, mode: opts.mode }) + "\n");
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
