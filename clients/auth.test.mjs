// Auth and CORS in a real browser (headless Chromium): a page on a second origin creates and
// streams orders with a token, a page on an origin not listed gets nothing, and the demo page
// shows a token that ran out instead of reconnecting with it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import http from "node:http";
import { launchChromium } from "./support/browser.mjs";
import { binaryPath, startServer, waitUntil } from "./support/system.mjs";

const SECRET = "browser-test-secret-browser-test-secret";

let browser;
before(async () => {
  browser = await launchChromium();
});
after(() => browser?.close());

function mint({ customer, scope = "orders:read,orders:write", ttl = "10m" }) {
  const args = ["token", "--secret", SECRET, "--scope", scope, "--ttl", ttl];
  if (customer) args.push("--customer", customer);
  return execFileSync(binaryPath(), args, { encoding: "utf8" }).trim();
}

/** Serves one blank page on `localhost` (a different origin from the API on 127.0.0.1). */
async function startPageServer() {
  const server = http.createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end("<!doctype html><title>shop</title><p>another origin</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://localhost:${server.address().port}`, stop: () => server.close() };
}

test("a page on an allowed origin creates and streams its customer's orders; others are refused", { timeout: 90_000 }, async (t) => {
  const allowed = await startPageServer();
  t.after(() => allowed.stop());
  const other = await startPageServer();
  t.after(() => other.stop());
  const api = await startServer({
    args: ["--auth", "jwt", "--jwt-secret", SECRET, "--cors-origins", allowed.origin, "--replay-window", "0s"],
  });
  t.after(() => api.stop());
  const token = mint({ customer: "cors-customer" });

  const page = await browser.newPage();
  await page.goto(`${allowed.origin}/`);
  const result = await page.evaluate(
    async ({ apiUrl, token }) => {
      const received = [];
      const source = new EventSource(`${apiUrl}/api/order/stream?access_token=${token}`, { withCredentials: true });
      source.addEventListener("order-created", (event) => received.push({ id: event.lastEventId, data: JSON.parse(event.data) }));
      await new Promise((resolve, reject) => {
        source.onopen = resolve;
        source.onerror = () => reject(new Error("stream failed"));
      });
      // JSON plus Authorization and Idempotency-Key: the browser sends a preflight first.
      const post = (customerId) =>
        fetch(`${apiUrl}/api/order`, {
          method: "POST",
          credentials: "include",
          headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "idempotency-key": crypto.randomUUID() },
          body: JSON.stringify({ customerId, currency: "EUR", items: [{ sku: "CORS-1", quantity: 1, unitPrice: "3.00" }] }),
        });
      const created = await post("cors-customer");
      const foreign = await post("someone-else");
      const body = await created.json();
      const deadline = Date.now() + 10_000;
      while (received.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      source.close();
      return {
        status: created.status,
        location: created.headers.get("location"),
        foreignStatus: foreign.status,
        foreignChallenge: foreign.headers.get("www-authenticate"),
        eventId: body.eventId,
        received,
      };
    },
    { apiUrl: api.baseUrl, token },
  );
  assert.equal(result.status, 201);
  assert.match(result.location, /^\/api\/order\/[0-9a-f-]{36}$/);
  assert.equal(result.foreignStatus, 403);
  assert.match(result.foreignChallenge, /insufficient_scope/);
  assert.equal(result.received.length, 1);
  assert.equal(result.received[0].id, result.eventId);
  assert.equal(result.received[0].data.customerId, "cors-customer");

  // The preflight as the browser sent it, answered for exactly that origin.
  const preflight = await fetch(`${api.baseUrl}/api/order`, {
    method: "OPTIONS",
    headers: { origin: allowed.origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-origin"), allowed.origin);
  assert.equal(preflight.headers.get("access-control-allow-credentials"), "true");

  // An origin that is not listed can neither read responses nor open the stream.
  const refused = await browser.newPage();
  await refused.goto(`${other.origin}/`);
  const outcome = await refused.evaluate(
    async ({ apiUrl, token }) => {
      let fetchError = null;
      try {
        await fetch(`${apiUrl}/api/order/stream?access_token=${token}`, { credentials: "include" });
      } catch (error) {
        fetchError = error.name;
      }
      const streamFailed = await new Promise((resolve) => {
        const source = new EventSource(`${apiUrl}/api/order/stream?access_token=${token}`, { withCredentials: true });
        source.onopen = () => { source.close(); resolve(false); };
        source.onerror = () => { source.close(); resolve(true); };
      });
      return { fetchError, streamFailed };
    },
    { apiUrl: api.baseUrl, token },
  );
  assert.equal(outcome.fetchError, "TypeError");
  assert.equal(outcome.streamFailed, true);
});

test("the demo page takes a token from its address and shows when it expires", { timeout: 90_000 }, async (t) => {
  const api = await startServer({ args: ["--auth", "jwt", "--jwt-secret", SECRET, "--jwt-leeway", "0s"] });
  t.after(() => api.stop());
  const page = await browser.newPage();
  const streamUrls = [];
  page.on("request", (request) => {
    if (request.url().includes("/api/order/stream")) streamUrls.push(request.url());
  });
  await page.goto(`${api.baseUrl}/?access_token=${mint({ customer: "demo", ttl: "4s" })}`);
  await waitUntil(async () => (await page.textContent("#state")) === "open", { what: "the page to connect with its token" });
  // The token left the address bar.
  assert.equal(new URL(page.url()).searchParams.has("access_token"), false);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/order") && r.request().method() === "POST"),
    page.click("#create"),
  ]);
  assert.equal(response.status(), 201);
  assert.equal((await response.json()).customerId, "demo");
  await waitUntil(async () => (await page.textContent("#state")) === "token expired", {
    timeout: 15_000,
    what: "the page to show the expired token",
  });
  assert.match(await page.textContent("#expired"), /expired/);
  const attempts = streamUrls.length;
  // A new token resumes the stream.
  await page.fill("#token", mint({ customer: "demo" }));
  await page.click("#token-form button");
  await waitUntil(async () => (await page.textContent("#state")) === "open", { what: "the page to reconnect with the new token" });
  assert.equal(streamUrls.length, attempts + 1, "no reconnect with the expired token");
});
