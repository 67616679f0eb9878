// One Node.js socket.io node of benchmarks/bench_cross_node.py: the `node` scenario
// (socket.io + @socket.io/redis-adapter, as its README sets it up), `node-sharded`
// (its sharded adapter, subscriptionMode "dynamic": per-room channels) and
// `node-single` (no adapter), driven like benchmarks/node.py.
//
//   node benchmarks/js/node_server.mjs --mode adapter|sharded|single [--url redis://...]
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
// The process stops on SIGTERM/SIGINT, and by itself when its parent dies
// (bench_common.mjs, shared with scale_node.mjs).
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import {
  Jobs, jsonServer, monotonic, runMain, serve, useRedisAdapter, useShardedRedisAdapter,
} from "./bench_common.mjs";

const { values: opts } = parseArgs({
  options: {
    mode: { type: "string", default: "adapter" },
    url: { type: "string", default: "" },
    channel: { type: "string", default: "bench" },
    port: { type: "string", default: "0" },
  },
});
if (!["adapter", "sharded", "single"].includes(opts.mode)) {
  throw new Error(`--mode adapter|sharded|single, not ${opts.mode}`);
}
if (opts.mode !== "single" && !opts.url) throw new Error(`--mode ${opts.mode} needs --url`);

let pubClient = null;

async function flush() {
  if (pubClient !== null) await pubClient.ping();
}

const jobs = new Jobs(flush);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The sharded adapter subscribes to a room's channel when the room is made, without
// waiting for Redis: a join is answered once Redis counts a subscriber to that channel
// (checked every 5 ms, for at most 2 s), so that no broadcast after it is lost. Only
// the benchmark's receiving node has members, so any subscriber is this node's.
async function roomSubscribed(room) {
  if (opts.mode !== "sharded") return;
  const channel = `${opts.channel}#/#${room}#`;
  for (let i = 0; i < 400; i++) {
    const reply = await pubClient.sendCommand(["PUBSUB", "SHARDNUMSUB", channel]);
    if (Number(reply[1]) >= 1) return;
    await sleep(5);
  }
  throw new Error(`no subscriber to ${channel} after 2 s`);
}

async function route(method, path, query) {
  const n = Number(query.get("n") ?? "20000");
  if (method === "POST" && path === "/bench/emit") {
    return jobs.start("emit", n, async (j) => {
      for (let i = 0; i < j.n; i++) io.emit("e", { i });
    });
  }
  if (method === "POST" && path === "/bench/latency") {
    const room = query.get("room") ?? "lat";
    const interval = Number(query.get("interval") ?? "0.002");
    return jobs.start("latency", Number(query.get("n") ?? "2000"), async (j) => {
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
      job: jobs.status() }];
  }
  return [404, { error: `no ${method} ${path} on a Node.js node` }];
}

const httpServer = jsonServer(route);
const io = new Server(httpServer);
io.on("connection", (socket) => {
  socket.on("join", async (room, ack) => {
    socket.join(room);
    await roomSubscribed(room);
    if (typeof ack === "function") ack(true);
  });
});

runMain(async () => {
  const clients = [];
  if (opts.mode !== "single") {
    const use = opts.mode === "sharded" ? useShardedRedisAdapter : useRedisAdapter;
    const redis = await use(io, opts.url, opts.channel);
    pubClient = redis.pubClient;
    clients.push(redis.subClient, redis.pubClient);
  }
  await serve(io, httpServer, Number(opts.port), opts.mode, clients);
});
