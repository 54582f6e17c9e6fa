//! Group commit of node creations. Concurrent `POST /api/v1/nodes` requests are queued to one
//! task that stores them together, one statement ([`db::nodes::create_many`]) and one commit for
//! up to `MUTR_NODE_BATCH_MAX_ROWS` nodes, with at most `MUTR_NODE_BATCH_CONCURRENCY` statements
//! in flight. While those are busy, new requests wait in the queue and form the next batch, so
//! batches grow with load and an idle server stores each node at once.
//!
//! Each node gets its own answer: a missing parent or a retired guest token fails only that node.
//! A batch whose statement fails with a database error stored nothing, so its nodes are tried
//! again one by one, and only the node that fails alone fails. Other errors (the connection broke,
//! no connection was free) leave it unknown whether the commit happened, so those nodes fail
//! without a retry, which could store them twice.
//!
//! After the commit, and only then, the writer publishes each stored node to live clients and
//! hands it to the analysis pipeline, in the order of the batch, before it answers the request.
//! It does so even when the request was abandoned meanwhile, so no stored node misses its events.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{
    db::{
        self,
        nodes::{Created, NewNode, Outcome},
    },
    domain::{
        coordinates::Vec3,
        mutation::{MutationFilter, ROOT_SCORE},
        node::{AnalysisStatus, Node},
    },
    events::{AnalysisRequested, GALAXY_TOPIC, SharedBroadcaster, SharedHandoff},
};

/// How node creations are grouped (flattened into `mutr-api serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeWriterArgs {
    /// Most nodes stored by one statement (one commit).
    #[arg(long, env = "MUTR_NODE_BATCH_MAX_ROWS", default_value_t = 64)]
    pub node_batch_max_rows: usize,

    /// Most node-creating statements in flight at once; while all are busy, new nodes queue up
    /// for the next batch. Fewer statements make larger batches (fewer commits): on the 2-core
    /// bench machine 1-2 gave the best rate and tail (p95 13-15 ms at 100 writers against 15-17
    /// with 4 or 8); a database with more cores may take more.
    #[arg(long, env = "MUTR_NODE_BATCH_CONCURRENCY", default_value_t = 2)]
    pub node_batch_concurrency: usize,

    /// How long a batch waits for more nodes before it is stored when a statement slot is free
    /// (0s: never waits; batches form only under load).
    #[arg(long, env = "MUTR_NODE_BATCH_LINGER", value_parser = humantime::parse_duration, default_value = "0s")]
    pub node_batch_linger: Duration,

    /// How long a batch waits for more nodes when a statement slot is free but another statement
    /// is still in flight (the database is busy): the users the last batch just answered send
    /// their next nodes within this time, and join this batch instead of the one after it. An
    /// idle writer never waits (see `MUTR_NODE_BATCH_LINGER` for that); the longer of the two
    /// applies. 0s turns it off.
    #[arg(long, env = "MUTR_NODE_BATCH_BUSY_LINGER", value_parser = humantime::parse_duration, default_value = "300us")]
    pub node_batch_busy_linger: Duration,

    /// Node creations that may wait for a batch; beyond it, requests wait to be queued.
    #[arg(long, env = "MUTR_NODE_WRITE_QUEUE", default_value_t = 4096)]
    pub node_write_queue: usize,
}

impl Default for NodeWriterArgs {
    fn default() -> Self {
        Self {
            node_batch_max_rows: 64,
            node_batch_concurrency: 2,
            node_batch_linger: Duration::ZERO,
            node_batch_busy_linger: Duration::from_micros(300),
            node_write_queue: 4096,
        }
    }
}

/// A node to create, with what its answer and its events need.
#[derive(Debug, Clone)]
pub struct NodeDraft {
    /// Its text, already validated.
    pub content: String,
    /// The author's id.
    pub author_id: i64,
    /// The author's nickname, as the node shows it.
    pub author_nickname: String,
    /// The guest token hash the author was found by; none for a member. Checked again in the
    /// statement that stores the node.
    pub guest_token_hash: Option<Vec<u8>>,
    /// The node it answers; none for a root.
    pub parent_id: Option<i64>,
    /// Its offset from the parent (a root: from the origin).
    pub offset: Vec3,
}

/// Why a node was not created.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Its parent does not exist.
    #[error("parent node {0} not found")]
    ParentMissing(i64),
    /// Its author is gone or the guest token no longer identifies them.
    #[error("author no longer exists")]
    AuthorGone,
    /// The database failed for this node.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The database failed for the batch it was in, in a way that leaves the commit unknown
    /// (logged once for the batch).
    #[error("database error in a batch")]
    Batch,
    /// The writer stopped.
    #[error("node writer stopped")]
    Stopped,
    /// PostgreSQL could not be reached for the batch this node was in.
    #[error("database unavailable")]
    Unavailable,
}

struct Job {
    /// When it was queued, for `mutr_node_write_wait_seconds`.
    queued: Instant,
    draft: NodeDraft,
    reply: oneshot::Sender<Result<StoredNode, WriteError>>,
}

/// A stored node as clients see it, with its JSON as the live push carried it, so that the
/// answer to the request that created it need not serialise it again.
#[derive(Debug)]
pub struct StoredNode {
    /// The node.
    pub node: Node,
    /// `node` serialised (none only if serialising failed, which was logged).
    pub json: Option<String>,
}

/// The queue of node creations; cheap to clone. The writer task ends when every clone is dropped.
#[derive(Debug, Clone)]
pub struct NodeWriter {
    queue: mpsc::Sender<Job>,
}

/// Where stored nodes go after the commit.
#[derive(Clone)]
pub struct Sinks {
    /// Live clients.
    pub broadcaster: SharedBroadcaster,
    /// The analysis pipeline.
    pub handoff: SharedHandoff,
}

impl NodeWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(pool: PgPool, sinks: Sinks, args: &NodeWriterArgs) -> Self {
        let (queue, rx) = mpsc::channel(args.node_write_queue.max(1));
        tokio::spawn(run(
            rx,
            pool,
            sinks,
            args.node_batch_max_rows.max(1),
            args.node_batch_concurrency.max(1),
            Linger {
                idle: args.node_batch_linger,
                busy: args.node_batch_busy_linger,
            },
        ));
        Self { queue }
    }

    /// Stores `draft` as `PENDING` (in a batch with others), publishes it and hands it off; the
    /// node as clients see it.
    pub async fn create(&self, draft: NodeDraft) -> Result<StoredNode, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                queued: Instant::now(),
                draft,
                reply,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }
}

/// How long a batch waits for company once it has a statement slot.
#[derive(Debug, Clone, Copy)]
struct Linger {
    /// When no other statement is in flight.
    idle: Duration,
    /// When another statement is in flight.
    busy: Duration,
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    pool: PgPool,
    sinks: Sinks,
    max_rows: usize,
    concurrency: usize,
    linger: Linger,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        // Taking a slot first lets the queue fill while every statement is busy.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_rows.min(64));
        batch.push(first);
        while batch.len() < max_rows {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Slots held by other batches: their statements are still running (a slot is let go as
        // soon as its statement is done, before its users are answered).
        let others_in_flight = concurrency - 1 - slots.available_permits();
        let linger = if others_in_flight > 0 {
            linger.idle.max(linger.busy)
        } else {
            linger.idle
        };
        if !linger.is_zero() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < max_rows {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        let pool = pool.clone();
        let sinks = sinks.clone();
        tokio::spawn(async move {
            store(&pool, &sinks, batch, slot).await;
        });
    }
}

/// Stores one batch and answers each of its jobs. The statement slot goes as soon as the
/// batch's statement is done, before its nodes are published and answered, so that the next
/// batch's statement runs while this one's users are answered. A batch whose statement failed
/// keeps it until its users are answered, since its nodes may be stored again one by one.
async fn store(pool: &PgPool, sinks: &Sinks, batch: Vec<Job>, slot: OwnedSemaphorePermit) {
    metrics::histogram!("mutr_node_batch_rows").record(batch.len() as f64);
    let started = Instant::now();
    let waited = metrics::histogram!("mutr_node_write_wait_seconds");
    for job in &batch {
        waited.record(started.saturating_duration_since(job.queued));
    }
    let result = {
        let rows: Vec<NewNode<'_>> = batch.iter().map(|j| new_node(&j.draft)).collect();
        db::nodes::create_many(pool, &rows).await
    };
    metrics::histogram!("mutr_node_batch_seconds").record(started.elapsed());
    match result {
        Ok(outcomes) => {
            drop(slot);
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                finish(sinks, job, Ok(outcome)).await;
            }
        }
        // A database error fails the whole statement, so nothing was stored: each node alone.
        Err(e) if e.as_database_error().is_some() && batch.len() > 1 => {
            metrics::counter!("mutr_node_batch_retries_total").increment(1);
            tracing::warn!(error = %e, rows = batch.len(), "node batch failed; storing its nodes one by one");
            for job in batch {
                let outcome = db::nodes::create(pool, &new_node(&job.draft)).await;
                finish(sinks, job, outcome.map_err(WriteError::Database)).await;
            }
        }
        Err(e) if batch.len() == 1 => {
            let job = batch.into_iter().next().expect("one job");
            finish(sinks, job, Err(WriteError::Database(e))).await;
        }
        Err(e) if crate::error::database_unavailable(&e) => {
            tracing::warn!(error = %e, rows = batch.len(), "node batch failed: database unavailable");
            for job in batch {
                finish(sinks, job, Err(WriteError::Unavailable)).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = batch.len(), "node batch failed; its outcome is unknown");
            for job in batch {
                finish(sinks, job, Err(WriteError::Batch)).await;
            }
        }
    }
}

fn new_node(draft: &NodeDraft) -> NewNode<'_> {
    NewNode {
        content: &draft.content,
        author_id: draft.author_id,
        guest_token_hash: draft.guest_token_hash.as_deref(),
        parent_id: draft.parent_id,
        offset: draft.offset,
    }
}

/// Runs the post-commit steps of a stored node and answers its job.
async fn finish(sinks: &Sinks, job: Job, outcome: Result<Outcome, WriteError>) {
    let Job { draft, reply, .. } = job;
    let answer = match outcome {
        Ok(Outcome::Created(created)) => Ok(announce(sinks, draft, created).await),
        Ok(Outcome::ParentMissing) => Err(WriteError::ParentMissing(
            draft.parent_id.unwrap_or_default(),
        )),
        Ok(Outcome::AuthorGone) => Err(WriteError::AuthorGone),
        Err(e) => Err(e),
    };
    // The request may have been abandoned; its node is stored and announced all the same.
    let _ = reply.send(answer);
}

/// Publishes a committed node and hands it to the analysis pipeline; the node as clients see it.
async fn announce(sinks: &Sinks, draft: NodeDraft, created: Created) -> StoredNode {
    metrics::counter!("mutr_nodes_created_total").increment(1);
    let is_root = draft.parent_id.is_none();
    let node = Node {
        id: created.id,
        content: draft.content,
        author_nickname: draft.author_nickname,
        topic: None,
        emotion: "neutral".to_owned(),
        mutation_filter: is_root.then_some(MutationFilter::Origin),
        mutation_score: is_root.then_some(ROOT_SCORE),
        x: created.position.x,
        y: created.position.y,
        z: created.position.z,
        parent_id: draft.parent_id,
        root_id: created.root_id,
        crated_at: created.created_at,
        created_at: created.created_at,
        analysis_status: AnalysisStatus::Pending,
    };
    tracing::info!(node_id = node.id, parent_id = ?node.parent_id, user_id = draft.author_id, "node created");
    let json = match serde_json::to_string(&node) {
        Ok(json) => {
            sinks.broadcaster.publish(GALAXY_TOPIC, json.clone()).await;
            Some(json)
        }
        Err(e) => {
            tracing::error!(node_id = node.id, error = %e, "node not serialisable for broadcast");
            None
        }
    };
    let parent_topic_hint = created
        .parent
        .filter(|(_, status)| *status == AnalysisStatus::Completed)
        .and_then(|(topic, _)| topic);
    sinks.handoff.submit(AnalysisRequested {
        node_id: node.id,
        parent_id: node.parent_id,
        parent_topic_hint,
        context: created.context,
    });
    StoredNode { node, json }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::{BoxFuture, join_all};
    use sqlx::PgPool;

    use super::*;
    use crate::{
        db::users,
        domain::lineage::LineageContext,
        events::{AnalysisHandoff, Broadcaster},
    };

    /// Records each published node id and whether another connection saw it committed then.
    struct Recorder {
        pool: PgPool,
        published: Mutex<Vec<(i64, bool)>>,
        handed_off: Mutex<Vec<i64>>,
        events: Mutex<Vec<AnalysisRequested>>,
    }

    impl Broadcaster for Recorder {
        fn publish(&self, _destination: &'static str, body: String) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                let node: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = node["id"].as_i64().unwrap();
                let visible: bool = sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM nodes WHERE id = $1) AS "e!""#,
                    id
                )
                .fetch_one(&self.pool)
                .await
                .unwrap();
                self.published.lock().unwrap().push((id, visible));
            })
        }
    }

    impl AnalysisHandoff for Recorder {
        fn submit(&self, event: AnalysisRequested) {
            self.handed_off.lock().unwrap().push(event.node_id);
            self.events.lock().unwrap().push(event);
        }
    }

    fn writer(pool: &PgPool, args: &NodeWriterArgs) -> (NodeWriter, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            pool: pool.clone(),
            published: Mutex::new(Vec::new()),
            handed_off: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        });
        let sinks = Sinks {
            broadcaster: recorder.clone(),
            handoff: recorder.clone(),
        };
        (NodeWriter::start(pool.clone(), sinks, args), recorder)
    }

    /// One statement at a time, lingering long enough that drafts sent together form one batch.
    fn one_batch() -> NodeWriterArgs {
        NodeWriterArgs {
            node_batch_max_rows: 100,
            node_batch_concurrency: 1,
            node_batch_linger: Duration::from_millis(300),
            node_batch_busy_linger: Duration::ZERO,
            node_write_queue: 100,
        }
    }

    /// Creates through `w`; the node, after checking that its JSON is the node's.
    async fn create(w: &NodeWriter, draft: NodeDraft) -> Result<Node, WriteError> {
        let stored = w.create(draft).await?;
        assert_eq!(
            stored.json.as_deref(),
            Some(serde_json::to_string(&stored.node).unwrap().as_str())
        );
        Ok(stored.node)
    }

    async fn guest(pool: &PgPool, n: u32) -> (i64, Vec<u8>) {
        let hash = crate::auth::guest::hash(&format!("token-{n}"));
        let id = users::create_guest(pool, &format!("테스트_손님_{n:04}"), &hash)
            .await
            .unwrap()
            .id;
        (id, hash)
    }

    fn draft(author: &(i64, Vec<u8>), content: &str, parent_id: Option<i64>) -> NodeDraft {
        NodeDraft {
            content: content.to_owned(),
            author_id: author.0,
            author_nickname: "nick".to_owned(),
            guest_token_hash: Some(author.1.clone()),
            parent_id,
            offset: Vec3::new(0.5, 0.5, 0.5),
        }
    }

    async fn stored(pool: &PgPool) -> Vec<(i64, i64, Option<i64>, String)> {
        sqlx::query!("SELECT id, root_id, parent_id, content FROM nodes ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.root_id, r.parent_id, r.content))
            .collect()
    }

    /// Good nodes, a missing parent and a retired token in one batch: each request gets its own
    /// answer, and the good ones are stored in one transaction.
    #[sqlx::test]
    async fn a_batch_answers_each_request(pool: PgPool) {
        let (w, rec) = writer(&pool, &one_batch());
        let a = guest(&pool, 1).await;
        let root = create(&w, draft(&a, "root", None)).await.unwrap();
        let stale = (a.0, crate::auth::guest::hash("another token"));
        let answers = join_all([
            create(&w, draft(&a, "child", Some(root.id))),
            create(&w, draft(&a, "orphan", Some(987_654))),
            create(&w, draft(&stale, "stale", None)),
            create(&w, draft(&a, "second root", None)),
        ])
        .await;
        let child = answers[0].as_ref().unwrap();
        assert_eq!((child.root_id, child.parent_id), (root.id, Some(root.id)));
        assert!(matches!(
            answers[1],
            Err(WriteError::ParentMissing(987_654))
        ));
        assert!(matches!(answers[2], Err(WriteError::AuthorGone)));
        let second = answers[3].as_ref().unwrap();
        assert_eq!(second.root_id, second.id);
        assert_eq!(
            child.created_at, second.created_at,
            "one transaction for the batch"
        );
        let ids: Vec<i64> = stored(&pool).await.iter().map(|r| r.0).collect();
        assert_eq!(ids, vec![root.id, child.id, second.id]);
        assert_eq!(*rec.handed_off.lock().unwrap(), ids);
    }

    /// The busy linger applies only while another statement runs: a lone creation on an idle
    /// writer is stored at once, however long that linger is.
    #[sqlx::test]
    async fn an_idle_writer_does_not_linger(pool: PgPool) {
        let args = NodeWriterArgs {
            node_batch_busy_linger: Duration::from_secs(30),
            ..NodeWriterArgs::default()
        };
        let (w, _) = writer(&pool, &args);
        let author = guest(&pool, 1).await;
        for n in 0..3 {
            // A user who waits a moment, as people do: the last batch's task let its statement
            // slot go before answering, so nothing is in flight when this node arrives.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = std::time::Instant::now();
            create(&w, draft(&author, &format!("혼자 {n}"), None))
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
    }

    /// Many users creating roots and children at once: every creation succeeds, with distinct
    /// ids and the root of its parent.
    #[sqlx::test]
    async fn concurrent_creations_all_succeed(pool: PgPool) {
        let (w, rec) = writer(
            &pool,
            &NodeWriterArgs {
                node_batch_max_rows: 16,
                ..NodeWriterArgs::default()
            },
        );
        let mut authors = Vec::new();
        for n in 0..20 {
            authors.push(guest(&pool, n).await);
        }
        let roots = join_all(authors.iter().map(|a| create(&w, draft(a, "root", None)))).await;
        let roots: Vec<Node> = roots.into_iter().map(Result::unwrap).collect();
        let children = join_all((0..400).map(|i| {
            let k = i % roots.len();
            create(
                &w,
                draft(&authors[k], &format!("child {i}"), Some(roots[k].id)),
            )
        }))
        .await;
        let mut ids: Vec<i64> = roots.iter().map(|n| n.id).collect();
        for (i, child) in children.into_iter().enumerate() {
            let child = child.unwrap();
            let root = &roots[i % roots.len()];
            assert_eq!(child.root_id, root.id);
            assert_eq!(child.content, format!("child {i}"));
            ids.push(child.id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 420);
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 420);
        for (id, root_id, parent_id, _) in rows {
            match parent_id {
                None => assert_eq!(root_id, id),
                Some(p) => assert_eq!(root_id, p, "children of roots"),
            }
        }
        assert_eq!(rec.published.lock().unwrap().len(), 420);
    }

    /// A node that PostgreSQL refuses fails the batch's statement; the others are stored one by
    /// one and only that node fails.
    #[sqlx::test]
    async fn a_database_error_fails_only_its_node(pool: PgPool) {
        let (w, rec) = writer(&pool, &one_batch());
        let a = guest(&pool, 1).await;
        let answers = join_all([
            create(&w, draft(&a, "first", None)),
            create(&w, draft(&a, "nul \0 inside", None)),
            create(&w, draft(&a, "third", None)),
        ])
        .await;
        assert!(
            matches!(answers[1], Err(WriteError::Database(_))),
            "{:?}",
            answers[1]
        );
        let good: Vec<i64> = [&answers[0], &answers[2]]
            .iter()
            .map(|a| a.as_ref().unwrap().id)
            .collect();
        let rows = stored(&pool).await;
        assert_eq!(
            rows.iter().map(|r| (r.0, r.3.as_str())).collect::<Vec<_>>(),
            vec![(good[0], "first"), (good[1], "third")]
        );
        assert_eq!(*rec.handed_off.lock().unwrap(), good);
    }

    /// Events go out only once the node is committed, and never for a node that was not stored.
    #[sqlx::test]
    async fn events_only_after_commit(pool: PgPool) {
        let (w, rec) = writer(&pool, &one_batch());
        let a = guest(&pool, 1).await;
        let answers = join_all([
            create(&w, draft(&a, "one", None)),
            create(&w, draft(&a, "orphan", Some(424_242))),
            create(&w, draft(&a, "two", None)),
        ])
        .await;
        let ids: Vec<i64> = [&answers[0], &answers[2]]
            .iter()
            .map(|a| a.as_ref().unwrap().id)
            .collect();
        let published = rec.published.lock().unwrap().clone();
        assert_eq!(published, vec![(ids[0], true), (ids[1], true)]);
        assert_eq!(*rec.handed_off.lock().unwrap(), ids);
    }

    /// An abandoned request's node, once stored, is still announced.
    #[sqlx::test]
    async fn an_abandoned_request_is_still_announced(pool: PgPool) {
        let (w, rec) = writer(&pool, &one_batch());
        let a = guest(&pool, 1).await;
        let mut abandoned = Box::pin(create(&w, draft(&a, "left behind", None)));
        // One poll queues it; then the request goes away.
        assert!(futures::poll!(&mut abandoned).is_pending());
        drop(abandoned);
        let later = create(&w, draft(&a, "later", None)).await.unwrap();
        let rows = stored(&pool).await;
        let published: Vec<i64> = rec.published.lock().unwrap().iter().map(|p| p.0).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(published, rows.iter().map(|r| r.0).collect::<Vec<_>>());
        assert_eq!(published[1], later.id);
    }

    /// The hand-off carries what the pipeline needs: the parent's topic once the parent is
    /// analysed (the cheapest answer to "is the parent ready?") and, for a node ready at once,
    /// the lineage window and the topic before it; a child that must wait for its parent gets no
    /// window (its worker reads it when the parent has ended).
    #[sqlx::test]
    async fn events_carry_the_lineage_and_the_parent_topic_hint(pool: PgPool) {
        let (w, rec) = writer(&pool, &NodeWriterArgs::default());
        let a = guest(&pool, 1).await;
        let root = create(&w, draft(&a, "첫 기록", None)).await.unwrap();
        let child = create(&w, draft(&a, "답글", Some(root.id))).await.unwrap();
        sqlx::query!(
            "UPDATE nodes SET analysis_status = 'COMPLETED', topic = '시작' WHERE id = $1",
            root.id
        )
        .execute(&pool)
        .await
        .unwrap();
        let second = create(&w, draft(&a, "둘째", Some(root.id))).await.unwrap();
        let events = rec.events.lock().unwrap().clone();
        assert_eq!(
            events,
            vec![
                AnalysisRequested {
                    node_id: root.id,
                    parent_id: None,
                    parent_topic_hint: None,
                    context: Some(LineageContext {
                        full_context: "첫 기록".into(),
                        baseline_topic: String::new(),
                    }),
                },
                AnalysisRequested {
                    node_id: child.id,
                    parent_id: Some(root.id),
                    parent_topic_hint: None,
                    context: None,
                },
                AnalysisRequested {
                    node_id: second.id,
                    parent_id: Some(root.id),
                    parent_topic_hint: Some("시작".into()),
                    context: Some(LineageContext {
                        full_context: "첫 기록\n둘째".into(),
                        baseline_topic: String::new(),
                    }),
                },
            ]
        );
    }
}
