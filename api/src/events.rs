//! What happens after a node is committed: the broadcast to live clients and the hand-off to the
//! analysis pipeline. Both are called only after the transaction that stored the node committed.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::domain::lineage::LineageContext;

/// The STOMP destination every node event goes to.
pub const GALAXY_TOPIC: &str = "/topic/galaxy/public";

/// A committed node that needs analysis. The pipeline (`analysis::dispatcher`) consumes these;
/// until it picks a node up, the node stays `PENDING` in the database, where recovery finds it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisRequested {
    /// The new node.
    pub node_id: i64,
    /// Its parent; none for a root.
    pub parent_id: Option<i64>,
    /// The parent's topic when the parent was already `COMPLETED` at creation: the cheapest answer
    /// to "is the parent ready?".
    pub parent_topic_hint: Option<String>,
    /// The lineage window (its baseline topic and full context) when the node can be analysed at
    /// once: a root, or a child with a parent-topic hint. None for a child that must wait for its
    /// parent: its window's baseline topic may change until then, so the worker that claims it
    /// reads the window from the database.
    pub context: Option<LineageContext>,
}

/// Where committed nodes are handed to the analysis pipeline. Must not block or fail the request:
/// a node that is not handed over stays `PENDING` and is picked up by recovery.
pub trait AnalysisHandoff: Send + Sync + 'static {
    /// Hands one committed node over.
    fn submit(&self, event: AnalysisRequested);
}

/// Hands events to a bounded channel that the pipeline reads.
#[derive(Debug, Clone)]
pub struct ChannelHandoff {
    sender: mpsc::Sender<AnalysisRequested>,
}

/// A hand-off and the receiving end the pipeline consumes.
pub fn handoff_channel(capacity: usize) -> (ChannelHandoff, mpsc::Receiver<AnalysisRequested>) {
    let (sender, receiver) = mpsc::channel(capacity);
    (ChannelHandoff { sender }, receiver)
}

impl AnalysisHandoff for ChannelHandoff {
    fn submit(&self, event: AnalysisRequested) {
        let node_id = event.node_id;
        match self.sender.try_send(event) {
            Ok(()) => metrics::counter!("mutr_analysis_handoffs_total", "outcome" => "queued")
                .increment(1),
            Err(e) => {
                // The node is committed as PENDING; recovery's sweep dispatches it later.
                let outcome = match e {
                    mpsc::error::TrySendError::Full(_) => "full",
                    mpsc::error::TrySendError::Closed(_) => "closed",
                };
                metrics::counter!("mutr_analysis_handoffs_total", "outcome" => outcome)
                    .increment(1);
                tracing::warn!(
                    node_id,
                    outcome,
                    "analysis hand-off not queued; node stays PENDING for recovery"
                );
            }
        }
    }
}

/// Sends events to live clients (STOMP subscribers on every replica). Never fails the caller.
pub trait Broadcaster: Send + Sync + 'static {
    /// Publishes `body` (a JSON document) to `destination`.
    fn publish(&self, destination: &'static str, body: String) -> BoxFuture<'_, ()>;
}

/// Shared handles of both.
pub type SharedHandoff = Arc<dyn AnalysisHandoff>;
/// Shared handle of a broadcaster.
pub type SharedBroadcaster = Arc<dyn Broadcaster>;

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node_id: i64) -> AnalysisRequested {
        AnalysisRequested {
            node_id,
            parent_id: None,
            parent_topic_hint: None,
            context: Some(LineageContext {
                full_context: "x".into(),
                baseline_topic: String::new(),
            }),
        }
    }

    #[tokio::test]
    async fn channel_handoff_delivers_and_never_blocks_when_full() {
        let (handoff, mut rx) = handoff_channel(1);
        handoff.submit(event(1));
        handoff.submit(event(2)); // full: dropped, not blocking
        assert_eq!(rx.recv().await.unwrap().node_id, 1);
        assert!(rx.try_recv().is_err());
        drop(rx);
        handoff.submit(event(3)); // closed: dropped, not panicking
    }
}
