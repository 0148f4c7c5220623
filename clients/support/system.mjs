// Starts the pieces a client test talks to (sse-orders, a private redis-server, a cuttable
// TCP proxy) and the small HTTP helpers every test shares.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The binary under test: scripts/test.d/clients builds it and may point elsewhere. */
export function binaryPath() {
  if (process.env.SSE_ORDERS_BIN) return process.env.SSE_ORDERS_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, "target");
  return path.join(target, "debug", "sse-orders");
}

export const artifactsDir = path.join(repoRoot, "target", "test-artifacts");

/** Polls `check` until it returns a truthy value; a state is never waited for with a fixed sleep. */
export async function waitUntil(check, { timeout = 10_000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` + (lastError ? `: ${lastError.message}` : ""));
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** A port that was free a moment ago (used where a process must come back on the same port). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function waitForExit(child, timeout) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeout);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** SIGTERM, then SIGKILL if the process outlives `timeout`; resolves once it has exited. */
async function terminate(child, timeout) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  if (!(await waitForExit(child, timeout))) {
    child.kill("SIGKILL");
    await waitForExit(child, 5_000);
  }
}

/**
 * Runs `sse-orders` and resolves once it listens and reports ready. Port 0 lets it pick; the
 * chosen address is read from its JSON "listening" log line.
 */
export async function startServer({ port = 0, redisUrl, args = [] } = {}) {
  const defaults = {
    "--log-format": "json",
    "--log-filter": "warn,sse_orders=info",
    // Tests restart the process and must not wait out production drain timings.
    "--drain-delay": "0s",
    "--shutdown-grace": "2s",
    "--reconnect-delay": "300ms",
  };
  const argv = ["--listen", `127.0.0.1:${port}`, ...(redisUrl ? ["--redis-url", redisUrl] : []), ...args];
  for (const [flag, value] of Object.entries(defaults)) {
    if (!args.includes(flag)) argv.push(flag, value);
  }
  const child = spawn(binaryPath(), argv, { stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  let address;
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) {
      output.push(line);
      try {
        address ??= JSON.parse(line).fields?.address;
      } catch {
        // Not every line has to be JSON (a panic message is not).
      }
    }
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => output.push(chunk));
  let exited = false;
  child.once("exit", () => (exited = true));

  try {
    await waitUntil(() => address || exited, { timeout: 15_000, what: "sse-orders to listen" });
    if (!address) throw new Error(`sse-orders exited early:\n${output.join("\n")}`);
    const baseUrl = `http://${address}`;
    await waitUntil(async () => (await fetch(`${baseUrl}/readyz`)).ok, { timeout: 15_000, what: "sse-orders /readyz" });
    return {
      baseUrl,
      port: Number(address.split(":").pop()),
      output,
      stop: () => terminate(child, 10_000),
    };
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
}

/** A throwaway redis-server on a free port with its own directory; never the system one. */
export async function startRedis() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "sse-orders-redis-"));
  const port = await freePort();
  const child = spawn("redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", dir,
  ], { stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  child.stdout.on("data", (chunk) => output.push(String(chunk)));
  child.stderr.on("data", (chunk) => output.push(String(chunk)));
  const ping = () => new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
    socket.setTimeout(1_000, () => socket.destroy());
    socket.on("data", (data) => {
      socket.destroy();
      resolve(String(data).startsWith("+PONG"));
    });
    socket.on("error", () => resolve(false));
  });
  try {
    const answered = await waitUntil(async () => child.exitCode !== null ? "exited" : (await ping()) && "ready", {
      timeout: 10_000, what: "redis-server to answer PING",
    });
    if (answered !== "ready") throw new Error(`redis-server exited:\n${output.join("")}`);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      await terminate(child, 5_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

let orderNumber = 0;

/** A customer id that looks like SSE fields, JSON escapes and HTML. (Line breaks and other control
 * characters are refused with 400 before they get this far.) */
export const HOSTILE_CUSTOMER = "evil data: x id: 9-9 event: reset \"quoted\" \\ <img src=x onerror=window.injected=1> ünï 🚀";

/** POSTs a small order and returns the 201 body (the order plus its `eventId`). */
export async function createOrder(baseUrl, customerId = `client-${++orderNumber}`) {
  const response = await fetch(`${baseUrl}/api/order`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      customerId,
      currency: "EUR",
      items: [{ sku: "TEA-GREEN", quantity: 1 + (orderNumber % 3), unitPrice: "4.50" }],
    }),
  });
  const body = await response.json();
  assert.equal(response.status, 201, JSON.stringify(body));
  assert.match(body.eventId, /^\d+-\d+$/);
  return body;
}

/** What the stream must carry for a created order: its `eventId` as `id:`, the rest as data. */
export function expectedEvent(created) {
  const { eventId, ...order } = created;
  return { id: eventId, event: "order-created", data: order };
}

/**
 * A TCP proxy in front of a server whose connections a test can cut, the way a dropped
 * network would, without stopping the server. While `refuse` is on, new connections are
 * closed at once.
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let refuse = false;
  const server = net.createServer((client) => {
    if (refuse) return client.destroy();
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}`,
    cut({ refuseNew = false } = {}) {
      refuse = refuseNew;
      for (const socket of sockets) socket.destroy();
    },
    accept() {
      refuse = false;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
