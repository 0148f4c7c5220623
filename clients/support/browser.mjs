// Launches Debian's Chromium through playwright-core (Playwright's own browser builds are
// not used: the distribution package is what CI installs).
import { chromium } from "playwright-core";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    // Playwright gives every launch a fresh temporary profile (--user-data-dir) of its own.
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
  });
}

/** The event ids of the demo page's table rows, top to bottom. */
export function tableEventIds(page) {
  return page.$$eval("#orders tr[data-event-id]", (rows) => rows.map((row) => row.dataset.eventId));
}
