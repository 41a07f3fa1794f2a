//! The tail across nodes that share a PostgreSQL store: a node whose client
//! tails a worker asks the others to relay that worker's requests, and
//! receives their batches while it has such a client. See `tail.rs` for
//! the channels both feed.

use std::sync::Arc;

use verge_deploy::{TAIL_LEASE, TailReceiver};

use crate::config::StoreConfig;
use crate::node::Node;
use crate::tail::relay_batches;

/// How long the relay waits after an event for others to batch with it:
/// a few NOTIFYs a second per node instead of one per request.
const RELAY_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Events relayed in one round at most.
const RELAY_ROUND: usize = 1000;

/// Which requests a tail shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailScope {
    /// This node's, the only one on its store (SQLite).
    OnlyNode,
    /// Those of every node sharing this node's store.
    AllNodes,
    /// This node's alone, and why.
    ThisNode(&'static str),
}

/// One tail client's watch: while it lives, other nodes relay the worker's
/// requests here.
pub struct TailWatch {
    pub scope: TailScope,
    _receiver: Option<Arc<Box<dyn TailReceiver>>>,
    _renew: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    /// Starts a tail client's watch of `worker` (subscribe to
    /// [`Node::tail`] for the events themselves).
    pub fn watch_tail(self: &Arc<Self>, worker: &str) -> TailWatch {
        let scoped = |scope| TailWatch {
            scope,
            _receiver: None,
            _renew: None,
        };
        let this_node = |why| scoped(TailScope::ThisNode(why));
        if matches!(self.config.store, StoreConfig::Sqlite) {
            return scoped(TailScope::OnlyNode);
        }
        if !self.config.store_listen {
            return this_node(
                "`store_listen` is off, so other nodes' requests cannot reach this node; \
                 tail each node, or turn it on",
            );
        }
        let Some(receiver) = self.tail_receiver() else {
            return this_node("the store relays no tail events");
        };
        // Listening first, then asking: nothing relayed is missed for want
        // of a listener (save what is sent while LISTEN is being set up).
        let changes = self.stores().changes.clone();
        let worker = worker.to_string();
        let renew = tokio::spawn(async move {
            loop {
                if let Err(e) = changes.watch_tail(&worker).await {
                    tracing::warn!(worker, "cannot ask other nodes for the tail: {e}");
                }
                tokio::time::sleep(TAIL_LEASE / 3).await;
            }
        });
        TailWatch {
            scope: TailScope::AllNodes,
            _receiver: Some(receiver),
            _renew: Some(AbortOnDrop(renew)),
        }
    }

    /// The receiver of other nodes' batches, shared by this node's tail
    /// clients: opened by the first, closed after the last.
    fn tail_receiver(&self) -> Option<Arc<Box<dyn TailReceiver>>> {
        let mut slot = self.tail_receiver.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(receiver) = slot.upgrade() {
            return Some(receiver);
        }
        let hub = self.tail.clone();
        let receiver = Arc::new(
            self.stores()
                .changes
                .receive_tails(Box::new(move |batch| hub.deliver(&batch)))?,
        );
        *slot = Arc::downgrade(&receiver);
        Some(receiver)
    }

    /// Sends the requests of workers tailed on other nodes to them, in
    /// batches; idle until some node asks.
    pub(crate) fn relay_tails(self: &Arc<Self>) {
        if matches!(self.config.store, StoreConfig::Sqlite) {
            return;
        }
        let Some(mut outbox) = self.tail.relay_outbox() else {
            return;
        };
        let changes = self.stores().changes.clone();
        let tail = self.tail.clone();
        tokio::spawn(async move {
            while let Some(first) = outbox.recv().await {
                tokio::time::sleep(RELAY_GATHER).await;
                let mut events = vec![first];
                while events.len() < RELAY_ROUND {
                    match outbox.try_recv() {
                        Ok(event) => events.push(event),
                        Err(_) => break,
                    }
                }
                for batch in relay_batches(tail.node(), events) {
                    if let Err(e) = changes.relay_tail(&batch).await {
                        tracing::debug!("cannot relay tail events: {e}");
                    }
                }
                let dropped = tail.take_relay_dropped();
                if dropped > 0 {
                    tracing::warn!("{dropped} tail events were not relayed: too many at once");
                }
            }
        });
    }
}
