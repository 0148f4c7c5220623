"""The sse-orders process the Python client tests share."""

import pytest

from support import Server


@pytest.fixture(scope="session")
def server():
    running = Server("--replay-window", "0s")
    yield running
    running.stop()
