//! Load generator of the Tidings benchmark harness (see `benches/README.md`).
//!
//! Speaks Engine.IO v4 / Socket.IO v5 over WebSocket to any peer implementing the harness contract
//! (namespace `/`, path `/socket.io/`: `join` → ack `true`; `echo` → `echo`; `broadcast`
//! `{room, data}` → `bcast` `data` to the room) and prints its results as one JSON document.
//!
//! - `idle`: open N connections at a bounded concurrency, hold them (answering pings), report the
//!   connect rate, handshake latency, failures, drops, and the server's RSS per connection. Above
//!   `--per-proc` connections it starts child processes of itself (one process may hold 20 000
//!   file descriptors here), each with its own block of source addresses, and merges their results.
//! - `fanout`: subscribers join one room; a publisher broadcasts `{s: seq, t: µs}` at a fixed rate
//!   or as fast as the server keeps up (`--rate max`: a closed loop with `--window` broadcasts not
//!   yet delivered to every subscriber); report deliveries/s, loss, latency, server CPU/delivery.
//! - `echo`: clients in closed loop (emit `echo`, await `echo`); report round trips/s and RTT.

mod client;
mod stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use client::{Error, PONG, Sources, Target, Ws};
use stats::Probe;

#[derive(Parser, Debug)]
#[command(about = "Engine.IO v4 / Socket.IO v5 load generator for the Tidings benchmarks")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Server address (loopback).
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    /// Server port.
    #[arg(long, global = true, default_value_t = 3000)]
    port: u16,
    /// Socket.IO path.
    #[arg(long, global = true, default_value = "/socket.io/")]
    path: String,
    /// First source address; connections use `--src-count` addresses from it, round-robin.
    #[arg(long, global = true, default_value = "127.0.0.2")]
    src_base: Ipv4Addr,
    /// Source addresses per process (about 28 000 ephemeral ports each).
    #[arg(long, global = true, default_value_t = 4)]
    src_count: u32,
    /// Handshakes in flight at once (per process).
    #[arg(long, global = true, default_value_t = 256)]
    concurrency: usize,
    /// Tokio worker threads of this process.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Handshake timeout, seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// PID of the server, to read its RSS and CPU time from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A label copied into the result (e.g. the peer's name).
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Open connections the way a browser's client does: the handshake and CONNECT over HTTP
    /// long-polling, then the upgrade to WebSocket, on which they are held (`idle` only).
    #[arg(long, global = true)]
    polling: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Open N connections and hold them.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Most connections per process; above it, child processes share the work.
        #[arg(long, default_value_t = 15_000)]
        per_proc: usize,
        /// Internal: run as a child of an `idle` parent (line protocol on stdin/stdout).
        #[arg(long, hide = true)]
        child: bool,
    },
    /// One publisher broadcasts to subscribers of one room.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// Broadcasts per second, or `max` (closed loop with `--window` outstanding broadcasts).
        #[arg(long, default_value = "100")]
        rate: String,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Broadcasts in flight in `--rate max` mode.
        #[arg(long, default_value_t = 8)]
        window: u32,
        /// Extra payload bytes per broadcast.
        #[arg(long, default_value_t = 0)]
        payload: usize,
        /// Longest wait for stragglers after the last broadcast, seconds.
        #[arg(long, default_value_t = 5)]
        drain: u64,
    },
    /// Clients in closed loop: emit `echo`, await `echo`.
    Echo {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Bytes of the echoed string.
        #[arg(long, default_value_t = 32)]
        payload: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(cli));
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<Value, Error> {
    let c = cli.common;
    let mut out = match cli.mode {
        Mode::Idle {
            conns,
            hold,
            per_proc,
            child,
        } => {
            if !child && conns > per_proc {
                idle_parent(&c, conns, hold, per_proc).await?
            } else {
                idle(&c, conns, hold, child).await?
            }
        }
        Mode::Fanout {
            subs,
            rate,
            secs,
            window,
            payload,
            drain,
        } => {
            let rate = if rate == "max" {
                None
            } else {
                Some(rate.parse::<f64>().map_err(|_| "--rate: a number or max")?)
            };
            fanout(&c, subs, rate, secs, window, payload, drain).await?
        }
        Mode::Echo {
            clients,
            secs,
            payload,
        } => echo(&c, clients, secs, payload).await?,
    };
    out["label"] = Value::from(c.label.clone());
    Ok(out)
}

fn target(c: &Common) -> Target {
    Target {
        addr: SocketAddr::new(c.host.into(), c.port),
        path: c.path.clone(),
        timeout: Duration::from_secs(c.timeout),
    }
}

fn sources(c: &Common) -> Sources {
    Sources {
        base: c.src_base,
        count: c.src_count,
    }
}

fn probe(c: &Common) -> Option<Probe> {
    c.server_pid.map(|pid| Probe { pid })
}

/// Outcome of one connection attempt, sent to the collecting task.
enum Opened {
    Ok(Duration),
    Failed(String),
}

/// Tallies connection attempts: handshake latencies, failures, a few distinct error messages.
struct Tally {
    hist: Histogram<u64>,
    ok: usize,
    failed: usize,
    errors: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: stats::histogram(),
            ok: 0,
            failed: 0,
            errors: Vec::new(),
        }
    }

    fn add(&mut self, o: Opened) {
        match o {
            Opened::Ok(d) => {
                self.ok += 1;
                self.hist.saturating_record(d.as_micros() as u64);
            }
            Opened::Failed(e) => {
                self.failed += 1;
                if self.errors.len() < 5 && !self.errors.contains(&e) {
                    self.errors.push(e);
                }
            }
        }
    }

    /// Receives `n` outcomes.
    async fn collect(&mut self, rx: &mut mpsc::UnboundedReceiver<Opened>, n: usize) {
        for _ in 0..n {
            match rx.recv().await {
                Some(o) => self.add(o),
                None => break,
            }
        }
    }
}

/// Answers an Engine.IO ping, if `text` is one. Returns whether it was.
async fn answer_ping(ws: &mut Ws, text: &str) -> Result<bool, Error> {
    if text == "2" {
        ws.send(Message::Text(PONG)).await?;
        return Ok(true);
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------------
// idle

async fn idle(c: &Common, conns: usize, hold: u64, child: bool) -> Result<Value, Error> {
    let probe = probe(c);
    let rss_before = stats::rss(probe);
    let cpu0 = stats::cpu(probe);
    let target = Arc::new(target(c));
    let src = sources(c);
    let sem = Arc::new(Semaphore::new(c.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let drops = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let polling = c.polling;
    let start = Instant::now();
    for i in 0..conns {
        let (target, sem, tx, drops, pings) = (
            target.clone(),
            sem.clone(),
            tx.clone(),
            drops.clone(),
            pings.clone(),
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore open");
            let opened = if polling {
                client::connect_polling(&target, src.nth(i)).await
            } else {
                client::connect(&target, src.nth(i)).await
            };
            drop(permit);
            let mut ws = match opened {
                Ok((ws, d)) => {
                    let _ = tx.send(Opened::Ok(d));
                    ws
                }
                Err(e) => {
                    let _ = tx.send(Opened::Failed(e.to_string()));
                    return;
                }
            };
            drop(tx);
            // Hold: answer pings until told to stop; an end before that is a drop.
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if answer_ping(&mut ws, &t).await.unwrap_or(false) {
                                pings.fetch_add(1, Relaxed);
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            if !*stop.borrow() {
                                drops.fetch_add(1, Relaxed);
                            }
                            return;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        });
    }
    drop(tx);
    let mut tally = Tally::new();
    tally.collect(&mut rx, conns).await;
    let connect_secs = start.elapsed().as_secs_f64();
    let cpu1 = stats::cpu(probe);

    let mut stdin = child.then(|| BufReader::new(tokio::io::stdin()).lines());
    // Everyone is connected: settle, then the memory they hold.
    if let Some(lines) = stdin.as_mut() {
        println!("READY");
        let _ = lines.next_line().await?;
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss_connected = stats::rss(probe);
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let rss_held = stats::rss(probe);
    if let Some(lines) = stdin.as_mut() {
        println!("HELD");
        let _ = lines.next_line().await?;
    }
    let drops_in_hold = drops.load(Relaxed);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Connections are closed: the memory the server keeps after they leave.
    let rss_after = if child {
        Value::Null
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stats::rss(probe)
    };
    Ok(idle_result(&IdleParts {
        polling: c.polling,
        conns,
        hold,
        procs: 1,
        tally: &tally,
        connect_secs,
        drops: drops_in_hold,
        pings: pings.load(Relaxed),
        rss: [rss_before, rss_connected, rss_held, rss_after],
        cpu_connect_us: cpu0.zip(cpu1).map(|(a, b)| b - a),
    }))
}

struct IdleParts<'a> {
    polling: bool,
    conns: usize,
    hold: u64,
    procs: usize,
    tally: &'a Tally,
    connect_secs: f64,
    drops: u64,
    pings: u64,
    rss: [Value; 4],
    cpu_connect_us: Option<u64>,
}

fn idle_result(p: &IdleParts<'_>) -> Value {
    let [before, connected, held, after] = &p.rss;
    let per_conn = |v: &Value| match (before.as_u64(), v.as_u64()) {
        (Some(b), Some(x)) if p.tally.ok > 0 => {
            Value::from((x as f64 - b as f64) / p.tally.ok as f64)
        }
        _ => Value::Null,
    };
    json!({
        "mode": "idle",
        "polling": p.polling,
        "conns": p.conns,
        "hold_secs": p.hold,
        "procs": p.procs,
        "connected": p.tally.ok,
        "failed": p.tally.failed,
        "errors": p.tally.errors,
        "drops": p.drops,
        "pings_answered": p.pings,
        "connect_secs": p.connect_secs,
        "connect_rate": p.tally.ok as f64 / p.connect_secs.max(1e-9),
        "handshake": stats::summary(&p.tally.hist),
        "handshake_hist": stats::to_pairs(&p.tally.hist),
        "server": {
            "rss_before_kib": before,
            "rss_connected_kib": connected,
            "rss_held_kib": held,
            "rss_after_kib": after,
            "kib_per_conn": per_conn(held),
            "kib_per_conn_connected": per_conn(connected),
            "cpu_connect_us": p.cpu_connect_us,
            "cpu_us_per_connect": p.cpu_connect_us.map(|c| c as f64 / p.tally.ok.max(1) as f64),
        },
    })
}

/// Runs `idle` in child processes (each below the per-process descriptor limit, each with its own
/// block of source addresses), in step: all connect, then all hold, then all close.
async fn idle_parent(c: &Common, conns: usize, hold: u64, per_proc: usize) -> Result<Value, Error> {
    let probe = probe(c);
    let rss_before = stats::rss(probe);
    let cpu0 = stats::cpu(probe);
    let procs = conns.div_ceil(per_proc.max(1));
    let exe = std::env::current_exe()?;
    let src = sources(c);
    let mut children = Vec::new();
    for k in 0..procs {
        let n = conns / procs + usize::from(k < conns % procs);
        let block = src.block(k as u32);
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "--host",
            &c.host.to_string(),
            "--port",
            &c.port.to_string(),
            "--path",
            &c.path,
            "--src-base",
            &block.base.to_string(),
            "--src-count",
            &block.count.to_string(),
            "--concurrency",
            &c.concurrency.div_ceil(procs).to_string(),
            "--threads",
            &c.threads.to_string(),
            "--timeout",
            &c.timeout.to_string(),
        ]);
        if c.polling {
            cmd.arg("--polling");
        }
        cmd.args([
            "idle",
            "--conns",
            &n.to_string(),
            "--hold",
            &hold.to_string(),
            "--child",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("child stdout")?).lines();
        children.push((child, stdin, stdout));
    }
    let start = Instant::now();
    async fn expect(
        lines: &mut tokio::io::Lines<impl tokio::io::AsyncBufRead + Unpin>,
        what: &str,
    ) -> Result<(), Error> {
        match lines.next_line().await? {
            Some(l) if l == what => Ok(()),
            other => Err(format!("child: expected {what}, got {other:?}").into()),
        }
    }
    for (_, _, out) in &mut children {
        expect(out, "READY").await?;
    }
    let connect_secs = start.elapsed().as_secs_f64();
    let cpu1 = stats::cpu(probe);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = stats::rss(probe);
    for (_, stdin, _) in &mut children {
        stdin.write_all(b"GO\n").await?;
        stdin.flush().await?;
    }
    for (_, _, out) in &mut children {
        expect(out, "HELD").await?;
    }
    let rss_held = stats::rss(probe);
    for (_, stdin, _) in &mut children {
        stdin.write_all(b"STOP\n").await?;
        stdin.flush().await?;
    }
    let mut tally = Tally::new();
    let (mut drops, mut pings, mut child_secs) = (0, 0, 0f64);
    for (mut child, _, mut out) in children {
        let line = out.next_line().await?.ok_or("child: no result")?;
        let v: Value = serde_json::from_str(&line)?;
        tally.ok += v["connected"].as_u64().unwrap_or(0) as usize;
        tally.failed += v["failed"].as_u64().unwrap_or(0) as usize;
        for e in v["errors"].as_array().into_iter().flatten() {
            if let Some(e) = e.as_str()
                && tally.errors.len() < 5
                && !tally.errors.iter().any(|x| x == e)
            {
                tally.errors.push(e.to_owned());
            }
        }
        drops += v["drops"].as_u64().unwrap_or(0);
        pings += v["pings_answered"].as_u64().unwrap_or(0);
        child_secs = child_secs.max(v["connect_secs"].as_f64().unwrap_or(0.0));
        stats::merge_pairs(&mut tally.hist, &v["handshake_hist"]);
        let _ = child.wait().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = stats::rss(probe);
    Ok(idle_result(&IdleParts {
        polling: c.polling,
        conns,
        hold,
        procs,
        tally: &tally,
        // The children's own clocks exclude process start-up.
        connect_secs: if child_secs > 0.0 {
            child_secs
        } else {
            connect_secs
        },
        drops,
        pings,
        rss: [rss_before, rss_connected, rss_held, rss_after],
        cpu_connect_us: cpu0.zip(cpu1).map(|(a, b)| b - a),
    }))
}

// ---------------------------------------------------------------------------------------------
// fanout

const ROOM: &str = "bench";
const RING: usize = 1 << 20;

/// State shared by the publisher and the subscribers of a fan-out run.
struct Fan {
    base: Instant,
    /// Deliveries per sequence number (ring).
    counts: Vec<AtomicU32>,
    /// Subscribers that joined the room.
    joined: AtomicU32,
    delivered: AtomicU64,
    completed: AtomicU64,
    excess: AtomicU64,
    drops: AtomicU64,
    pings: AtomicU64,
    last_us: AtomicU64,
    /// Broadcasts that may still be sent (`--rate max`).
    window: Semaphore,
    hist: Mutex<Histogram<u64>>,
}

impl Fan {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn record(&self, samples: &mut Vec<u64>) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        for s in samples.drain(..) {
            h.saturating_record(s);
        }
    }
}

async fn subscriber(fan: Arc<Fan>, mut ws: Ws, mut stop: watch::Receiver<bool>) {
    let mut samples = Vec::with_capacity(512);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if t.starts_with("42[\"bcast\"") {
                        let now = fan.now_us();
                        let (Some(seq), Some(sent)) =
                            (client::num_after(&t, "\"s\":"), client::num_after(&t, "\"t\":"))
                        else {
                            continue;
                        };
                        samples.push(now.saturating_sub(sent).max(1));
                        if samples.len() == samples.capacity() {
                            fan.record(&mut samples);
                        }
                        fan.delivered.fetch_add(1, Relaxed);
                        fan.last_us.fetch_max(now, Relaxed);
                        let joined = fan.joined.load(Relaxed);
                        let n = fan.counts[seq as usize % RING].fetch_add(1, Relaxed) + 1;
                        if n == joined {
                            fan.completed.fetch_add(1, Relaxed);
                            fan.window.add_permits(1);
                        } else if n > joined {
                            fan.excess.fetch_add(1, Relaxed);
                        }
                    } else if t.as_str() == "2" {
                        fan.pings.fetch_add(1, Relaxed);
                        if ws.send(Message::Text(PONG)).await.is_err() {
                            fan.drops.fetch_add(1, Relaxed);
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    fan.drops.fetch_add(1, Relaxed);
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    fan.record(&mut samples);
}

async fn fanout(
    c: &Common,
    subs: usize,
    rate: Option<f64>,
    secs: u64,
    window: u32,
    payload: usize,
    drain: u64,
) -> Result<Value, Error> {
    let probe = probe(c);
    let rss_before = stats::rss(probe);
    let fan = Arc::new(Fan {
        base: Instant::now(),
        counts: (0..RING).map(|_| AtomicU32::new(0)).collect(),
        joined: AtomicU32::new(0),
        delivered: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        excess: AtomicU64::new(0),
        drops: AtomicU64::new(0),
        pings: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        window: Semaphore::new(0),
        hist: Mutex::new(stats::histogram()),
    });
    let target = Arc::new(target(c));
    let src = sources(c);
    let sem = Arc::new(Semaphore::new(c.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for i in 0..subs {
        let (target, sem, tx, fan) = (target.clone(), sem.clone(), tx.clone(), fan.clone());
        let stop = stop_rx.clone();
        let mut go = go_rx.clone();
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore open");
            let opened = async {
                let (mut ws, d) = client::connect(&target, src.nth(i)).await?;
                // Bounded like the handshake: a join never acked fails this subscriber instead of
                // holding the whole run.
                tokio::time::timeout(target.timeout, client::join(&mut ws, ROOM))
                    .await
                    .map_err(|_| "join not acknowledged")??;
                Ok::<_, Error>((ws, d))
            }
            .await;
            drop(permit);
            match opened {
                Ok((ws, d)) => {
                    fan.joined.fetch_add(1, Relaxed);
                    let _ = tx.send(Opened::Ok(d));
                    drop(tx);
                    // Start reading only once every subscriber is in, so `joined` is final.
                    let _ = go.wait_for(|g| *g).await;
                    subscriber(fan, ws, stop).await;
                }
                Err(e) => {
                    let _ = tx.send(Opened::Failed(e.to_string()));
                }
            }
        });
    }
    drop(tx);
    let mut tally = Tally::new();
    let t_connect = Instant::now();
    tally.collect(&mut rx, subs).await;
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let joined = u64::from(fan.joined.load(Relaxed));
    if joined == 0 {
        return Err(format!("no subscriber joined: {:?}", tally.errors).into());
    }
    let (mut publisher, _) = client::connect(&target, src.nth(subs)).await?;
    let _ = go_tx.send(true);
    let rss_connected = stats::rss(probe);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pad = if payload > 0 {
        format!(",\"p\":\"{}\"", "x".repeat(payload))
    } else {
        String::new()
    };
    let cpu0 = stats::cpu(probe);
    let first_us = fan.now_us();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent: u64 = 0;
    let mut stalls: u64 = 0;
    let mut ticker =
        rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001))));
    fan.window.add_permits(window.max(1) as usize);
    while Instant::now() < end {
        // Wait until the next broadcast may go, answering pings meanwhile.
        let may_send = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                    false
                }
                None => {
                    match tokio::time::timeout(Duration::from_secs(1), fan.window.acquire()).await {
                        Ok(p) => {
                            p.expect("semaphore open").forget();
                            false
                        }
                        // Some subscriber never got an earlier broadcast: go on without it.
                        Err(_) => true,
                    }
                }
            }
        };
        tokio::select! {
            biased;
            m = publisher.next() => match m {
                Some(Ok(Message::Text(t))) => { answer_ping(&mut publisher, &t).await?; continue; }
                Some(Ok(_)) => continue,
                _ => return Err("publisher connection closed".into()),
            },
            stalled = may_send => stalls += u64::from(stalled),
        }
        let slot = sent as usize % RING;
        fan.counts[slot].store(0, Relaxed);
        let msg = format!(
            "42[\"broadcast\",{{\"room\":\"{ROOM}\",\"data\":{{\"s\":{sent},\"t\":{}{pad}}}}}]",
            fan.now_us()
        );
        publisher.send(Message::Text(Utf8Bytes::from(msg))).await?;
        sent += 1;
    }
    let publish_secs = (fan.now_us() - first_us) as f64 / 1e6;
    // Drain: wait for stragglers until all arrived or `drain` seconds pass.
    let expected = sent * joined;
    let drain_end = Instant::now() + Duration::from_secs(drain);
    while fan.delivered.load(Relaxed) < expected && Instant::now() < drain_end {
        tokio::select! {
            m = publisher.next() => if let Some(Ok(Message::Text(t))) = m { answer_ping(&mut publisher, &t).await?; },
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    let cpu1 = stats::cpu(probe);
    let rss_end = stats::rss(probe);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    drop(publisher);

    let delivered = fan.delivered.load(Relaxed);
    let span_us = fan.last_us.load(Relaxed).saturating_sub(first_us).max(1);
    let incomplete = (0..(sent as usize).min(RING))
        .filter(|&s| u64::from(fan.counts[s].load(Relaxed)) < joined)
        .count();
    let cpu_us = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let hist = fan.hist.lock().unwrap_or_else(|e| e.into_inner());
    Ok(json!({
        "mode": "fanout",
        "subs": subs,
        "joined": joined,
        "failed": tally.failed,
        "errors": tally.errors,
        "rate": rate.map_or(Value::from("max"), Value::from),
        "window": window,
        "payload": payload,
        "secs": secs,
        "connect_secs": connect_secs,
        "handshake": stats::summary(&tally.hist),
        "broadcasts_sent": sent,
        "broadcasts_per_sec": sent as f64 / publish_secs.max(1e-9),
        "stalls": stalls,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "loss_pct": 100.0 * expected.saturating_sub(delivered) as f64 / expected.max(1) as f64,
        "incomplete_broadcasts": incomplete,
        "excess_deliveries": fan.excess.load(Relaxed),
        "drops": fan.drops.load(Relaxed),
        "deliveries_per_sec": delivered as f64 / (span_us as f64 / 1e6),
        "latency": stats::summary(&hist),
        "server": {
            "rss_before_kib": rss_before,
            "rss_connected_kib": rss_connected,
            "rss_end_kib": rss_end,
            "cpu_us": cpu_us,
            "cpu_us_per_delivery": cpu_us.map(|c| c as f64 / delivered.max(1) as f64),
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// echo

async fn echo(c: &Common, clients: usize, secs: u64, payload: usize) -> Result<Value, Error> {
    let probe = probe(c);
    let rss_before = stats::rss(probe);
    let target = Arc::new(target(c));
    let src = sources(c);
    let sem = Arc::new(Semaphore::new(c.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let hist = Arc::new(Mutex::new(stats::histogram()));
    let trips = Arc::new(AtomicU64::new(0));
    let drops = Arc::new(AtomicU64::new(0));
    let msg = Utf8Bytes::from(format!("42[\"echo\",\"{}\"]", "e".repeat(payload)));
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (target, sem, tx, hist, trips, drops, msg) = (
            target.clone(),
            sem.clone(),
            tx.clone(),
            hist.clone(),
            trips.clone(),
            drops.clone(),
            msg.clone(),
        );
        let mut go = go_rx.clone();
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore open");
            let opened = client::connect(&target, src.nth(i)).await;
            drop(permit);
            let mut ws = match opened {
                Ok((ws, d)) => {
                    let _ = tx.send(Opened::Ok(d));
                    ws
                }
                Err(e) => {
                    let _ = tx.send(Opened::Failed(e.to_string()));
                    return;
                }
            };
            drop(tx);
            let Ok(end) = go.wait_for(Option::is_some).await.map(|g| g.expect("set")) else {
                return;
            };
            let mut samples = Vec::with_capacity(256);
            let mut n = 0u64;
            let flush = |samples: &mut Vec<u64>| {
                let mut h = hist.lock().unwrap_or_else(|e| e.into_inner());
                for s in samples.drain(..) {
                    h.saturating_record(s);
                }
            };
            'outer: while Instant::now() < end {
                let t0 = Instant::now();
                if ws.send(Message::Text(msg.clone())).await.is_err() {
                    drops.fetch_add(1, Relaxed);
                    break;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            if t.starts_with("42[\"echo\"") {
                                break;
                            }
                            if answer_ping(&mut ws, &t).await.is_err() {
                                drops.fetch_add(1, Relaxed);
                                break 'outer;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            drops.fetch_add(1, Relaxed);
                            break 'outer;
                        }
                    }
                }
                samples.push((t0.elapsed().as_micros() as u64).max(1));
                n += 1;
                if samples.len() == samples.capacity() {
                    flush(&mut samples);
                }
            }
            flush(&mut samples);
            trips.fetch_add(n, Relaxed);
        });
    }
    drop(tx);
    let mut tally = Tally::new();
    let t_connect = Instant::now();
    tally.collect(&mut rx, clients).await;
    let connect_secs = t_connect.elapsed().as_secs_f64();
    if tally.ok == 0 {
        return Err(format!("no client connected: {:?}", tally.errors).into());
    }
    let rss_connected = stats::rss(probe);
    let cpu0 = stats::cpu(probe);
    let start = Instant::now();
    let _ = go_tx.send(Some(start + Duration::from_secs(secs)));
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = stats::cpu(probe);
    let trips = trips.load(Relaxed);
    let cpu_us = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let hist = hist.lock().unwrap_or_else(|e| e.into_inner());
    Ok(json!({
        "mode": "echo",
        "clients": clients,
        "connected": tally.ok,
        "failed": tally.failed,
        "errors": tally.errors,
        "secs": secs,
        "payload": payload,
        "connect_secs": connect_secs,
        "handshake": stats::summary(&tally.hist),
        "round_trips": trips,
        "round_trips_per_sec": trips as f64 / elapsed.max(1e-9),
        "drops": drops.load(Relaxed),
        "rtt": stats::summary(&hist),
        "server": {
            "rss_before_kib": rss_before,
            "rss_connected_kib": rss_connected,
            "cpu_us": cpu_us,
            "cpu_us_per_round_trip": cpu_us.map(|c| c as f64 / trips.max(1) as f64),
        },
    }))
}
