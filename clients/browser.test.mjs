// The demo page in a real browser (headless Chromium): its EventSource must show every order
// exactly once, also across a restart of the process serving it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { launchChromium, tableEventIds } from "./support/browser.mjs";
import { openRawStream } from "./support/sse.mjs";
import { HOSTILE_CUSTOMER, artifactsDir, createOrder, startRedis, startServer, waitUntil } from "./support/system.mjs";

let browser;
before(async () => {
  await mkdir(artifactsDir, { recursive: true });
  browser = await launchChromium();
});
after(() => browser?.close());

const pageState = (page) => page.textContent("#state");

async function expectTable(page, created) {
  // Newest first, each order once.
  const expected = created.map((order) => order.eventId).reverse();
  await waitUntil(async () => (await tableEventIds(page)).length >= expected.length, {
    timeout: 15_000,
    what: `${expected.length} rows in the table`,
  });
  assert.deepEqual(await tableEventIds(page), expected);
  assert.equal(await page.textContent("#last-id"), created.at(-1).eventId);
  assert.equal(await page.textContent("#count"), String(created.length));
}

test("the page shows every order once across a restart of its server, resuming with Last-Event-ID", { timeout: 120_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  // The replay window is off so that only Last-Event-ID can bring back what the page missed.
  const args = ["--replay-window", "0s"];
  let gateway = await startServer({ redisUrl: redis.url, args });
  t.after(() => gateway.stop());
  // A second instance on the same Redis takes orders while the first one is down, as another
  // pod would during a rolling deploy.
  const otherPod = await startServer({ redisUrl: redis.url, args });
  t.after(() => otherPod.stop());

  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const streamRequests = [];
  page.on("response", async (response) => {
    if (!response.url().includes("/api/order/stream")) return;
    const headers = await response.request().allHeaders();
    streamRequests.push({ status: response.status(), lastEventId: headers["last-event-id"] ?? null });
  });
  await page.goto(`${gateway.baseUrl}/`);
  await waitUntil(async () => (await pageState(page)) === "open", { what: "the page to connect" });
  await page.evaluate(() => (window.firstSource = window.sseOrdersSource));

  const created = [];
  for (let i = 0; i < 3; i++) created.push(await createOrder(gateway.baseUrl, `api-${i}`));
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/order") && r.request().method() === "POST"),
    page.click("#create"),
  ]);
  assert.equal(response.status(), 201);
  created.push(await response.json());
  await expectTable(page, created);

  // Customer text is shown as text, never parsed as HTML.
  created.push(await createOrder(gateway.baseUrl, HOSTILE_CUSTOMER));
  await expectTable(page, created);
  const shownCustomer = await page.textContent(`tr[data-event-id="${created.at(-1).eventId}"] td.customer`);
  assert.equal(shownCustomer, HOSTILE_CUSTOMER);
  assert.equal(await page.evaluate(() => window.injected), undefined);
  const lastBeforeRestart = created.at(-1).eventId;

  await gateway.stop();
  await waitUntil(() => page.evaluate(() => window.sseOrdersSource.readyState === EventSource.CONNECTING), {
    what: "the EventSource to notice the restart",
  });
  for (let i = 0; i < 2; i++) created.push(await createOrder(otherPod.baseUrl, `while-down-${i}`));

  gateway = await startServer({ port: gateway.port, redisUrl: redis.url, args });
  await waitUntil(async () => (await pageState(page)) === "open", { timeout: 15_000, what: "the page to reconnect" });
  for (let i = 0; i < 2; i++) created.push(await createOrder(gateway.baseUrl, `after-${i}`));
  await expectTable(page, created);

  // The browser's own EventSource reconnected (the page never had to make a new one) and
  // the successful reconnection asked for what came after the last order shown.
  assert.ok(await page.evaluate(() => window.sseOrdersSource === window.firstSource), "the page replaced its EventSource");
  const opened = streamRequests.filter((r) => r.status === 200);
  assert.equal(opened.length, 2, JSON.stringify(streamRequests));
  assert.equal(opened[0].lastEventId, null);
  assert.equal(opened[1].lastEventId, lastBeforeRestart);

  await page.screenshot({ path: path.join(artifactsDir, "browser-restart.png"), fullPage: true });
  await page.close();
});

test("the page fits a phone screen and shows a reset when its cursor is behind retention", { timeout: 60_000 }, async (t) => {
  // A log that holds only 3 events makes a start after the first of 6 fall behind retention.
  const server = await startServer({ args: ["--log-capacity", "3"] });
  t.after(() => server.stop());
  const created = [];
  for (let i = 0; i < 6; i++) created.push(await createOrder(server.baseUrl, `phone-${i}`));

  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await page.goto(`${server.baseUrl}/?lastEventId=${created[0].eventId}`);
  await waitUntil(() => page.isVisible("#reset"), { what: "the reset notice" });
  const notice = await page.textContent("#reset");
  assert.match(notice, /reset/i);
  assert.ok(notice.includes(created[0].eventId), notice);
  await expectTable(page, created.slice(3));

  // A customer id that cannot break is the widest thing a row can hold.
  await createOrder(server.baseUrl, "x".repeat(120));
  await waitUntil(async () => (await tableEventIds(page)).length === 4, { what: "the long-named order" });
  const overflow = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.ok(overflow.scrollWidth <= overflow.innerWidth, `page overflows horizontally: ${JSON.stringify(overflow)}`);
  await page.screenshot({ path: path.join(artifactsDir, "browser-phone.png"), fullPage: true });
  await page.close();
});

test("the page starts a new EventSource after the browser gives up on a 503", { timeout: 60_000 }, async (t) => {
  // With room for one stream, a client already holding it makes the page's request a 503,
  // on which a browser's EventSource closes for good.
  const server = await startServer({ args: ["--max-connections", "1", "--replay-window", "0s"] });
  t.after(() => server.stop());
  const holder = await openRawStream(`${server.baseUrl}/api/order/stream`);
  t.after(() => holder.close());
  assert.equal(holder.status, 200);

  const page = await browser.newPage();
  await page.goto(`${server.baseUrl}/`);
  await waitUntil(async () => (await pageState(page)) === "closed", { what: "the page to report the refusal" });
  holder.close();
  await waitUntil(async () => (await pageState(page)) === "open", { timeout: 15_000, what: "the page to connect again" });
  const created = [await createOrder(server.baseUrl, "after-503")];
  await expectTable(page, created);
  await page.close();
});

test("the page loads the latest orders, follows the stream from their position and charts them", { timeout: 60_000 }, async (t) => {
  // No replay window: only the initial load can show orders created before the page opened.
  const server = await startServer({ args: ["--replay-window", "0s"] });
  t.after(() => server.stop());
  const created = [];
  for (let i = 0; i < 55; i++) created.push(await createOrder(server.baseUrl, `before-${i}`));

  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(`${server.baseUrl}/`);
  await waitUntil(async () => (await pageState(page)) === "open", { what: "the page to connect" });
  // The last 50, newest first, then what the stream brings after their position.
  await expectTable(page, created.slice(5));
  for (let i = 0; i < 3; i++) created.push(await createOrder(server.baseUrl, `after-${i}`));
  await expectTable(page, created.slice(5));

  // The charts count what the table holds: every order was created within the last minute.
  await waitUntil(async () => Number(await page.getAttribute("#chart-orders", "data-total")) === 53, {
    what: "the orders-per-second chart to count every order",
  });
  assert.equal(await page.locator("#chart-orders rect").count(), 60);
  const points = await page.getAttribute("#chart-revenue polyline", "points");
  assert.equal(points.split(" ").length, 30);
  assert.ok(Number(await page.textContent("#revenue-now")) > 0);
  await page.screenshot({ path: path.join(artifactsDir, "browser-snapshot-chart.png"), fullPage: true });
  await page.close();
});

test("the page reloads its orders when the stream announces a lost history", { timeout: 60_000 }, async (t) => {
  const server = await startServer({ args: ["--replay-window", "0s"] });
  t.after(() => server.stop());
  const created = [];
  for (let i = 0; i < 2; i++) created.push(await createOrder(server.baseUrl, `kept-${i}`));
  // An id this process never issued: the server answers `reset`, and the page reloads.
  const page = await browser.newPage();
  await page.goto(`${server.baseUrl}/?lastEventId=99999999999999-0`);
  await waitUntil(() => page.isVisible("#reset"), { what: "the reset notice" });
  assert.match(await page.textContent("#reset"), /history/);
  await expectTable(page, created);
  created.push(await createOrder(server.baseUrl, "after-reset"));
  await expectTable(page, created);
  await page.close();
});
