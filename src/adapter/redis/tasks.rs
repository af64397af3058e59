//! The node's Redis tasks: the publisher (a queue drained onto a reconnecting connection, so
//! publishing never blocks local traffic) and the subscriber (which reconnects and subscribes
//! again by itself), and the dispatch of what the subscriber receives.

use std::sync::Arc;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;

use super::wire::*;
use super::*;

pub(super) async fn run_publisher(
    node: std::sync::Weak<Node>,
    mut conn: redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let mut failing = false;
    while let Some((channel, payload)) = rx.recv().await {
        let Some(node) = node.upgrade() else { return };
        let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                node.metrics.published.inc();
                if failing {
                    tracing::info!("redis publishing works again");
                    failing = false;
                }
            }
            Err(err) => {
                node.metrics.publish_failures.inc();
                if !failing {
                    tracing::warn!(%err, "redis publish failed; counting failures until it recovers");
                    failing = true;
                }
            }
        }
    }
}

pub(super) async fn run_subscriber(
    node: std::sync::Weak<Node>,
    client: redis::Client,
    mut new_namespaces: mpsc::UnboundedReceiver<String>,
) {
    let mut first = true;
    loop {
        let Some(strong) = node.upgrade() else { return };
        if !first {
            strong.metrics.reconnects.inc();
        }
        first = false;
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                let names: Vec<String> = strong
                    .namespaces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                let mut ok = true;
                for nsp in names {
                    ok &= subscribe(&strong, &mut sink, &nsp).await.is_ok();
                }
                drop(strong);
                if ok {
                    tracing::debug!("redis subscriber connected");
                    loop {
                        tokio::select! {
                            msg = stream.next() => {
                                let Some(msg) = msg else { break };
                                let Some(node) = node.upgrade() else { return };
                                handle_message(&node, &msg);
                            }
                            nsp = new_namespaces.recv() => {
                                let Some(nsp) = nsp else { return };
                                let Some(node) = node.upgrade() else { return };
                                if subscribe(&node, &mut sink, &nsp).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(err) => {
                drop(strong);
                tracing::warn!(%err, "redis subscriber cannot connect; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(super) async fn subscribe(
    node: &Node,
    sink: &mut redis::aio::PubSubSink,
    nsp: &str,
) -> redis::RedisResult<()> {
    sink.psubscribe(format!("{}#{nsp}#*", node.key)).await?;
    sink.subscribe(node.request_channel(nsp)).await?;
    sink.subscribe(node.response_channel(nsp)).await?;
    sink.subscribe(format!("{}-response#{nsp}#{}#", node.key, node.uid))
        .await
}

pub(super) fn handle_message(node: &Arc<Node>, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let payload = msg.get_payload_bytes();
    let request_prefix = format!("{}-request#", node.key);
    if let Some(rest) = channel.strip_prefix(&request_prefix) {
        if let Some(nsp) = rest.strip_suffix('#') {
            handle_request(node, nsp, payload);
        }
        return;
    }
    if channel.starts_with(&format!("{}-response#", node.key)) {
        // Answers to this node's requests go to whoever waits for them; others' are ignored.
        if let Some((answer, binary)) = decode_message(payload) {
            let id = answer
                .get("requestId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let waiter = node
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned();
            if let Some(waiter) = waiter {
                let _ = waiter.send((answer, binary));
            }
        }
        return;
    }
    let Some(rest) = channel.strip_prefix(&format!("{}#", node.key)) else {
        return;
    };
    // `<nsp>#` or `<nsp>#<room>#`: find the namespace by its registered name.
    let nsp = {
        let namespaces = node.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces
            .keys()
            .filter(|n| rest.starts_with(&format!("{n}#")))
            .max_by_key(|n| n.len())
            .cloned()
    };
    let Some(nsp) = nsp else { return };
    let room = &rest[nsp.len() + 1..];
    let Some((local, parser)) = node.namespace(&nsp) else {
        return;
    };
    // A message for one room this node has no member of is dropped before decoding.
    if let Some(room) = room.strip_suffix('#').filter(|r| !r.is_empty()) {
        let opts = BroadcastOptions {
            rooms: vec![Room::from(room)],
            ..Default::default()
        };
        if local.sockets(&opts).is_empty() {
            return;
        }
    }
    let Some(broadcast) = decode_broadcast(payload) else {
        tracing::debug!(channel, "undecodable redis broadcast");
        return;
    };
    if broadcast.uid == node.uid || broadcast.packet.nsp != nsp {
        return;
    }
    node.metrics.received.inc();
    // From another node: not stored here (recovery is off with a cluster adapter), so no offset.
    let delivery = crate::adapter::Broadcast::new(&broadcast.packet, &*parser, None);
    broadcast_local(&*local, &delivery, &broadcast.opts);
}
