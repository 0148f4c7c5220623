"""Shared by the Python client tests: a running sse-orders, order creation, and a small
reference SSE parser (written from the WHATWG rules) to hold the library against the bytes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def binary_path() -> str:
    if os.environ.get("SSE_ORDERS_BIN"):
        return os.environ["SSE_ORDERS_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    return str(target / "debug" / "sse-orders")


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    """Polls `check` until it returns a truthy value; states are never waited for with sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not ready yet: the next poll decides
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Server:
    def __init__(self, *args: str) -> None:
        self.output: list[str] = []
        self.address: str | None = None
        self.process = subprocess.Popen(
            [binary_path(), "--listen", "127.0.0.1:0", "--log-format", "json",
             "--log-filter", "warn,sse_orders=info", "--drain-delay", "0s", "--shutdown-grace", "2s",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        try:
            wait_until(lambda: self.address or self.process.poll() is not None, 15, "sse-orders to listen")
            if self.address is None:
                raise RuntimeError("sse-orders exited early:\n" + "".join(self.output))
            self.base_url = f"http://{self.address}"
            wait_until(lambda: httpx.get(f"{self.base_url}/readyz").status_code == 200, 15, "/readyz")
        except BaseException:
            self.process.kill()
            raise

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if self.address is None:
                try:
                    self.address = json.loads(line).get("fields", {}).get("address")
                except ValueError:
                    pass

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


_order_number = 0

# A customer id that looks like SSE fields, JSON escapes and HTML. (Line breaks and other control
# characters are refused with 400 before they get this far.)
HOSTILE_CUSTOMER = "evil data: x id: 9-9 event: reset \"quoted\" \\ <img src=x onerror=window.injected=1> ünï 🚀"


def create_order(base_url: str, customer_id: str | None = None) -> dict:
    """POSTs a small order and returns the 201 body (the order plus its eventId)."""
    global _order_number
    _order_number += 1
    response = httpx.post(f"{base_url}/api/order", json={
        "customerId": customer_id or f"py-{_order_number}",
        "currency": "EUR",
        "items": [{"sku": "TEA-BLACK", "quantity": 1 + _order_number % 3, "unitPrice": "5.20"}],
    })
    assert response.status_code == 201, response.text
    body = response.json()
    assert re.fullmatch(r"\d+-\d+", body["eventId"])
    return body


def expected_event(created: dict) -> dict:
    """The stream carries the POST's eventId as `id:` and the rest of the order as data."""
    order = {k: v for k, v in created.items() if k != "eventId"}
    return {"id": created["eventId"], "event": "order-created", "data": order}


class ReferenceParser:
    """Incremental text/event-stream parser; `events` holds (id, event, data) dicts."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""

    def push(self, text: str) -> None:
        self._buffer += text
        # A lone CR at the end may be half of a CRLF split across chunks.
        lines = re.split(r"\r\n|\n|\r(?!\Z)", self._buffer)
        self._buffer = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            if self._data:
                self.events.append({"id": self._last_id, "event": self._event or "message",
                                    "data": "\n".join(self._data)})
            self._data, self._event = [], ""
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._last_id = value


def read_raw(url: str, last_event_id: str, count: int, timeout: float = 10.0) -> list[dict]:
    """Reads `count` events after `last_event_id` straight from the bytes of the response."""
    parser = ReferenceParser()
    with httpx.stream("GET", url, headers={"Last-Event-ID": last_event_id}, timeout=timeout) as response:
        assert response.status_code == 200
        for text in response.iter_text():
            parser.push(text)
            if len(parser.events) >= count:
                break
    return parser.events
