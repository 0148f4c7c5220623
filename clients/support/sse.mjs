// A small reference reader for text/event-stream, written from the WHATWG parsing rules, so
// the libraries under test are compared with the bytes on the wire and not with each other.
import http from "node:http";
import { waitUntil } from "./system.mjs";

/** Incremental SSE parser: feed it decoded text, it calls `onEvent({ id, event, data })`. */
export class SseParser {
  #buffer = "";
  #data = [];
  #event = "";
  #lastEventId = "";
  retry = null;
  comments = 0;

  constructor(onEvent) {
    this.onEvent = onEvent;
  }

  push(text) {
    this.#buffer += text;
    // A lone CR at the end may be the first half of CRLF: keep it for the next chunk.
    const lines = this.#buffer.split(/\r\n|\n|\r(?!$)/);
    this.#buffer = lines.pop();
    for (const line of lines) this.#line(line);
  }

  #line(line) {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return void this.comments++;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  #dispatch() {
    const event = this.#event || "message";
    const data = this.#data;
    this.#event = "";
    this.#data = [];
    // An event without data lines is not dispatched (a bare `retry:` block, for one).
    if (data.length > 0) this.onEvent({ id: this.#lastEventId, event, data: data.join("\n") });
  }
}

/**
 * Opens `url` over HTTP/1.1 and parses it with `SseParser`. Resolves once the response
 * headers are in; `events` fills as frames arrive.
 */
export function openRawStream(url, { headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const events = [];
    const parser = new SseParser((event) => events.push(event));
    const request = http.get(url, { headers: { accept: "text/event-stream", ...headers } }, (response) => {
      const decoder = new TextDecoder();
      let ended = false;
      response.on("data", (chunk) => parser.push(decoder.decode(chunk, { stream: true })));
      response.on("end", () => (ended = true));
      response.on("error", () => (ended = true));
      resolve({
        status: response.statusCode,
        headers: response.headers,
        parser,
        events,
        get ended() {
          return ended;
        },
        waitForEvents: (count, timeout = 10_000) =>
          waitUntil(() => events.length >= count, { timeout, what: `${count} events from ${url} (have ${events.length})` }),
        close: () => request.destroy(),
      });
    });
    request.on("error", reject);
  });
}
