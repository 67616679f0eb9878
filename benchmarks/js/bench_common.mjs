// What the Node.js nodes of the benchmarks share: node_server.mjs (bench_cross_node)
// and scale_node.mjs (bench_scale). The clock, the job a node runs (reported as
// benchmarks/node.py reports its own), the JSON HTTP server on 127.0.0.1, the Redis
// adapter's two clients, and the process's life: one ready line on stdout, a stop on
// SIGTERM/SIGINT and when the parent dies.
import { createServer } from "node:http";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

export const HOST = "127.0.0.1";

/** CLOCK_MONOTONIC in seconds: what Python's time.monotonic() reads on Linux. */
export function monotonic() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function report(j) {
  const since = (mark) => (mark === null ? null : mark - j.started);
  return {
    kind: j.kind, n: j.n, done: j.done, error: j.error, started: j.started,
    loop_seconds: since(j.loopDone), flushed_seconds: since(j.flushed),
  };
}

/** The node's current or last loop; `flush()` runs after each loop ends. */
export class Jobs {
  constructor(flush) {
    this.flush = flush;
    this.job = null;
  }

  /** Start `loop(job)` (it may lower job.n); an HTTP [status, body]. */
  start(kind, n, loop) {
    const running = this.job;
    if (running !== null && !running.done) {
      return [409, { error: `${running.kind} job still running` }];
    }
    const j = { kind, n, done: false, error: null, started: monotonic(), loopDone: null,
      flushed: null };
    this.job = j;
    (async () => {
      try {
        await loop(j);
        j.loopDone = monotonic();
        await this.flush();
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

  status() {
    return this.job === null ? null : report(this.job);
  }
}

/** An HTTP server answering `route(method, path, query)` -> [status, body] in JSON. */
export function jsonServer(route) {
  return createServer((req, res) => {
    const url = new URL(req.url, `http://${HOST}`);
    route(req.method, url.pathname, url.searchParams).then(([status, body]) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    }, (err) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: String(err) }));
    });
  });
}

/** A publishing and a subscribing node-redis client, connected. */
async function redisClients(url) {
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on("error", (err) => process.stderr.write(`redis: ${err}\n`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  return { pubClient, subClient };
}

/** @socket.io/redis-adapter on `io`, with its two node-redis clients, connected. */
export async function useRedisAdapter(io, url, channel, options = {}) {
  const clients = await redisClients(url);
  io.adapter(createAdapter(clients.pubClient, clients.subClient,
    { key: channel, ...options }));
  return clients;
}

/** The sharded adapter (SPUBLISH/SSUBSCRIBE, Redis 7+) in its default "dynamic" mode:
 * a node subscribes to a room's channel while it has a member in that room (the
 * adapter sends the SSUBSCRIBE when the room is made and does not wait for it). */
export async function useShardedRedisAdapter(io, url, channel) {
  const clients = await redisClients(url);
  io.adapter(createShardedAdapter(clients.pubClient, clients.subClient,
    { channelPrefix: channel, subscriptionMode: "dynamic" }));
  return clients;
}

/** Listen on 127.0.0.1:`port`, print the ready line, and stop (closing `io` and the
 * Redis `clients`) on SIGTERM/SIGINT or when the parent dies. */
export async function serve(io, httpServer, port, mode, clients) {
  const parent = process.ppid;
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    const bound = setTimeout(() => process.exit(code), 5000);
    bound.unref();
    io.disconnectSockets(true);
    await new Promise((resolve) => io.close(() => resolve()));
    for (const client of clients) await client.quit().catch(() => {});
    process.exit(code);
  };
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(port, HOST, resolve);
  });
  for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => stop(0));
  // the parent died (we were re-parented): stop, as benchmarks/node.py does
  setInterval(() => {
    if (process.ppid !== parent) stop(0);
  }, 1000).unref();
  process.stdout.write(JSON.stringify({ ready: true, port: httpServer.address().port,
    pid: process.pid, mode }) + "\n");
}

/** Run `main()`; on failure, print why and exit 1. */
export function runMain(main) {
  main().catch((err) => {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}
