// The npm `eventsource` package (a WHATWG EventSource for Node) against the live stream:
// the events it reports, and its own reconnection with Last-Event-ID.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import { openRawStream } from "./support/sse.mjs";
import { HOSTILE_CUSTOMER, createOrder, expectedEvent, startProxy, startServer, waitUntil } from "./support/system.mjs";

let server;
before(async () => {
  server = await startServer({ args: ["--replay-window", "0s"] });
});
after(() => server?.stop());

/**
 * Follows `url` with the library, recording each order-created event and the Last-Event-ID
 * header of every request the library makes (its reconnections included).
 */
function follow(url) {
  const events = [];
  const requestedFrom = [];
  const source = new EventSource(url, {
    fetch: (input, init) => {
      requestedFrom.push(new Headers(init?.headers).get("last-event-id"));
      return fetch(input, init);
    },
  });
  source.addEventListener("order-created", (event) => {
    events.push({ id: event.lastEventId, event: event.type, data: event.data });
  });
  const opened = () => waitUntil(() => source.readyState === source.OPEN, { what: "the EventSource to open" });
  return { source, events, requestedFrom, opened };
}

const parsed = (events) => events.map((e) => ({ ...e, data: JSON.parse(e.data) }));

test("eventsource package receives exactly the created events in order, byte-equal to a raw read, whatever the customer text", async (t) => {
  // Starting after a known event makes the expected list exact whatever else the log holds.
  const marker = await createOrder(server.baseUrl);
  const client = follow(`${server.baseUrl}/api/order/stream?lastEventId=${marker.eventId}`);
  t.after(() => client.source.close());
  const raw = await openRawStream(`${server.baseUrl}/api/order/stream`, { headers: { "last-event-id": marker.eventId } });
  t.after(() => raw.close());
  assert.equal(raw.status, 200);
  assert.match(raw.headers["content-type"], /^text\/event-stream/);
  await client.opened();

  const created = [];
  for (let i = 0; i < 5; i++) created.push(await createOrder(server.baseUrl, i === 2 ? HOSTILE_CUSTOMER : undefined));

  await waitUntil(() => client.events.length >= 5, { what: "5 events in the eventsource client" });
  await raw.waitForEvents(5);
  assert.deepEqual(parsed(client.events), created.map(expectedEvent));
  assert.deepEqual(client.events, raw.events, "the library and the raw bytes disagree");
});

test("eventsource package reconnects by itself with Last-Event-ID and gets exactly the missed events", async (t) => {
  const marker = await createOrder(server.baseUrl);
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const client = follow(`${proxy.baseUrl}/api/order/stream?lastEventId=${marker.eventId}`);
  t.after(() => client.source.close());
  await client.opened();

  const created = [];
  for (let i = 0; i < 3; i++) created.push(await createOrder(server.baseUrl));
  await waitUntil(() => client.events.length >= 3, { what: "the first 3 events" });

  // Drop the connection and keep the way back closed while orders go on being created.
  proxy.cut({ refuseNew: true });
  await waitUntil(() => client.source.readyState === client.source.CONNECTING, { what: "the client to notice" });
  for (let i = 0; i < 4; i++) created.push(await createOrder(server.baseUrl));
  proxy.accept();
  await client.opened();
  for (let i = 0; i < 2; i++) created.push(await createOrder(server.baseUrl));

  await waitUntil(() => client.events.length >= created.length, { what: `${created.length} events` });
  assert.deepEqual(parsed(client.events), created.map(expectedEvent));

  // The first request resumed from the query parameter; every reconnection from the last event seen.
  assert.equal(client.requestedFrom[0], null);
  assert.ok(client.requestedFrom.length >= 2, "the client never reconnected");
  for (const sent of client.requestedFrom.slice(1)) assert.equal(sent, created[2].eventId);

  const raw = await openRawStream(`${server.baseUrl}/api/order/stream`, { headers: { "last-event-id": marker.eventId } });
  t.after(() => raw.close());
  await raw.waitForEvents(created.length);
  assert.deepEqual(client.events, raw.events.slice(0, created.length));
});
