#!/usr/bin/env python3
"""Turns the raw results of benches/run.sh into results.json, results.md and one SVG per scenario.

    python3 benches/report.py --raw benches/results/raw --out benches/results [--config JSON]

Raw files are the load generator's JSON documents, named <scenario>-<peer>-<run>.json. Each metric
is reported as the median over runs with the min–max range. Standard library only.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

PEERS = ["tidings", "node", "socketioxide", "floor", "limit"]
PEER_NAMES = {
    "tidings": "Tidings",
    "node": "Node socket.io",
    "socketioxide": "socketioxide",
    "floor": "floor (tungstenite)",
    "limit": "limit (bare TCP)",
}
COLORS = {"tidings": "#d9480f", "node": "#2f9e44", "socketioxide": "#1971c2", "floor": "#868e96", "limit": "#212529"}
SCENARIOS = ["idle", "idle-polling", "fanout-100", "fanout-max", "echo", "soak"]


def g(d, *path):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


def ms(v):
    return None if v is None else v / 1000.0


def mib(v):
    return None if v is None else v / 1024.0


# (key, label, extractor, unit, better)
IDLE = [
    ("kib_per_conn", "server RSS per connection", lambda d: g(d, "server", "kib_per_conn"), "KiB", "lower"),
    ("connect_rate", "connect rate", lambda d: d.get("connect_rate"), "conn/s", "higher"),
    ("hs_p50", "handshake p50", lambda d: ms(g(d, "handshake", "p50_us")), "ms", "lower"),
    ("hs_p99", "handshake p99", lambda d: ms(g(d, "handshake", "p99_us")), "ms", "lower"),
    ("connected", "connected", lambda d: d.get("connected"), "", "higher"),
    ("failed", "failed handshakes", lambda d: d.get("failed"), "", "lower"),
    ("drops", "dropped while held", lambda d: d.get("drops"), "", "lower"),
    ("rss_before", "server RSS before", lambda d: mib(g(d, "server", "rss_before_kib")), "MiB", "lower"),
    ("rss_held", "server RSS, all held", lambda d: mib(g(d, "server", "rss_held_kib")), "MiB", "lower"),
    ("rss_after", "server RSS after they leave", lambda d: mib(g(d, "server", "rss_after_kib")), "MiB", "lower"),
    ("cpu_connect", "server CPU per connect", lambda d: g(d, "server", "cpu_us_per_connect"), "µs", "lower"),
]
FANOUT = [
    ("deliveries", "deliveries/s", lambda d: d.get("deliveries_per_sec"), "/s", "higher"),
    ("broadcasts", "broadcasts/s", lambda d: d.get("broadcasts_per_sec"), "/s", "higher"),
    ("loss_pct", "loss", lambda d: d.get("loss_pct"), "%", "lower"),
    ("lat_p50", "latency p50", lambda d: ms(g(d, "latency", "p50_us")), "ms", "lower"),
    ("lat_p99", "latency p99", lambda d: ms(g(d, "latency", "p99_us")), "ms", "lower"),
    ("lat_p999", "latency p99.9", lambda d: ms(g(d, "latency", "p999_us")), "ms", "lower"),
    ("cpu_delivery", "server CPU per delivery", lambda d: g(d, "server", "cpu_us_per_delivery"), "µs", "lower"),
    ("drops", "subscribers dropped", lambda d: d.get("drops"), "", "lower"),
    ("joined", "subscribers joined", lambda d: d.get("joined"), "", "higher"),
]
ECHO = [
    ("round_trips", "round trips/s", lambda d: d.get("round_trips_per_sec"), "/s", "higher"),
    ("rtt_p50", "RTT p50", lambda d: ms(g(d, "rtt", "p50_us")), "ms", "lower"),
    ("rtt_p99", "RTT p99", lambda d: ms(g(d, "rtt", "p99_us")), "ms", "lower"),
    ("rtt_p999", "RTT p99.9", lambda d: ms(g(d, "rtt", "p999_us")), "ms", "lower"),
    ("cpu_rt", "server CPU per round trip", lambda d: g(d, "server", "cpu_us_per_round_trip"), "µs", "lower"),
    ("drops", "clients dropped", lambda d: d.get("drops"), "", "lower"),
]
METRICS = {"idle": IDLE, "idle-polling": IDLE, "fanout-100": FANOUT, "fanout-max": FANOUT, "echo": ECHO, "soak": IDLE}
TITLES = {
    "idle": "Idle connections held through heartbeats",
    "idle-polling": "Idle connections opened over long-polling, then upgraded (the browser client's default; the floor has no polling)",
    "fanout-100": "Fan-out at a fixed rate",
    "fanout-max": "Fan-out at the maximum sustainable rate",
    "echo": "Echo, clients in closed loop",
    "soak": "Soak: connections held through heartbeats for minutes",
}
CHART = {
    "idle": ["kib_per_conn", "connect_rate", "hs_p99"],
    "idle-polling": ["kib_per_conn", "connect_rate", "hs_p99"],
    "fanout-100": ["deliveries", "lat_p99", "cpu_delivery"],
    "fanout-max": ["deliveries", "lat_p99", "cpu_delivery"],
    "echo": ["round_trips", "rtt_p99", "cpu_rt"],
    "soak": ["kib_per_conn", "drops", "hs_p99"],
}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "fd_limit": sh("sh", "-c", "ulimit -n"),
    }


def lock_version(path, name):
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), text)
    return m.group(1) if m else None


def versions(root):
    node_pkg = None
    try:
        lock = json.loads((root / "benches/peers/node/package-lock.json").read_text())
        node_pkg = lock["packages"]["node_modules/socket.io"]["version"]
    except (OSError, KeyError, ValueError):
        pass
    return {
        "tidings_commit": sh("git", "-C", str(root), "rev-parse", "--short", "HEAD"),
        "rustc": sh("rustc", "--version"),
        "node": sh("node", "--version"),
        "socket.io": node_pkg,
        "socketioxide": lock_version(root / "benches/peers/socketioxide/Cargo.lock", "socketioxide"),
        "tokio-tungstenite (floor)": lock_version(root / "benches/peers/floor/Cargo.lock", "tokio-tungstenite"),
    }


def agg(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}


def fmt(v, unit=""):
    if v is None:
        return "–"
    a = abs(v)
    if unit in ("/s", "conn/s") or a >= 1000:
        s = f"{v:,.0f}".replace(",", " ")
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif v == int(v):
        s = f"{v:.0f}"
    elif a >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return s


def cell(a, unit):
    if a is None:
        return "–"
    if a["runs"] > 1 and a["min"] != a["max"]:
        return f"{fmt(a['median'], unit)} ({fmt(a['min'], unit)}–{fmt(a['max'], unit)})"
    return fmt(a["median"], unit)


def load_raw(raw):
    runs = {}
    for f in sorted(Path(raw).glob("*.json")):
        m = re.match(r"(.+)-([a-z]+)-(\d+)\.json$", f.name)
        if not m:
            continue
        scenario, peer, _ = m.groups()
        try:
            d = json.loads(f.read_text())
        except ValueError:
            d = {"error": "unreadable result"}
        d.pop("handshake_hist", None)
        runs.setdefault(scenario, {}).setdefault(peer, []).append(d)
    return runs


def aggregate(runs):
    out = {}
    for scenario, peers in runs.items():
        metrics = METRICS.get(scenario, [])
        out[scenario] = {}
        for peer, rs in peers.items():
            ok = [r for r in rs if "error" not in r]
            out[scenario][peer] = {
                "runs": len(rs),
                "errors": [r["error"] for r in rs if "error" in r]
                + sorted({e for r in ok for e in r.get("errors", [])}),
                "metrics": {k: agg([f(r) for r in ok]) for k, _, f, _, _ in metrics},
                "raw": rs,
            }
    return out


def med(res, scenario, peer, key):
    a = g(res, scenario, peer, "metrics", key)
    return a["median"] if a else None


def worst(res, scenario, peer, key, pick=max):
    """The worst single run of a metric (not the median): for goals every run must meet."""
    runs = [v for v in (g(r, *key) for r in g(res, scenario, peer, "raw") or [] if "error" not in r) if v is not None]
    return pick(runs) if runs else None


def targets(res, config):
    """The speed issue's targets for Tidings, from the medians of this run (ratios to the floor
    measured in the same run), and how far each figure is from the limit peer's."""
    t = []

    def add(name, value, goal, ok, unit="", limit=None):
        t.append({"target": name, "tidings": value, "goal": goal, "met": ok, "unit": unit, "limit": limit})

    conns = config.get("idle_conns", "?")
    kib = med(res, "idle", "tidings", "kib_per_conn")
    if kib is not None:
        add(f"idle WebSocket RSS per connection at {conns}", kib, "≤ 2", kib <= 2, "KiB",
            med(res, "idle", "limit", "kib_per_conn"))
    kib = med(res, "idle-polling", "tidings", "kib_per_conn")
    if kib is not None:
        add(f"idle RSS per connection at {conns}, opened over polling and upgraded", kib, "≤ 2.5", kib <= 2.5, "KiB")
    d = med(res, "fanout-max", "tidings", "deliveries")
    o = med(res, "fanout-max", "floor", "deliveries")
    if d is not None and o:
        add("max fan-out deliveries/s, ≥ 1.1× the floor's", d, f"≥ {fmt(1.1 * o, '/s')} ({d / o:.2f}× now)", d >= 1.1 * o, "/s",
            med(res, "fanout-max", "limit", "deliveries"))
    cpu = med(res, "fanout-max", "tidings", "cpu_delivery")
    o = med(res, "fanout-max", "floor", "cpu_delivery")
    if cpu is not None and o is not None:
        add("server CPU per delivery at max fan-out, below the floor's", cpu, f"< {fmt(o)}", cpu < o, "µs",
            med(res, "fanout-max", "limit", "cpu_delivery"))
    loss = worst(res, "fanout-100", "tidings", ("loss_pct",))
    if loss is not None:
        add(f"no loss at {config.get('rate', 100)} broadcasts/s (every run)", loss, "0", loss == 0, "%")
    p99 = med(res, "fanout-100", "tidings", "lat_p99")
    o = med(res, "fanout-100", "floor", "lat_p99")
    if p99 is not None and o is not None:
        add(f"fan-out p99 at {config.get('rate', 100)}/s at or below the floor's", p99, f"≤ {fmt(o)}", p99 <= o, "ms",
            med(res, "fanout-100", "limit", "lat_p99"))
    rt = med(res, "echo", "tidings", "round_trips")
    o = med(res, "echo", "floor", "round_trips")
    if rt is not None and o:
        add("echo round trips/s ≥ 1.0× the floor's", rt, f"≥ {fmt(o, '/s')} ({rt / o:.2f}× now)", rt >= o, "/s",
            med(res, "echo", "limit", "round_trips"))
    cr = med(res, "idle", "tidings", "connect_rate")
    o = med(res, "idle", "floor", "connect_rate")
    if cr is not None and o:
        add("connect rate ≥ 1.0× the floor's", cr, f"≥ {fmt(o, '/s')} ({cr / o:.2f}× now)", cr >= o, "/s",
            med(res, "idle", "limit", "connect_rate"))
    p99 = worst(res, "idle-polling", "tidings", ("handshake", "p99_us"))
    if p99 is not None:
        add(f"idle-polling handshake p99 at {conns}, every run", p99 / 1000, "≤ 50", p99 / 1000 <= 50, "ms")
    soak = g(res, "soak", "tidings", "raw")
    if soak:
        r = soak[0]
        if "error" in r:
            add("18 000 clients held 10 min, none dropped", None, "0 dropped", False)
        else:
            lost = r.get("drops", 0) + r.get("failed", 0) + (r.get("conns", 0) - r.get("connected", 0) - r.get("failed", 0))
            add(f"{r.get('conns')} clients held {r.get('hold_secs')} s, none dropped", lost, "0 dropped or failed", lost == 0)
    return t


def chart(scenario, res, keys, path):
    metrics = {k: (label, unit, better) for k, label, _, unit, better in METRICS[scenario]}
    peers = [p for p in PEERS if p in res.get(scenario, {})]
    if not peers:
        return False
    pw, ph, top, bottom, left = 300, 260, 56, 70, 16
    width = pw * len(keys) + left
    height = ph + top + bottom
    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="16" font-weight="bold">{TITLES.get(scenario, scenario)}</text>',
        f'<text x="{left}" y="40" fill="#555">median of runs; whiskers: min–max</text>',
    ]
    for i, key in enumerate(keys):
        label, unit, better = metrics[key]
        x0 = left + i * pw
        vals = {p: g(res, scenario, p, "metrics", key) for p in peers}
        vmax = max([a["max"] for a in vals.values() if a] or [1]) or 1
        plot_h = ph - 50
        base = top + 34 + plot_h
        o.append(f'<text x="{x0 + pw / 2 - 8}" y="{top + 4}" text-anchor="middle" font-weight="bold">'
                 f'{label}{" (" + unit + ")" if unit and unit != "/s" else ""}, {better} is better</text>')
        o.append(f'<line x1="{x0 + 20}" y1="{base}" x2="{x0 + pw - 36}" y2="{base}" stroke="#333"/>')
        bw = (pw - 70) / max(len(peers), 1)
        for j, p in enumerate(peers):
            a = vals[p]
            bx = x0 + 24 + j * bw
            if not a:
                o.append(f'<text x="{bx + bw / 2}" y="{base - 4}" text-anchor="middle" fill="#999">n/a</text>')
            else:
                h = plot_h * a["median"] / vmax
                o.append(f'<rect x="{bx + 4:.1f}" y="{base - h:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" fill="{COLORS[p]}"/>')
                if a["runs"] > 1:
                    y1, y2 = base - plot_h * a["min"] / vmax, base - plot_h * a["max"] / vmax
                    cx = bx + bw / 2
                    o.append(f'<line x1="{cx:.1f}" y1="{y1:.1f}" x2="{cx:.1f}" y2="{y2:.1f}" stroke="#222"/>')
                    o.append(f'<line x1="{cx - 5:.1f}" y1="{y2:.1f}" x2="{cx + 5:.1f}" y2="{y2:.1f}" stroke="#222"/>')
                    o.append(f'<line x1="{cx - 5:.1f}" y1="{y1:.1f}" x2="{cx + 5:.1f}" y2="{y1:.1f}" stroke="#222"/>')
                top_y = base - plot_h * max(a["max"], a["median"]) / vmax
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{top_y - 5:.1f}" text-anchor="middle" font-size="11">{fmt(a["median"], unit)}</text>')
            o.append(f'<text x="{bx + bw / 2:.1f}" y="{base + 16}" text-anchor="middle" font-size="11">{p}</text>')
    o.append("</svg>")
    Path(path).write_text("\n".join(o) + "\n")
    return True


def markdown(doc):
    m = doc["machine"]
    v = doc["versions"]
    c = doc["config"]
    lines = [
        "# Benchmarks: Tidings side by side with Node socket.io, socketioxide, a tungstenite floor and a bare-TCP limit",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"{m['fd_limit']} open files per process. Server and load generator share the machine; "
        "every server listens on 127.0.0.1 with a backlog of 1 024; a fresh server process per run.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        f"Settings: {c.get('repeat')} run(s) per cell (median, and min–max when runs differ); idle: "
        f"{c.get('idle_conns')} connections held {c.get('idle_hold_secs')} s; fan-out: {c.get('subs')} "
        f"subscribers in one room, {c.get('rate')} broadcasts/s and the maximum rate (closed loop, "
        f"8 broadcasts in flight), {c.get('secs')} s; echo: {c.get('clients')} clients in closed loop, "
        f"{c.get('secs')} s; load generator threads per process: {c.get('loadgen_threads')}."
        + (" **Quick smoke run: the numbers mean little.**" if c.get("quick") else ""),
        "",
        "Produced by `benches/run.sh`; raw results in `raw/`, server and load-generator logs in `logs/`.",
        "",
    ]
    if c.get("note"):
        lines += [f"**Note:** {c['note']}", ""]
    if doc["targets"]:
        lines += ["## Tidings against the targets", "",
                  "The floor is a plain tokio-tungstenite server; the limit (`peers/limit`) is the least a server can do "
                  "for the same contract: pre-framed shared buffers written straight to the TCP stream, one vectored "
                  "write per connection per batch, no read buffer while idle, no bounds.", "",
                  "| target | Tidings | goal | met | limit peer |", "|---|---|---|---|---|"]
        for t in doc["targets"]:
            val = "–" if t["tidings"] is None else f"{fmt(t['tidings'], t['unit'])} {t['unit']}".strip()
            lim = "" if t.get("limit") is None else f"{fmt(t['limit'], t['unit'])} {t['unit']}".strip()
            lines.append(f"| {t['target']} | {val} | {t['goal']} | {'yes' if t['met'] else '**no**'} | {lim} |")
        lines.append("")
    for scenario in SCENARIOS:
        res = doc["results"].get(scenario)
        if not res:
            continue
        peers = [p for p in PEERS if p in res]
        lines += [f"## {TITLES.get(scenario, scenario)} (`{scenario}`)", ""]
        if Path(doc["_out"], f"{scenario}.svg").exists():
            lines += [f"![{scenario}]({scenario}.svg)", ""]
        lines.append("| metric | " + " | ".join(PEER_NAMES[p] for p in peers) + " |")
        lines.append("|---|" + "---|" * len(peers))
        for key, label, _, unit, better in METRICS[scenario]:
            row = [cell(g(res, p, "metrics", key), unit) for p in peers]
            suffix = f" ({unit})" if unit and unit != "/s" else ""
            lines.append(f"| {label}{suffix} | " + " | ".join(row) + " |")
        errs = [(p, e) for p in peers for e in res[p]["errors"]]
        if errs:
            lines += ["", "Errors: " + "; ".join(f"{p}: {e}" for p, e in errs[:8])]
        lines.append("")
    if doc.get("analytics"):
        a = doc["analytics"]
        lines += ["## The analytics service under the seed's load (Tidings)", "",
                  "From `benches/analytics/bench.js` (see `analytics.md`):", "",
                  "```json", json.dumps({k: a[k] for k in a if k != "machine"}, indent=1)[:1500], "```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", default="benches/results/raw")
    ap.add_argument("--out", default="benches/results")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--note", default="")
    ap.add_argument("--strict", action="store_true", help="exit 1 unless every run passed")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(args.config)
    if args.note:
        config["note"] = args.note
    results = aggregate(load_raw(args.raw))
    doc = {
        "machine": machine(),
        "versions": versions(root),
        "config": config,
        "targets": targets(results, config),
        "results": results,
    }
    # benches/analytics/bench.js always writes beside the committed results.
    analytics = root / "benches/results/analytics.json"
    if config.get("analytics") and analytics.exists():
        try:
            doc["analytics"] = json.loads(analytics.read_text())
        except ValueError:
            pass
    for scenario in results:
        if scenario in CHART:
            chart(scenario, results, CHART[scenario], out / f"{scenario}.svg")
    (out / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    doc["_out"] = str(out)
    (out / "results.md").write_text(markdown(doc))
    passed, failed = check(results)
    for f, _ in failed:
        print("failed run:", f)
    print(f"bench: {passed} passed, {len(failed)} failed")
    # Strict (the CI smoke): every Tidings run must pass, and every peer's run must have produced a
    # result; a comparison peer that lost a connection or a join under load (socketioxide does at its
    # defaults) is reported, not fatal.
    fatal = [f for f, (peer, harness) in failed if peer == "tidings" or harness]
    shared = shared_sources(args.raw)
    for src, files in shared.items():
        print(f"runs sharing the source addresses {src}: {', '.join(files)}")
    if args.strict and (fatal or shared):
        raise SystemExit(1)


def shared_sources(raw):
    """Runs that used the same block of source addresses: each run must have its own, or the
    connections one leaves in TIME_WAIT hold the ports the next one connects from."""
    by_src = {}
    for f in sorted(Path(raw).glob("*.json")):
        try:
            src = json.loads(f.read_text()).get("src_base")
        except ValueError:
            continue
        if src:
            by_src.setdefault(src, []).append(f.name)
    return {src: files for src, files in by_src.items() if len(files) > 1}


def check(results):
    """A run passes when the load generator finished and every connection it asked for was made and
    kept (loss and latency are results, not failures). Failures come with (peer, whether the run
    produced no result at all)."""
    passed, failed = 0, []
    for scenario, peers in results.items():
        for peer, r in peers.items():
            for i, d in enumerate(r["raw"], 1):
                want = d.get("conns", d.get("subs", d.get("clients")))
                got = d.get("connected", d.get("joined"))
                why = d.get("error") or (
                    f"{d.get('failed')} failed handshakes" if d.get("failed") else None
                ) or (f"{d.get('drops')} dropped" if d.get("drops") else None) or (
                    f"{got} of {want} connected" if want is not None and got is not None and got < want else None
                )
                if why:
                    failed.append((f"{scenario} {peer} run {i}: {why}", (peer, bool(d.get("error")))))
                else:
                    passed += 1
    return passed, failed


if __name__ == "__main__":
    main()
