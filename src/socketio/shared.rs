//! What every client of a server shares: the configuration, the namespaces (static and dynamic),
//! the counters, the observer, the `allow_request` hook, and the sweep of connect deadlines.
//!
//! Below the clients and the server handle: clients reach the server's state through it, and it
//! knows clients only as [`AwaitingConnect`] handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use crate::engineio::{AllowFuture, RequestInfo};

use super::config::Config;
use super::namespace::observer::ObserverSlot;
use super::namespace::{ConnectionHandler, Namespace, SocketIoMetrics};

/// A connection that must join a namespace before its deadline (a client, which implements it).
pub(crate) trait AwaitingConnect: Send + Sync {
    /// The connect deadline passed: close the connection if it never joined a namespace.
    fn check_connected(&self);
}

pub(super) type AllowRequest = Arc<dyn Fn(Arc<RequestInfo>) -> AllowFuture + Send + Sync>;
pub(super) type NamespaceMatcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub(super) struct DynamicNamespace {
    pub(super) matches: NamespaceMatcher,
    pub(super) on_connection: ConnectionHandler,
}

pub(crate) struct IoInner {
    pub(crate) config: Config,
    pub(super) namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    pub(super) dynamic: RwLock<Vec<DynamicNamespace>>,
    pub(super) allow_request: RwLock<Option<AllowRequest>>,
    pub(super) dynamic_created: AtomicUsize,
    pub(crate) metrics: Arc<SocketIoMetrics>,
    /// Connections waiting to join a namespace, by deadline (oldest first).
    pub(super) connect_deadlines: std::sync::Mutex<
        std::collections::VecDeque<(tokio::time::Instant, Weak<dyn AwaitingConnect>)>,
    >,
    pub(super) sweeper_started: std::sync::atomic::AtomicBool,
    pub(crate) observer: ObserverSlot,
}

impl IoInner {
    /// Checks `client` when the connect timeout has passed.
    pub(crate) fn watch_connect(self: &Arc<Self>, client: Weak<dyn AwaitingConnect>) {
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        self.connect_deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((deadline, client));
        if !self.sweeper_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep_connect_deadlines(Arc::downgrade(self)));
        }
    }

    /// The namespace named `name`: a static one, or one created now by a matching dynamic pattern.
    pub(crate) fn namespace_for(&self, name: &str) -> Option<Arc<Namespace>> {
        if let Some(ns) = read(&self.namespaces).get(name) {
            return Some(ns.clone());
        }
        let on_connection = read(&self.dynamic)
            .iter()
            .find(|d| (d.matches)(name))
            .map(|d| d.on_connection.clone())?;
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        if !namespaces.contains_key(name) {
            if self.dynamic_created.load(Ordering::Relaxed) >= self.config.max_dynamic_namespaces {
                tracing::debug!(nsp = name, "dynamic namespace limit reached");
                return None;
            }
            self.dynamic_created.fetch_add(1, Ordering::Relaxed);
        }
        Some(
            namespaces
                .entry(name.to_owned())
                .or_insert_with(|| {
                    Arc::new(Namespace::new(
                        name.to_owned(),
                        on_connection,
                        self.config.recovery.clone(),
                        self.metrics.clone(),
                        self.config.adapter.as_deref(),
                        self.config.parser.clone(),
                        self.observer.clone(),
                    ))
                })
                .clone(),
        )
    }
}

/// Closes the connections that joined no namespace before their deadline, until the server is gone.
async fn sweep_connect_deadlines(io: Weak<IoInner>) {
    loop {
        let next = {
            let Some(io) = io.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let mut expired = Vec::new();
            let next = {
                let mut queue = io
                    .connect_deadlines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                while queue.front().is_some_and(|(deadline, _)| *deadline <= now) {
                    if let Some((_, client)) = queue.pop_front() {
                        expired.push(client);
                    }
                }
                queue
                    .front()
                    .map_or(now + io.config.connect_timeout, |(deadline, _)| *deadline)
            };
            for client in expired.iter().filter_map(Weak::upgrade) {
                client.check_connected();
            }
            next
        };
        tokio::time::sleep_until(next).await;
    }
}

pub(super) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
