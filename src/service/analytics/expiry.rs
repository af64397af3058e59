//! Token lifetimes of connected sockets: one sweeper task for the whole service disconnects each
//! socket when its token's `exp` passes.
//!
//! A socket costs one entry in an ordered set while it is connected (its deadline and id), nothing
//! else: no timer per socket. The sweeper sleeps until the earliest deadline, or until a socket with
//! an earlier one registers. An expired socket is told why (`analytics:error`
//! `{code: "token_expired"}`) and then disconnected by the server, so its client sees the reason
//! `io server disconnect` and does not reconnect by itself; it must come back with a fresh token,
//! which passes the token check like any connect.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use tidings::socketio::SocketIo;

/// Deadlines of connected sockets: (expiry in ms since the Unix epoch, socket id).
#[derive(Debug, Default)]
pub(crate) struct Expiry {
    deadlines: Mutex<BTreeSet<(u64, Box<str>)>>,
    wake: Notify,
    started: AtomicBool,
}

impl Expiry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, Box<str>)>> {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches socket `id` of namespace `/` until `deadline_ms`. Starts the sweeper on first use
    /// (so call it inside a Tokio runtime).
    pub(crate) fn register(self: &Arc<Self>, io: &SocketIo, id: &str, deadline_ms: u64) {
        let earliest = {
            let mut deadlines = self.lock();
            deadlines.insert((deadline_ms, id.into()));
            deadlines.first().is_some_and(|(d, _)| *d == deadline_ms)
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(self.clone(), io.clone()));
        }
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Stops watching socket `id` (it disconnected).
    pub(crate) fn unregister(&self, id: &str, deadline_ms: u64) {
        self.lock().remove(&(deadline_ms, Box::<str>::from(id)));
    }

    /// How many sockets are watched.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes and returns the ids whose deadline is at or before `now_ms`, and the next deadline.
    fn take_due(&self, now_ms: u64) -> (Vec<Box<str>>, Option<u64>) {
        let mut deadlines = self.lock();
        let mut due = Vec::new();
        while let Some((deadline, _)) = deadlines.first() {
            if *deadline > now_ms {
                break;
            }
            if let Some((_, id)) = deadlines.pop_first() {
                due.push(id);
            }
        }
        (due, deadlines.first().map(|(d, _)| *d))
    }
}

/// The sweeper: runs for as long as the runtime does (it holds no socket, only ids).
async fn sweep(expiry: Arc<Expiry>, io: SocketIo) {
    loop {
        // Register interest before looking, so a registration in between is not missed.
        let notified = expiry.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now_ms = super::now_ms();
        let (due, next) = expiry.take_due(now_ms);
        if let (false, Some(ns)) = (due.is_empty(), io.of("/")) {
            for id in due {
                let Some(socket) = ns.socket(&id) else {
                    continue;
                };
                // The id may have come back (a resumed session) with a fresh token since.
                if !super::token_expired(&socket, now_ms) {
                    continue;
                }
                tracing::debug!(socket = %id, "token expired; disconnecting");
                // Best effort: the socket is disconnected next whether or not the notice is queued.
                let _ = socket.emit(
                    "analytics:error",
                    json!({ "code": "token_expired", "message": "the token has expired" }),
                );
                socket.disconnect(false);
            }
        }
        match next {
            Some(deadline) => {
                let wait = Duration::from_millis(deadline.saturating_sub(super::now_ms()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}
