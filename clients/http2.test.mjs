// Cleartext HTTP/2 (prior knowledge) on the same port as HTTP/1.1: many streams share one
// connection, which is how a browser gets past its six-connections-per-host limit.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import { SseParser } from "./support/sse.mjs";
import { createOrder, expectedEvent, startServer, waitUntil } from "./support/system.mjs";

const STREAMS = 10;

let server;
before(async () => {
  server = await startServer({ args: ["--replay-window", "0s"] });
});
after(() => server?.stop());

function openStream(session, path) {
  const stream = session.request({ ":path": path, accept: "text/event-stream" });
  const result = { stream, status: null, contentType: null, events: [] };
  const parser = new SseParser((event) => result.events.push(event));
  stream.setEncoding("utf8");
  stream.on("response", (headers) => {
    result.status = headers[":status"];
    result.contentType = headers["content-type"];
  });
  stream.on("data", (text) => parser.push(text));
  stream.on("error", () => {});
  return result;
}

test(`${STREAMS} concurrent SSE streams on one HTTP/2 connection each get every event`, async (t) => {
  const marker = await createOrder(server.baseUrl);
  const session = http2.connect(server.baseUrl);
  t.after(() => session.destroy());
  let sockets = 0;
  session.on("connect", () => sockets++);

  const streams = Array.from({ length: STREAMS }, () =>
    openStream(session, `/api/order/stream?lastEventId=${marker.eventId}`));
  await waitUntil(() => streams.every((s) => s.status !== null), { what: "every stream's response headers" });
  for (const s of streams) {
    assert.equal(s.status, 200);
    assert.match(s.contentType, /^text\/event-stream/);
  }

  // Orders go in over the same HTTP/2 connection as well.
  const created = [];
  for (let i = 0; i < 5; i++) created.push(await postOverSession(session));
  const expected = created.map(expectedEvent);

  await waitUntil(() => streams.every((s) => s.events.length >= expected.length), {
    what: `${expected.length} events on each of ${STREAMS} streams`,
  });
  for (const s of streams) {
    assert.deepEqual(s.events.map((e) => ({ ...e, data: JSON.parse(e.data) })), expected);
  }
  assert.equal(sockets, 1, "the session opened more than one connection");
  assert.equal(session.alpnProtocol, "h2c");
});

function postOverSession(session) {
  return new Promise((resolve, reject) => {
    const request = session.request({ ":method": "POST", ":path": "/api/order", "content-type": "application/json" });
    let body = "";
    let status;
    request.setEncoding("utf8");
    request.on("response", (headers) => (status = headers[":status"]));
    request.on("data", (text) => (body += text));
    request.on("end", () => {
      if (status !== 201) return reject(new Error(`POST over HTTP/2 gave ${status}: ${body}`));
      resolve(JSON.parse(body));
    });
    request.on("error", reject);
    request.end(JSON.stringify({
      customerId: "h2-client", currency: "EUR", items: [{ sku: "MUG-BLUE", quantity: 1, unitPrice: "12.99" }],
    }));
  });
}
