"""python-socketio (sync client) against examples/test_server.rs, over WebSocket and over polling.

Each test runs once per transport (`transports` fixture: ["websocket"] or ["polling"], no upgrade).
Waits are bounded: Recorder.wait_for and Client.call both time out.

The sync client runs the handler of every incoming message in a thread of its own, so the order in
which handlers run is not the order in which packets arrived, and "no such event yet" seen from a
handler proves little. Tests about order or absence therefore read WireTap: the Engine.IO messages
in the order the client's transport read them.
"""

import threading
import time
import uuid

import engineio
import pytest
import socketio

WAIT = 5.0  # seconds, for anything that should take milliseconds


class Recorder:
    """Collects the arguments of one event as handlers run; wait_for(n) waits for n of them."""

    def __init__(self, sio, event, namespace="/"):
        self.items = []
        self._cond = threading.Condition()

        def handler(*args):
            with self._cond:
                self.items.append(args)
                self._cond.notify_all()

        sio.on(event, handler, namespace=namespace)

    def wait_for(self, n=1, timeout=WAIT):
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.items) >= n, timeout=timeout)
        assert ok, f"got {len(self.items)} of {n} events within {timeout} s: {self.items[:5]}"
        return list(self.items)


class WireTap:
    """The Engine.IO message packets a client received, in transport order.

    Wraps the engineio client's `_receive_packet` (private, but the pinned python-engineio calls it
    from the transport's read loop, once per packet, in order) before handing each packet on."""

    def __init__(self, sio, swallow_pings=False):
        self.messages = []
        self.pings = 0
        original = sio.eio._receive_packet

        def tap(pkt):
            if pkt.packet_type == engineio.packet.MESSAGE:
                self.messages.append(pkt.data)
            elif pkt.packet_type == engineio.packet.PING:
                self.pings += 1
                if swallow_pings:
                    return None  # the client never sees it, so never pongs
            return original(pkt)

        sio.eio._receive_packet = tap

    def text_messages(self):
        return [m for m in list(self.messages) if isinstance(m, str)]

    def events(self, name, namespace="/"):
        """The argument tuples of every text EVENT `name` received on `namespace`, in order."""
        out = []
        for data in list(self.messages):
            if not isinstance(data, str):
                continue  # a binary attachment
            pkt = socketio.packet.Packet(encoded_packet=data)
            if (
                pkt.packet_type == socketio.packet.EVENT
                and (pkt.namespace or "/") == namespace
                and pkt.data[0] == name
            ):
                out.append(tuple(pkt.data[1:]))
        return out


def room_name():
    return f"r-{uuid.uuid4().hex[:8]}"


# --- connection -----------------------------------------------------------------------------------


def test_connect_with_auth(new_client, connect, transports):
    sio = new_client()
    auth = {"token": "abc", "n": 1, "nested": {"list": [1, "two"]}, "uni": "ünï ✓"}
    connect(sio, auth=auth)
    assert sio.connected
    assert sio.transport() == transports[0]
    hs = sio.call("handshake", timeout=WAIT)
    assert hs["auth"] == auth
    assert hs["query"]["EIO"] == "4"
    assert hs["query"]["transport"] == transports[0]
    assert hs["address"] == "127.0.0.1"
    assert isinstance(hs["issued"], (int, float)) and hs["issued"] > 0


def test_connect_without_auth_sees_empty_auth(new_client, connect):
    sio = connect(new_client())
    hs = sio.call("handshake", timeout=WAIT)
    assert hs["auth"] == {}


def test_welcome_carries_namespace_sid(new_client, connect):
    sio = new_client()
    welcome = Recorder(sio, "welcome")
    connect(sio)
    ((data,),) = welcome.wait_for(1)
    assert data == {"id": sio.get_sid("/"), "recovered": False}
    # Socket.IO v5: the namespace socket id is not the Engine.IO session id.
    assert sio.get_sid("/") != sio.eio.sid


# --- events and acks ------------------------------------------------------------------------------

ECHO_CASES = [
    (),
    ("hello",),
    ("",),
    (42,),
    (-7,),
    (3.5,),
    (True,),
    (None,),
    ({"a": 1, "b": [1, 2, {"c": None}], "d": {"e": {"f": "deep"}}},),
    ([1, "two", 3.5, False, None, {"k": "v"}],),
    ("héllo wörld ✓ 日本語 🎉 \u2028 \"quoted\" \\ back\nslash",),
    ("a", 1, {"k": "v"}, [1, 2], None),
]


def test_echo_events(new_client, connect):
    sio = new_client()
    echo = Recorder(sio, "echo")
    connect(sio)
    for i, case in enumerate(ECHO_CASES):
        sio.emit("echo", case)
        got = echo.wait_for(i + 1)
        assert got[i] == case


def test_echo_events_keep_their_order(new_client, connect):
    sio = new_client()
    tap = WireTap(sio)
    echo = Recorder(sio, "echo")
    connect(sio)
    for case in ECHO_CASES:
        sio.emit("echo", case)
    echo.wait_for(len(ECHO_CASES))
    assert tap.events("echo") == ECHO_CASES


def test_echo_ack(new_client, connect):
    sio = connect(new_client())
    assert sio.call("echo-ack", "hi", timeout=WAIT) == "hi"
    assert sio.call("echo-ack", ({"x": [1, 2]},), timeout=WAIT) == {"x": [1, 2]}
    assert sio.call("echo-ack", ("a", 1, "ü✓🎉"), timeout=WAIT) == ("a", 1, "ü✓🎉")
    assert sio.call("echo-ack", timeout=WAIT) is None  # an empty ack: no arguments


def test_add_ack(new_client, connect):
    sio = connect(new_client())
    assert sio.call("add", (2, 40), timeout=WAIT) == 42
    assert sio.call("add", (-5, 3), timeout=WAIT) == -2
    assert sio.call("add", (2**40, 2**40), timeout=WAIT) == 2**41
    bad = sio.call("add", ("x", 1), timeout=WAIT)
    assert isinstance(bad, dict) and "error" in bad


def test_concurrent_acks_match_their_calls(new_client, connect):
    sio = connect(new_client())
    results = {}
    done = threading.Event()
    n = 50

    for i in range(n):

        def cb(value, i=i):
            results[i] = value
            if len(results) == n:
                done.set()

        sio.emit("add", (i, 1000), callback=cb)
    assert done.wait(WAIT), f"{len(results)} of {n} acks arrived"
    assert results == {i: i + 1000 for i in range(n)}


# --- binary ---------------------------------------------------------------------------------------


def test_binary_echo(new_client, connect):
    sio = new_client()
    echo = Recorder(sio, "echo")
    connect(sio)
    blob = bytes(range(256)) * 256  # 64 KiB, every byte value
    cases = [
        (b"\x00\x01\xfe\xff",),
        ({"name": "f", "file": b"\x01\x02", "parts": [b"", b"\x1e\x1e", blob]},),
        ("text", b"\x00", 7, {"nested": {"deeper": [b"\x7f"]}}),
    ]
    for i, case in enumerate(cases):
        sio.emit("echo", case)
        got = echo.wait_for(i + 1)
        assert got[i] == case
    parts = echo.items[1][0]["parts"]
    assert all(isinstance(p, bytes) for p in parts)


def test_binary_ack(new_client, connect):
    sio = connect(new_client())
    answer = sio.call("echo-ack", ({"data": b"\xde\xad\xbe\xef"}, b"\x00"), timeout=WAIT)
    assert answer == ({"data": b"\xde\xad\xbe\xef"}, b"\x00")


# --- server -> client acks ------------------------------------------------------------------------


def test_server_asks_client_for_ack(new_client, connect):
    sio = new_client()
    asked = []

    @sio.on("ask")
    def on_ask(data):
        asked.append(data)
        return "pong", {"got": data}

    connect(sio)
    payload = {"q": "ping?", "n": [1, 2, 3], "u": "✓"}
    report = sio.call(
        "server-ack", ({"event": "ask", "data": payload, "timeout_ms": 3000},), timeout=WAIT
    )
    assert asked == [payload]
    assert report == {"ok": True, "answer": ["pong", {"got": payload}]}


def test_server_ack_times_out_when_client_answers_late(new_client, connect):
    sio = new_client()
    release = threading.Event()

    @sio.on("slow")
    def on_slow(data):
        release.wait(WAIT)  # answers only once the server has given up
        return "late"

    connect(sio)
    try:
        report = sio.call(
            "server-ack", ({"event": "slow", "data": 1, "timeout_ms": 200},), timeout=WAIT
        )
    finally:
        release.set()
    assert report["ok"] is False
    assert report["error"]
    # The late ack is ignored and the session lives on.
    assert sio.call("add", (1, 2), timeout=WAIT) == 3
    assert sio.connected


# --- rooms ----------------------------------------------------------------------------------------


def test_rooms(new_client, connect):
    member, other = new_client(), new_client()
    member_tap, other_tap = WireTap(member), WireTap(other)
    member_news = Recorder(member, "news")
    Recorder(other, "news")
    connect(member)
    connect(other)
    room = room_name()

    assert member.call("join", room, timeout=WAIT) is True
    assert member.call("rooms", timeout=WAIT) == sorted([room, member.get_sid("/")])

    n = other.call("to-room", ({"room": room, "event": "news", "data": {"n": 1}},), timeout=WAIT)
    assert n == 1
    assert member_news.wait_for(1) == [({"n": 1},)]
    # The server queued the news for the room before it sent this ack on the same socket, so a
    # non-member that got the news would have read it off the wire by now.
    assert other_tap.events("news") == []

    assert member.call("leave", room, timeout=WAIT) is True
    assert member.call("rooms", timeout=WAIT) == [member.get_sid("/")]
    n = other.call("to-room", ({"room": room, "event": "news", "data": {"n": 2}},), timeout=WAIT)
    assert n == 0
    # A round trip on the former member's socket after that emit: anything sent before it is here.
    assert member.call("echo-ack", "sync", timeout=WAIT) == "sync"
    assert member_tap.events("news") == [({"n": 1},)]
    assert other_tap.events("news") == []


def test_room_emit_with_except(new_client, connect):
    a, b = new_client(), new_client()
    a_tap = WireTap(a)
    b_news = Recorder(b, "news")
    connect(a)
    connect(b)
    room = room_name()
    assert a.call("join", room, timeout=WAIT) is True
    assert b.call("join", room, timeout=WAIT) is True
    n = a.call(
        "to-room",
        ({"room": room, "except": a.get_sid("/"), "event": "news", "data": "x"},),
        timeout=WAIT,
    )
    assert n == 1
    assert b_news.wait_for(1) == [("x",)]
    assert a_tap.events("news") == []


# --- namespaces -----------------------------------------------------------------------------------


def test_admin_namespace_with_good_token(new_client, connect):
    sio = new_client()
    welcome = Recorder(sio, "welcome")
    admin_welcome = Recorder(sio, "admin-welcome", namespace="/admin")
    admin_echo = Recorder(sio, "echo", namespace="/admin")
    connect(sio, auth={"token": "secret"}, namespaces=["/", "/admin"])
    assert set(sio.namespaces) == {"/", "/admin"}
    ((data,),) = admin_welcome.wait_for(1)
    assert data == {"id": sio.get_sid("/admin")}
    ((data,),) = welcome.wait_for(1)
    assert data == {"id": sio.get_sid("/"), "recovered": False}
    assert sio.get_sid("/admin") != sio.get_sid("/")

    sio.emit("echo", ("on admin", {"k": 1}), namespace="/admin")
    assert admin_echo.wait_for(1) == [("on admin", {"k": 1})]


@pytest.mark.parametrize("auth", [{"token": "wrong"}, None], ids=["bad-token", "no-auth"])
def test_admin_namespace_refuses_bad_token(new_client, connect, auth):
    sio = new_client()
    errors = []
    got_error = threading.Event()
    welcomed = threading.Event()

    @sio.on("connect_error", namespace="/admin")
    def on_error(data):
        errors.append(data)
        got_error.set()

    sio.on("admin-welcome", lambda *_: welcomed.set(), namespace="/admin")

    with pytest.raises(socketio.exceptions.ConnectionError) as exc:
        connect(sio, auth=auth, namespaces=["/admin"])
    assert "/admin" in str(exc.value)
    assert got_error.wait(WAIT)
    assert errors == [{"message": "unauthorized", "data": {"reason": "bad token"}}]
    assert not welcomed.is_set()
    assert not sio.connected


def test_dynamic_namespace(new_client, connect):
    sio = new_client()
    hello = Recorder(sio, "hello", namespace="/dyn-abc")
    connect(sio, namespaces=["/dyn-abc"])
    assert hello.wait_for(1) == [({"nsp": "/dyn-abc"},)]


def test_unknown_namespace_is_refused(new_client, connect):
    sio = new_client()
    errors = []
    sio.on("connect_error", errors.append, namespace="/nope")
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect(sio, namespaces=["/nope"])
    assert errors == [{"message": "Invalid namespace"}]


# --- disconnect -----------------------------------------------------------------------------------


def wait_for_reason(observer, sid, timeout=WAIT):
    """Polls the server's `disconnect-reasons` log (bounded) until it has an entry for sid."""
    deadline = time.monotonic() + timeout
    while True:
        reasons = observer.call("disconnect-reasons", timeout=WAIT)
        found = [r["reason"] for r in reasons if r["id"] == sid]
        if found:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"no disconnect reason for {sid} within {timeout} s: {reasons}")
        time.sleep(0.05)


def test_client_disconnect_reason(new_client, connect):
    """A client's namespace DISCONNECT (`41`) is reported as "client namespace disconnect", and the
    Engine.IO connection stays open: a new CONNECT on it gets a new socket.

    The `41` is queued the way Client.disconnect() queues it, but without the transport close that
    disconnect() does right after: python-engineio may send the WebSocket close frame before the
    queued `41` (or drop the queue when its write loop sees the state change), and then any server,
    the reference included, only sees a "transport close". test_client_disconnect_api covers
    disconnect() itself where it is reliable."""
    leaver, observer = new_client(), new_client()
    tap = WireTap(leaver)
    connect(leaver)
    connect(observer)
    sid = leaver.get_sid("/")
    leaver._send_packet(socketio.packet.Packet(socketio.packet.DISCONNECT, namespace="/"))
    assert wait_for_reason(observer, sid) == ["client namespace disconnect"]

    assert leaver.eio.state == "connected"
    leaver.eio.send("0")  # a Socket.IO CONNECT to "/" on the same Engine.IO session
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        connects = [
            pkt.data
            for pkt in map(lambda d: socketio.packet.Packet(encoded_packet=d), tap.text_messages())
            if pkt.packet_type == socketio.packet.CONNECT
        ]
        if len(connects) == 2:
            break
        time.sleep(0.02)
    assert len(connects) == 2, connects
    assert connects[0] == {"sid": sid}
    assert set(connects[1]) == {"sid"} and connects[1]["sid"] != sid


def test_client_disconnect_api(new_client, server_url):
    """Client.disconnect() shows up as "client namespace disconnect". Polling only: on WebSocket
    python-engineio 4.15 races its close frame against the queued `41` (about half the runs lose
    it, and the server, like the reference, then reports "transport close")."""
    leaver, observer = new_client(), new_client()
    leaver.connect(server_url, transports=["polling"], wait_timeout=WAIT)
    observer.connect(server_url, transports=["websocket"], wait_timeout=WAIT)
    sid = leaver.get_sid("/")
    assert leaver.call("echo-ack", "idle", timeout=WAIT) == "idle"
    # python-engineio's write loop drops whatever is queued if disconnect() changes the state while
    # it is still finishing a request: wait (bounded) until it has nothing in hand.
    deadline = time.monotonic() + WAIT
    while leaver.eio.queue.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    leaver.disconnect()
    assert not leaver.connected
    assert wait_for_reason(observer, sid) == ["client namespace disconnect"]


@pytest.mark.parametrize("event", ["disconnect-me", "close-me"])
def test_server_disconnect(new_client, connect, event):
    """socket.disconnect(false) and socket.disconnect(true) on the server: the client hears "io
    server disconnect", the server records "server namespace disconnect"."""
    kicked, observer = new_client(), new_client()
    reasons = []
    gone = threading.Event()

    @kicked.on("disconnect")
    def on_disconnect(reason):
        reasons.append(reason)
        gone.set()

    connect(kicked)
    connect(observer)
    sid = kicked.get_sid("/")
    kicked.emit(event)
    assert gone.wait(WAIT)
    assert reasons == [kicked.reason.SERVER_DISCONNECT]
    assert wait_for_reason(observer, sid) == ["server namespace disconnect"]


# --- heartbeat and bursts -------------------------------------------------------------------------


def test_session_survives_heartbeats(start_server, new_client, transports):
    server = start_server(PING_INTERVAL_MS=100, PING_TIMEOUT_MS=1000)
    sio = new_client()
    tap = WireTap(sio)
    disconnected = threading.Event()
    sio.on("disconnect", lambda *a: disconnected.set())
    sio.connect(server.url, transports=transports, wait_timeout=WAIT)
    sid = sio.get_sid("/")
    # A client that did not pong would be dropped 1.1 s after opening; this one must not be.
    assert not disconnected.wait(1.5)
    assert tap.pings >= 5
    assert sio.connected and sio.get_sid("/") == sid
    assert sio.call("add", (20, 22), timeout=WAIT) == 42


def test_client_that_never_pongs_is_dropped(start_server, new_client, transports):
    server = start_server(PING_INTERVAL_MS=100, PING_TIMEOUT_MS=300)
    mute, observer = new_client(), new_client()
    tap = WireTap(mute, swallow_pings=True)
    mute.connect(server.url, transports=transports, wait_timeout=WAIT)
    observer.connect(server.url, transports=["websocket"], wait_timeout=WAIT)
    sid = mute.get_sid("/")
    assert wait_for_reason(observer, sid) == ["ping timeout"]
    assert tap.pings >= 1


BURST = 1000


class SessionWatch:
    """Records a client's disconnect, so that a burst test fails as soon as the session dies
    instead of at its timeout."""

    def __init__(self, sio):
        self.reasons = []
        self.changed = threading.Event()

        def on_disconnect(*args):
            self.reasons.append(args[0] if args else None)
            self.changed.set()

        sio.on("disconnect", on_disconnect)

    def wait(self, done, timeout):
        """Waits until done() is true; fails at once if the session dies first."""
        deadline = time.monotonic() + timeout
        while not done():
            assert not self.reasons, f"the session died: {self.reasons}"
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not done within {timeout} s"
            self.changed.wait(min(remaining, 0.05))
        assert not self.reasons, f"the session died: {self.reasons}"


def test_burst_of_server_events(new_client, connect, transports):
    """1 000 events emitted at once: on polling, the server must split them over several GET
    responses (python-engineio refuses a payload of more than 16 packets and drops the session)."""
    sio = new_client()
    tap = WireTap(sio)
    burst = Recorder(sio, "burst")
    watch = SessionWatch(sio)
    connect(sio)
    sid = sio.get_sid("/")
    acks = []
    # The ack is queued after the last burst event, so it arrives after all of them.
    sio.emit("burst", BURST, callback=lambda n: acks.append(n))
    watch.wait(lambda: acks and len(burst.items) >= BURST, timeout=30)
    assert acks == [BURST]
    assert sorted(burst.items) == [(i,) for i in range(BURST)]
    assert tap.events("burst") == [(i,) for i in range(BURST)]
    assert sio.connected and sio.get_sid("/") == sid and sio.transport() == transports[0]
    assert sio.call("add", (1, 2), timeout=WAIT) == 3


def test_burst_of_room_broadcasts(new_client, server_url, transports):
    """1 000 room broadcasts sent by a WebSocket client reach a client on `transports` in order."""
    receiver, sender = new_client(), new_client()
    tap = WireTap(receiver)
    got = Recorder(receiver, "n")
    watch = SessionWatch(receiver)
    receiver.connect(server_url, transports=transports, wait_timeout=WAIT)
    sender.connect(server_url, transports=["websocket"], wait_timeout=WAIT)
    room = room_name()
    assert receiver.call("join", room, timeout=WAIT) is True
    acked = []
    for i in range(BURST):
        sender.emit("to-room", ({"room": room, "event": "n", "data": i},), callback=acked.append)
    watch.wait(lambda: len(acked) == BURST and len(got.items) >= BURST, timeout=30)
    assert acked == [1] * BURST  # each reached exactly one socket
    assert sorted(got.items) == [(i,) for i in range(BURST)]
    assert tap.events("n") == [(i,) for i in range(BURST)]
    assert receiver.connected and receiver.transport() == transports[0]
    assert receiver.call("add", (1, 2), timeout=WAIT) == 3


def test_with_recovery_handlers_take_the_offset_as_one_more_argument(start_server, new_client, transports):
    """With connection state recovery on, every broadcast carries its offset as a trailing argument
    (as on the reference), and python-socketio passes it to the handler: the README's handler,
    `def on_update(update, *offset)`, gets the event's data and the offset."""
    server = start_server(RECOVERY_WINDOW_MS=60000)
    member, other = new_client(), new_client()
    got = []
    arrived = threading.Event()

    @member.on("news")
    def on_news(data, *offset):
        got.append((data, offset))
        arrived.set()

    for sio in (member, other):
        sio.connect(server.url, transports=transports, wait_timeout=WAIT)
    room = room_name()
    assert member.call("join", room, timeout=WAIT) is True
    n = other.call("to-room", ({"room": room, "event": "news", "data": {"n": 1}},), timeout=WAIT)
    assert n == 1
    assert arrived.wait(WAIT)
    [(data, offset)] = got
    assert data == {"n": 1}
    assert len(offset) == 1 and isinstance(offset[0], str) and offset[0]
