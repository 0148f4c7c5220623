// Regenerates docs/screenshot.png: the demo page of a fresh sse-orders with a few orders, the
// newest still highlighted. Run from clients/: `npm run screenshot` (after a cargo build).
import path from "node:path";
import { launchChromium } from "./support/browser.mjs";
import { repoRoot, startServer, waitUntil } from "./support/system.mjs";

const orders = [
  { customerId: "ada", items: [["TEA-GREEN", 2, "4.50"], ["MUG-BLUE", 1, "12.99"]] },
  { customerId: "grace", items: [["KETTLE-1", 1, "39.00"]] },
  { customerId: "linus", items: [["FILTER-50", 3, "2.40"], ["TEA-BLACK", 1, "5.20"]] },
  { customerId: "margaret", items: [["TEA-BLACK", 4, "5.20"]] },
  { customerId: "ken", items: [["MUG-BLUE", 2, "12.99"], ["TEA-GREEN", 1, "4.50"], ["FILTER-50", 1, "2.40"]] },
  { customerId: "barbara", items: [["TEA-GREEN", 1, "4.50"]] },
];

async function post(baseUrl, { customerId, items }) {
  const response = await fetch(`${baseUrl}/api/order`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      customerId,
      currency: "EUR",
      items: items.map(([sku, quantity, unitPrice]) => ({ sku, quantity, unitPrice })),
    }),
  });
  if (response.status !== 201) throw new Error(`POST gave ${response.status}: ${await response.text()}`);
}

const server = await startServer();
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 440 }, deviceScaleFactor: 2, locale: "en-GB" });
  await page.goto(`${server.baseUrl}/`);
  await waitUntil(async () => (await page.textContent("#state")) === "open", { what: "the page to connect" });
  for (const order of orders.slice(0, -1)) await post(server.baseUrl, order);
  await waitUntil(async () => (await page.$$("#orders tr[data-event-id]")).length === orders.length - 1, { what: "the rows" });
  // Let the older rows' highlight fade so only the newest order stands out.
  await waitUntil(async () => (await page.$$("#orders tr.fresh")).length === 0, { what: "the highlight to fade" });
  await post(server.baseUrl, orders.at(-1));
  await waitUntil(async () => (await page.$$("#orders tr[data-event-id]")).length === orders.length, { what: "the last row" });
  const file = path.join(repoRoot, "docs", "screenshot.png");
  await page.screenshot({ path: file });
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
} finally {
  await browser.close();
  await server.stop();
}
