// One Node.js socket.io node of benchmarks/bench_scale.py (`--anchor node`): socket.io
// with @socket.io/redis-adapter on Redis, driven like benchmarks/scale_node.py.
//
//   node benchmarks/js/scale_node.mjs --url redis://... [--channel NAME] [--port 0]
//
// Serves socket.io (server defaults) on 127.0.0.1 and prints one JSON line,
// {"ready": true, "port": P, "pid": PID, "mode": "node-scale"}. A connection handler
// puts the socket in the room named by its handshake auth {"room": R}. Over HTTP:
//   POST /scale/broadcast?n=N&seconds=S   io.emit("b", {i}) for i < N, or fewer if S
//                                 seconds passed (the job's n says how many)
//   POST /scale/one               one io.emit("one", {t}); answers {"sent": t} once
//                                 Redis answered a PING sent after it
//   POST /scale/rooms?rooms=R&seconds=S&max=N&senders=K   K loops, each
//                                 io.to(`r${i % R}`).emit("r", i) for the next i, then
//                                 a turn of the event loop, until S seconds or N emits
//   POST /scale/fetch?calls=C&seconds=S&timeout=T   up to C io.fetchSockets() calls,
//                                 one after the other (the adapter's requestsTimeout
//                                 is T), none started after S seconds (at least one)
//   GET  /scale/fetch             {"latencies": [s, ...], "counts": [n, ...]}
//   GET  /scale/received          {"received": n, "last": t}: the "up" events the
//                                 node's sockets sent it, and when the last came
//   GET  /bench/status            the current or last job, as benchmarks/node.py does
// Node's emits are fire-and-forget (the adapter hands the PUBLISH to node-redis and
// returns); a job's "flushed" time is when Redis answered a PING sent after its loop
// on the publishing client. Times are CLOCK_MONOTONIC seconds, as in node_server.mjs.
// There is no GET /scale/sessions: @socket.io/redis-adapter has no connection state
// recovery. The process stops on SIGTERM/SIGINT, and by itself when its parent dies
// (bench_common.mjs).
import { setImmediate as turn } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import { Jobs, jsonServer, monotonic, runMain, serve, useRedisAdapter } from "./bench_common.mjs";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: "" },
    channel: { type: "string", default: "scale" },
    port: { type: "string", default: "0" },
  },
});
if (!opts.url) throw new Error("--url redis://... is needed");

const MODE = "node-scale";
let pubClient = null;
const jobs = new Jobs(() => pubClient.ping());
let fetched = { latencies: [], counts: [] };
let received = 0;
let receivedLast = null;

const number = (query, name, fallback) => Number(query.get(name) ?? fallback);

function broadcast(query) {
  const seconds = number(query, "seconds", "60");
  return jobs.start("broadcast", number(query, "n", "500"), async (j) => {
    const until = monotonic() + seconds;
    for (let i = 0; i < j.n; i++) {
      if (monotonic() >= until) {
        j.n = i;
        return;
      }
      io.emit("b", { i });
    }
  });
}

function roomStream(query) {
  const rooms = number(query, "rooms", "1000");
  const seconds = number(query, "seconds", "5");
  const most = number(query, "max", "100000");
  const senders = number(query, "senders", "1");
  return jobs.start("rooms", most, async (j) => {
    const names = Array.from({ length: rooms }, (_, k) => `r${k}`);
    const until = monotonic() + seconds;
    let next = 0;
    const sender = async () => {
      // each emit is followed by a turn of the event loop, so the websockets and
      // Redis are written while the stream runs (one loop would hold them all)
      while (next < most && monotonic() < until) {
        const i = next++;
        io.to(names[i % rooms]).emit("r", i);
        await turn();
      }
    };
    await Promise.all(Array.from({ length: senders }, sender));
    j.n = next;
  });
}

function fetchLoop(query) {
  const seconds = number(query, "seconds", "20");
  const timeout = number(query, "timeout", "30");
  io.of("/").adapter.requestsTimeout = timeout * 1000;
  fetched = { latencies: [], counts: [] };
  const mine = fetched;
  return jobs.start("fetch", number(query, "calls", "50"), async (j) => {
    const until = monotonic() + seconds;
    for (let k = 0; k < j.n; k++) {
      if (mine.latencies.length > 0 && monotonic() >= until) return;
      const began = monotonic();
      const found = await io.fetchSockets();
      mine.latencies.push(monotonic() - began);
      mine.counts.push(found.length);
    }
  });
}

async function route(method, path, query) {
  const key = `${method} ${path}`;
  if (key === "POST /scale/broadcast") return broadcast(query);
  if (key === "POST /scale/rooms") return roomStream(query);
  if (key === "POST /scale/fetch") return fetchLoop(query);
  if (key === "GET /scale/fetch") return [200, fetched];
  if (key === "GET /scale/received") return [200, { received, last: receivedLast }];
  if (key === "POST /scale/one") {
    const sent = monotonic();
    io.emit("one", { t: sent });
    await pubClient.ping();
    return [200, { sent }];
  }
  if (key === "GET /bench/status") {
    return [200, { mode: MODE, pid: process.pid, clients: io.engine.clientsCount,
      job: jobs.status() }];
  }
  return [404, { error: `no ${key} on a Node.js scale node` }];
}

const httpServer = jsonServer(route);
const io = new Server(httpServer);
io.on("connection", (socket) => {
  const room = socket.handshake.auth?.room;
  if (typeof room === "string") socket.join(room);
  socket.on("up", () => {
    received += 1;
    receivedLast = monotonic();
  });
});

runMain(async () => {
  const redis = await useRedisAdapter(io, opts.url, opts.channel);
  pubClient = redis.pubClient;
  await serve(io, httpServer, Number(opts.port), MODE, [redis.subClient, redis.pubClient]);
});
