#!/usr/bin/env python3
"""Where an idle connection's memory goes, from a heaptrack profile taken while N connections were held.

    python3 benches/memory/breakdown.py STACKS N

STACKS is `heaptrack_print --flamegraph-cost-type leaked -F STACKS` of a profile whose process was
stopped (SIGKILL) while it held N idle connections: what is live then is what they hold. Each live
allocation is charged to an owner by the frames of its stack; prints a Markdown table of bytes per
connection by owner. Standard library only.
"""

import re
import sys
from collections import Counter

# (owner, a pattern any frame of the stack matches), first match wins, most specific first.
OWNERS = [
    ("TCP registration (tokio's I/O driver)", r"RegistrationSet::allocate|PollEvented"),
    ("the connection's task (its future and tokio's header)", r"runtime::task::core::Cell.*::new"),
    ("handshake request kept for `socket.handshake`", r"RequestInfo::new|EngineIo.*::handle"),
    ("rooms (the socket's own room, both indexes)", r"tidings::rooms::"),
    ("event handlers the application registered", r"Socket::on\b|Socket::on::|Socket::on_"),
    ("Socket.IO client, socket and decoder", r"tidings::socketio::|tidings::parser::"),
    ("Engine.IO session and its registry entry", r"EngineIo.*::open_session|SessionMap|sid::generate"),
    ("WebSocket state and buffers outside the task (decoder tail, write progress)", r"tungstenite|WsIo::accept|websocket::open_session|WsIo::new"),
]


def clean(frame):
    frame = re.sub(r" \(.*\)$", "", frame.strip())
    return re.sub(r"::h[0-9a-f]{16}$", "", frame)


def main():
    path, conns = sys.argv[1], int(sys.argv[2])
    by_owner = Counter()
    total = 0
    for line in open(path):
        stack, n = line.rstrip("\n").rsplit(" ", 1)
        n = int(n)
        if n == 0:
            continue
        total += n
        frames = [clean(f) for f in stack.split(";")]
        owner = next((name for name, pat in OWNERS if any(re.search(pat, f) for f in frames)), "the rest (runtime, listener, globals)")
        by_owner[owner] += n
    print(f"| owner | bytes per connection ({conns} held) |")
    print("|---|---|")
    for owner, _ in OWNERS + [("the rest (runtime, listener, globals)", "")]:
        if owner in by_owner:
            print(f"| {owner} | {by_owner[owner] / conns:.0f} |")
    print(f"| **all live heap** | **{total / conns:.0f}** |")


if __name__ == "__main__":
    main()
