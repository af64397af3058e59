"""Fixtures for the python-socketio conformance tests.

`server` starts examples/test_server.rs on a free port (PORT=0) for each test, so tests share no
rooms, sockets or disconnect logs, and stops it afterwards. `client` makes python-socketio clients
for the transport the test is parametrized with and disconnects them at teardown.
Every wait is bounded.
"""

import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import socketio

ROOT = Path(__file__).resolve().parents[2]
SERVER_BIN = Path(
    os.environ.get("TEST_SERVER_BIN", ROOT / "target" / "debug" / "examples" / "test_server")
)
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0

# A short ping interval, so that every test (the bursts included) runs while pings and pongs go on;
# a pong timeout long enough for a python client that is busy or starved on a loaded CI machine
# (its pong waits behind a thread per received message). The heartbeat tests set their own timings.
DEFAULT_SERVER_ENV = {"PING_INTERVAL_MS": "300", "PING_TIMEOUT_MS": "5000"}

TRANSPORTS = [["websocket"], ["polling"]]


class Server:
    def __init__(self, proc, url, output):
        self.proc = proc
        self.url = url
        self.output = output  # every line the server printed, for failure reports


def _start_server(env_overrides):
    if not SERVER_BIN.exists():
        pytest.fail(f"server binary {SERVER_BIN} missing: run `cargo build --example test_server`")
    env = dict(os.environ)
    env.update(DEFAULT_SERVER_ENV)
    env.update(env_overrides)
    env["PORT"] = "0"
    proc = subprocess.Popen(
        [str(SERVER_BIN)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        bufsize=1,
    )
    lines = queue.Queue()
    output = []

    def drain():  # keeps reading so the server never blocks on a full pipe
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    why = f"did not say it was listening within {START_TIMEOUT} s"
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line is None:
            why = "exited before listening"
            break
        m = LISTENING.search(line)
        if m:
            return Server(proc, f"http://127.0.0.1:{m.group(1)}", output)
    _stop(proc)
    pytest.fail(f"test_server {why}; output:\n{''.join(output)}")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def start_server():
    """Factory: start_server(**env) starts a test_server with extra environment variables."""
    started = []

    def start(**env):
        server = _start_server({k: str(v) for k, v in env.items()})
        started.append(server)
        return server

    yield start
    for s in started:  # pytest shows this only for a failed test (set RUST_LOG for more)
        print(f"test_server output:\n{''.join(s.output)}")
    crashed = [s for s in started if s.proc.poll() is not None]
    for s in started:
        _stop(s.proc)
    if crashed:
        pytest.fail(
            "test_server exited during the test; output:\n"
            + "\n".join("".join(s.output) for s in crashed)
        )


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def server_url(server):
    return server.url


def _bounded(fn, timeout):
    """Runs fn in a thread and waits at most `timeout` seconds; returns False if it did not finish."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


@pytest.fixture(params=TRANSPORTS, ids=lambda t: "+".join(t))
def transports(request):
    return request.param


@pytest.fixture
def new_client(start_server):
    """Factory: new_client() returns an unconnected socketio.Client without reconnection.

    Depends on start_server so that pytest tears it down first: clients disconnect from a live
    server (a polling client whose server is gone can hang in disconnect)."""
    clients = []

    def make(**kwargs):
        kwargs.setdefault("reconnection", False)
        sio = socketio.Client(**kwargs)
        clients.append(sio)
        return sio

    yield make
    hung = [c for c in clients if not _bounded(c.disconnect, STOP_TIMEOUT)]
    if hung:
        pytest.fail(f"{len(hung)} client(s) did not disconnect within {STOP_TIMEOUT} s")


@pytest.fixture
def connect(server_url, transports):
    """connect(sio, **kwargs) connects sio to the test server with the test's transports."""

    def do(sio, **kwargs):
        kwargs.setdefault("transports", transports)
        kwargs.setdefault("wait_timeout", CONNECT_TIMEOUT)
        sio.connect(server_url, **kwargs)
        return sio

    return do
