//! Nodes: insert, the lineage walk (one recursive CTE), the galaxy view and lookups.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{
    coordinates::Vec3,
    lineage::{self, LineageContext},
    mutation::MutationFilter,
    node::{AnalysisStatus, Node},
    viz_key,
};

/// A node to create as `PENDING`.
#[derive(Debug, Clone)]
pub struct NewNode<'a> {
    /// Its text.
    pub content: &'a str,
    /// Its author.
    pub author_id: i64,
    /// The hash of the guest token the author was found by, when a guest: the insert checks in
    /// the same statement that the token still identifies this guest (a guest who signed in since
    /// is no longer one). `None` for a member.
    pub guest_token_hash: Option<&'a [u8]>,
    /// The node it answers; none for a new root.
    pub parent_id: Option<i64>,
    /// Where it goes relative to its parent, or (a root) relative to the origin. The stored
    /// position is rounded to two decimals.
    pub offset: Vec3,
}

/// A created node and what the analysis hand-off needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The new id.
    pub id: i64,
    /// The root of its tree (its own id for a root).
    pub root_id: i64,
    /// Its stored (rounded) position.
    pub position: Vec3,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The parent's topic and status at creation; none for a root.
    pub parent: Option<(Option<String>, AnalysisStatus)>,
    /// The lineage window, when the node can be analysed at once: a root, or a child whose parent
    /// was `COMPLETED` with a topic (so every ancestor had ended and the window's baseline topic
    /// is final). None otherwise: such a node waits for its parent, and the worker that claims it
    /// reads the window then (`claims::lineage`), so a walk here would be thrown away.
    pub context: Option<LineageContext>,
}

/// What became of one node of [`create_many`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored.
    Created(Created),
    /// Its parent does not exist; nothing was stored for it.
    ParentMissing,
    /// Its author no longer exists, or the guest token no longer identifies them (the guest signed
    /// in meanwhile); nothing was stored for it.
    AuthorGone,
}

/// Creates one node as `PENDING` in one statement: [`create_many`] with one row.
pub async fn create(db: impl PgExecutor<'_>, node: &NewNode<'_>) -> Result<Outcome, sqlx::Error> {
    let mut outcomes = create_many(db, std::slice::from_ref(node)).await?;
    outcomes.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Creates nodes as `PENDING` in one statement (so in one transaction, with one commit): per
/// node, reads its parent, checks its author and draws its id (one pass over the input, so no id
/// is drawn for a node that will not be stored), walks the lineage window with one recursive CTE
/// over the nodes whose parent is `COMPLETED` (see [`Created::context`]), and inserts the nodes
/// whose parent and author exist (root id, rounded position; a root is `ORIGIN` with score 0.0).
/// The statement has as few CTEs as it can: PostgreSQL sets each one up again for every batch,
/// and folding the parent, author and id steps into one gave PostgreSQL alone about a tenth
/// more batches per second (api/BENCHMARKS.md, eighteenth round). Answers one [`Outcome`] per
/// node, in the order given. A node whose parent or author is missing is skipped without failing
/// the others; any error of the statement (a constraint, an invalid text) stores none of them.
/// Every read of `nodes` and `users` is a `LATERAL` primary-key look-up with `LIMIT 1`, which no
/// plan can turn into a hash join over the whole table; run it on [`super::writer_pool`], where
/// no plan can turn it into a sequential scan either, whatever size the table had when the plan
/// was cached. Ids come from `nextval('nodes_id_seq'::regclass)`: `pg_get_serial_sequence` looked
/// the sequence up in the catalogue for every row (3 us a row against 0.3 us on the bench
/// machine). Positions are rounded in `float8` (`round(v * 100) / 100`, as
/// [`Vec3::rounded`] does): through `numeric` each coordinate cost about 0.75 us more, as
/// `float8` to `numeric` prints the number and `numeric` to `float8` parses it back. The two
/// differ on an exact tie (a third decimal of 5 and nothing after it), which `float8` breaks
/// to even where `Vec3::rounded` breaks it away from zero, and beyond about 10^11, where the
/// print kept only 15 digits and so rounded twice; a child's random offset does not land on a
/// tie, and a root's position arrives rounded already.
pub async fn create_many(
    db: impl PgExecutor<'_>,
    nodes: &[NewNode<'_>],
) -> Result<Vec<Outcome>, sqlx::Error> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let content: Vec<&str> = nodes.iter().map(|n| n.content).collect();
    let author: Vec<i64> = nodes.iter().map(|n| n.author_id).collect();
    // Arrays without NULLs: a flag says whether the parent id (else 0) and the token hash (else
    // empty) are meant.
    let has_parent: Vec<bool> = nodes.iter().map(|n| n.parent_id.is_some()).collect();
    let parent: Vec<i64> = nodes.iter().map(|n| n.parent_id.unwrap_or(0)).collect();
    let dx: Vec<f64> = nodes.iter().map(|n| n.offset.x).collect();
    let dy: Vec<f64> = nodes.iter().map(|n| n.offset.y).collect();
    let dz: Vec<f64> = nodes.iter().map(|n| n.offset.z).collect();
    let own_len: Vec<i64> = nodes.iter().map(|n| lineage::char_len(n.content)).collect();
    let is_guest: Vec<bool> = nodes.iter().map(|n| n.guest_token_hash.is_some()).collect();
    let token: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| n.guest_token_hash.unwrap_or_default().to_vec())
        .collect();
    let rows = sqlx::query!(
        r#"WITH RECURSIVE
        looked AS MATERIALIZED (
            SELECT t.idx, t.content, t.author_id, t.own_len, t.dx, t.dy, t.dz,
                   p.id AS parent_id, p.parent_id AS grandparent_id, p.content AS parent_content,
                   p.root_id, p.x, p.y, p.z, p.topic, p.analysis_status,
                   u.ok IS NOT NULL AS author_found,
                   CASE WHEN u.ok IS NOT NULL AND (NOT t.has_parent OR p.id IS NOT NULL)
                        THEN nextval('nodes_id_seq'::regclass) END AS id
            FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::bigint[],
                         $5::float8[], $6::float8[], $7::float8[], $8::bigint[],
                         $9::bool[], $10::bytea[])
                WITH ORDINALITY AS t(content, author_id, has_parent, parent_id, dx, dy, dz,
                                     own_len, is_guest, token_hash, idx)
            LEFT JOIN LATERAL (
                SELECT p.id, p.parent_id, p.content, p.root_id, p.x, p.y, p.z, p.topic,
                       p.analysis_status
                FROM nodes p WHERE t.has_parent AND p.id = t.parent_id LIMIT 1
            ) p ON true
            LEFT JOIN LATERAL (
                SELECT true AS ok FROM users u
                WHERE u.id = t.author_id
                  AND (NOT t.is_guest
                       OR (u.role = 'ROLE_GUEST' AND u.guest_token_hash = t.token_hash))
                LIMIT 1
            ) u ON true
        ),
        walk AS (
            SELECT l.idx, l.parent_id AS id, l.grandparent_id AS parent_id,
                   l.parent_content AS content, l.topic, 1 AS depth, l.own_len AS acc_before
            FROM looked l
            WHERE l.id IS NOT NULL AND l.analysis_status = 'COMPLETED' AND l.topic IS NOT NULL
          UNION ALL
            SELECT w.idx, n.id, n.parent_id, n.content, n.topic, w.depth + 1,
                   w.acc_before + char_length(w.content)
            FROM walk w CROSS JOIN LATERAL (
                SELECT n.id, n.parent_id, n.content, n.topic FROM nodes n
                WHERE n.id = w.parent_id LIMIT 1
            ) n
            WHERE w.acc_before < $11
        ),
        win AS (
            SELECT idx,
                   array_agg(content ORDER BY depth DESC) FILTER (WHERE acc_before < $11) AS win,
                   max(topic) FILTER (WHERE acc_before >= $11) AS baseline_topic
            FROM walk GROUP BY idx
        ),
        ins AS (
            INSERT INTO nodes (id, content, author_id, parent_id, root_id, x, y, z,
                               mutation_filter, mutation_score)
            SELECT l.id, l.content, l.author_id, l.parent_id, COALESCE(l.root_id, l.id),
                   round((COALESCE(l.x, 0) + l.dx) * 100) / 100,
                   round((COALESCE(l.y, 0) + l.dy) * 100) / 100,
                   round((COALESCE(l.z, 0) + l.dz) * 100) / 100,
                   CASE WHEN l.parent_id IS NULL THEN 'ORIGIN' END,
                   CASE WHEN l.parent_id IS NULL THEN 0.0::float8 END
            FROM looked l
            WHERE l.id IS NOT NULL
            ORDER BY l.id
            RETURNING id, root_id, x, y, z, created_at
        )
        SELECT ins.id AS "id?", ins.root_id AS "root_id?", ins.x AS "x?",
               ins.y AS "y?", ins.z AS "z?", ins.created_at AS "created_at?",
               l.author_found AS "author_found!", (l.parent_id IS NOT NULL) AS "parent_found!",
               l.topic AS "parent_topic?", l.analysis_status AS "parent_status?",
               COALESCE(win.win, '{}') AS "window!", win.baseline_topic AS "baseline_topic?"
        FROM looked l
        LEFT JOIN ins ON ins.id = l.id
        LEFT JOIN win ON win.idx = l.idx
        ORDER BY l.idx"#,
        &content as &[&str],
        &author,
        &has_parent,
        &parent,
        &dx,
        &dy,
        &dz,
        &own_len,
        &is_guest,
        &token,
        lineage::WINDOW_CHARS,
    )
    .fetch_all(db)
    .await?;
    if rows.len() != nodes.len() {
        return Err(sqlx::Error::Protocol(format!(
            "{} outcomes for {} nodes",
            rows.len(),
            nodes.len()
        )));
    }
    Ok(rows
        .into_iter()
        .zip(nodes)
        .map(
            |(r, node)| match (r.id, r.root_id, r.x, r.y, r.z, r.created_at) {
                (Some(id), Some(root_id), Some(x), Some(y), Some(z), Some(created_at)) => {
                    let parent = r.parent_status.map(|s| (r.parent_topic, status(&s)));
                    let ready = match &parent {
                        None => true,
                        Some((topic, s)) => *s == AnalysisStatus::Completed && topic.is_some(),
                    };
                    Outcome::Created(Created {
                        id,
                        root_id,
                        position: Vec3::new(x, y, z),
                        created_at,
                        parent,
                        context: ready
                            .then(|| lineage::assemble(node.content, &r.window, r.baseline_topic)),
                    })
                }
                _ if !r.author_found => Outcome::AuthorGone,
                _ => Outcome::ParentMissing,
            },
        )
        .collect())
}

/// The lineage window of a stored node whose text is `own` and whose parent is `parent_id` (none
/// for a root), for recovery (creation computes it in [`create`]): one recursive CTE walks from the parent towards the root while fewer than 500
/// characters were walked, and also returns the topic just before the window. Each step is a
/// `LATERAL` primary-key look-up, so a plan cached while `nodes` was small cannot turn the walk
/// into a hash join over the whole table (see [`super::writer_pool`]).
pub async fn lineage(
    db: impl PgExecutor<'_>,
    own: &str,
    parent_id: Option<i64>,
) -> Result<LineageContext, sqlx::Error> {
    let Some(parent_id) = parent_id else {
        return Ok(lineage::assemble(own, &[], None));
    };
    let row = sqlx::query!(
        r#"WITH RECURSIVE walk AS (
            SELECT n.id, n.parent_id, n.content, n.topic, 1 AS depth, $2::bigint AS acc_before
            FROM nodes n WHERE n.id = $1
          UNION ALL
            SELECT p.id, p.parent_id, p.content, p.topic, w.depth + 1,
                   w.acc_before + char_length(w.content)
            FROM walk w CROSS JOIN LATERAL (
                SELECT p.id, p.parent_id, p.content, p.topic FROM nodes p
                WHERE p.id = w.parent_id LIMIT 1
            ) p
            WHERE w.acc_before < $3
        )
        SELECT
            COALESCE((SELECT array_agg(content ORDER BY depth DESC) FROM walk WHERE acc_before < $3),
                     '{}') AS "window!",
            (SELECT topic FROM walk WHERE acc_before >= $3) AS baseline_topic"#,
        parent_id,
        lineage::char_len(own),
        lineage::WINDOW_CHARS,
    )
    .fetch_one(db)
    .await?;
    Ok(lineage::assemble(own, &row.window, row.baseline_topic))
}

/// A node row as the queries that return whole nodes select it.
pub(crate) struct NodeRow {
    pub(crate) id: i64,
    pub(crate) content: String,
    pub(crate) author_nickname: String,
    pub(crate) topic: Option<String>,
    pub(crate) emotion: String,
    pub(crate) mutation_filter: Option<String>,
    pub(crate) mutation_score: Option<f64>,
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) z: f64,
    pub(crate) parent_id: Option<i64>,
    pub(crate) root_id: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) analysis_status: String,
}

impl From<NodeRow> for Node {
    fn from(r: NodeRow) -> Self {
        Self {
            id: r.id,
            content: r.content,
            author_nickname: r.author_nickname,
            topic: r.topic,
            emotion: r.emotion,
            mutation_filter: r.mutation_filter.as_deref().and_then(filter),
            mutation_score: r.mutation_score,
            x: r.x,
            y: r.y,
            z: r.z,
            parent_id: r.parent_id,
            root_id: r.root_id,
            crated_at: r.created_at,
            created_at: r.created_at,
            analysis_status: status(&r.analysis_status),
        }
    }
}

/// The node with this id, as clients see it.
pub async fn find(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Node>, sqlx::Error> {
    let row = sqlx::query_as!(
        NodeRow,
        "SELECT n.id, n.content, u.nickname AS author_nickname, n.topic, n.emotion, n.mutation_filter,
                n.mutation_score, n.x, n.y, n.z, n.parent_id, n.root_id, n.created_at, n.analysis_status
         FROM nodes n JOIN users u ON u.id = n.author_id
         WHERE n.id = $1",
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// A cube of the galaxy: its centre and half its edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cube {
    /// Centre.
    pub x: f64,
    /// Centre.
    pub y: f64,
    /// Centre.
    pub z: f64,
    /// Half the edge: a node is inside when each coordinate is within `range` of the centre's.
    pub range: f64,
}

/// How many key ranges a cube is split into (see [`viz_key::ranges`]): each is one descent of
/// `nodes_viz`. On the bench's galaxy of 1,000,000 nodes, 8 to 32 ranges answered at the same
/// speed; fewer read more index entries outside the cube, more descend more often.
pub const VIZ_KEY_RANGES: usize = 16;

/// The nodes inside `cube`, newest first, at most `limit`.
///
/// The cube becomes a few ranges of the Morton key (`domain::viz_key`), and each range is one
/// scan of the B-tree `nodes_viz` over `(mutr_viz_key(x, y, z), x, y, z)`: the exact bounds on x,
/// y and z are index conditions too, so a row is read only when it is inside the cube. The
/// `OFFSET 0` keeps that scan a nested loop over the ranges, in every plan, generic ones included.
/// The scan runs in a materialized CTE: otherwise a cached generic plan may walk the primary key
/// backwards and filter, which reads most of a large galaxy when the cube is sparse. The columns
/// come from that same scan (which reads the rows anyway) rather than from a second look-up of
/// the newest by primary key: with `perf` over the `/viz` bench at 1,000,000 nodes, those B-tree
/// descents were 14% of the machine's CPU. Each author's nickname is a `LATERAL` primary-key
/// look-up: the plain join was planned as a hash join that read the whole `users` table for
/// every answer (7% of the machine in the same bench with 1,000 users, and growing with every
/// guest).
///
/// `benches/load.rs` runs a copy of this statement through pgbench as the `/viz` figure's ceiling
/// (`VIZ_PGBENCH`): keep the two in step.
pub async fn in_cube(
    db: impl PgExecutor<'_>,
    cube: Cube,
    limit: i64,
) -> Result<Vec<Node>, sqlx::Error> {
    let lo = [
        cube.x - cube.range,
        cube.y - cube.range,
        cube.z - cube.range,
    ];
    let hi = [
        cube.x + cube.range,
        cube.y + cube.range,
        cube.z + cube.range,
    ];
    let (first, last): (Vec<i64>, Vec<i64>) =
        viz_key::ranges(lo, hi, VIZ_KEY_RANGES).into_iter().unzip();
    let rows = sqlx::query_as!(
        NodeRow,
        r#"WITH inside AS MATERIALIZED (
            SELECT n.* FROM unnest($7::int8[], $8::int8[]) AS k(first, last)
            CROSS JOIN LATERAL (
                SELECT id, content, author_id, topic, emotion, mutation_filter, mutation_score,
                       x, y, z, parent_id, root_id, created_at, analysis_status
                FROM nodes
                WHERE mutr_viz_key(x, y, z) BETWEEN k.first AND k.last
                  AND x BETWEEN $1 AND $2 AND y BETWEEN $3 AND $4 AND z BETWEEN $5 AND $6
                OFFSET 0
            ) n
        ),
        newest AS (SELECT * FROM inside ORDER BY id DESC LIMIT $9)
        SELECT n.id AS "id!", n.content AS "content!", u.nickname AS "author_nickname!", n.topic,
               n.emotion AS "emotion!", n.mutation_filter, n.mutation_score, n.x AS "x!",
               n.y AS "y!", n.z AS "z!", n.parent_id, n.root_id AS "root_id!",
               n.created_at AS "created_at!", n.analysis_status AS "analysis_status!"
        FROM newest n CROSS JOIN LATERAL (
            SELECT nickname FROM users WHERE users.id = n.author_id LIMIT 1
        ) u
        ORDER BY n.id DESC"#,
        lo[0],
        hi[0],
        lo[1],
        hi[1],
        lo[2],
        hi[2],
        &first,
        &last,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(crate) fn status(s: &str) -> AnalysisStatus {
    // The CHECK constraint admits only the four spellings.
    AnalysisStatus::parse(s).unwrap_or(AnalysisStatus::Pending)
}

fn filter(s: &str) -> Option<MutationFilter> {
    Some(match s {
        "ORIGIN" => MutationFilter::Origin,
        "CLUSTER" => MutationFilter::Cluster,
        "EVOLUTION" => MutationFilter::Evolution,
        "MUTATION" => MutationFilter::Mutation,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{db::users, domain::lineage::Ancestor};
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use sqlx::PgPool;

    async fn author(pool: &PgPool) -> i64 {
        users::create_guest(pool, "테스트_작가_0001", &rand::random::<[u8; 16]>())
            .await
            .unwrap()
            .id
    }

    async fn add(
        pool: &PgPool,
        author_id: i64,
        content: &str,
        parent: Option<i64>,
        offset: (f64, f64, f64),
    ) -> Created {
        let outcome = create(
            pool,
            &NewNode {
                content,
                author_id,
                guest_token_hash: None,
                parent_id: parent,
                offset: Vec3::new(offset.0, offset.1, offset.2),
            },
        )
        .await
        .unwrap();
        match outcome {
            Outcome::Created(c) => c,
            other => panic!("not created: {other:?}"),
        }
    }

    #[sqlx::test]
    async fn create_root_and_children(pool: PgPool) {
        let a = author(&pool).await;
        let root = add(&pool, a, "root", None, (1.004, 2.0, -3.006)).await;
        assert_eq!(root.root_id, root.id);
        assert_eq!(
            root.position,
            Vec3::new(1.0, 2.0, -3.01),
            "absolute and rounded"
        );
        assert_eq!(root.parent, None);
        assert_eq!(root.context, Some(lineage::window("root", &[])));

        let child = add(&pool, a, "child", Some(root.id), (10.0, -0.123, 0.0)).await;
        assert_eq!(child.root_id, root.id);
        assert_eq!(
            child.position,
            Vec3::new(11.0, 1.88, -3.01),
            "relative to the parent"
        );
        assert_eq!(child.parent, Some((None, AnalysisStatus::Pending)));
        assert_eq!(
            child.context, None,
            "waits for its parent: no window walked"
        );

        complete(&pool, child.id).await;
        let grandchild = add(&pool, a, "grandchild", Some(child.id), (0.0, 0.0, 0.0)).await;
        assert_eq!(grandchild.root_id, root.id);
        assert_eq!(
            grandchild.parent,
            Some((Some("done".to_owned()), AnalysisStatus::Completed))
        );
        assert_eq!(
            grandchild.context.map(|c| c.full_context).as_deref(),
            Some("root\nchild\ngrandchild")
        );

        let found = find(&pool, root.id).await.unwrap().unwrap();
        assert_eq!(found.analysis_status, AnalysisStatus::Pending);
        assert_eq!(found.mutation_filter, Some(MutationFilter::Origin));
        assert_eq!(found.mutation_score, Some(0.0));
        assert_eq!(found.author_nickname, "테스트_작가_0001");
        assert_eq!(found.created_at, root.created_at);
        let found = find(&pool, child.id).await.unwrap().unwrap();
        assert_eq!(
            (found.parent_id, found.mutation_filter, found.mutation_score),
            (Some(root.id), None, None)
        );
        assert_eq!((found.x, found.y, found.z), (11.0, 1.88, -3.01));
        assert_eq!(find(&pool, 999_999).await.unwrap(), None);
    }

    #[sqlx::test]
    async fn create_under_a_missing_parent_stores_nothing(pool: PgPool) {
        let a = author(&pool).await;
        let created = create(
            &pool,
            &NewNode {
                content: "x",
                author_id: a,
                guest_token_hash: None,
                parent_id: Some(424_242),
                offset: Vec3::ORIGIN,
            },
        )
        .await
        .unwrap();
        assert_eq!(created, Outcome::ParentMissing);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 0);
    }

    fn new_node<'a>(
        content: &'a str,
        author_id: i64,
        guest_token_hash: Option<&'a [u8]>,
        parent_id: Option<i64>,
    ) -> NewNode<'a> {
        NewNode {
            content,
            author_id,
            guest_token_hash,
            parent_id,
            offset: Vec3::new(1.0, 2.0, 3.0),
        }
    }

    /// Marks node `id` analysed, with the topic `done`.
    async fn complete(pool: &PgPool, id: i64) {
        sqlx::query!(
            "UPDATE nodes SET topic = 'done', analysis_status = 'COMPLETED' WHERE id = $1",
            id
        )
        .execute(pool)
        .await
        .unwrap();
    }

    async fn count(pool: &PgPool) -> i64 {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM nodes"#)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// One statement for good rows, missing parents and stale authors: each gets its own answer,
    /// and only the good rows are stored, each with its own id, root and lineage.
    #[sqlx::test]
    async fn create_many_answers_each_node_on_its_own(pool: PgPool) {
        let token = [7u8; 32];
        let guest = users::create_guest(&pool, "테스트_손님_0002", &token)
            .await
            .unwrap()
            .id;
        let a = author(&pool).await;
        let root = add(&pool, a, "root", None, (0.0, 0.0, 0.0)).await;
        let child = add(&pool, a, "child", Some(root.id), (0.0, 0.0, 0.0)).await;
        complete(&pool, child.id).await;
        let long = "가".repeat(498);
        let batch = [
            new_node("new root", a, None, None),
            new_node("under child", guest, Some(&token), Some(child.id)),
            new_node("orphan", a, None, Some(424_242)),
            new_node("stale token", guest, Some(&[8u8; 32]), Some(root.id)),
            new_node("nobody", 999_999, None, None),
            new_node(&long, a, None, Some(child.id)),
            new_node("under root", a, None, Some(root.id)),
        ];
        let before = count(&pool).await;
        let out = create_many(&pool, &batch).await.unwrap();
        assert_eq!(out.len(), batch.len());
        let created: Vec<&Created> = out
            .iter()
            .filter_map(|o| match o {
                Outcome::Created(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 4);
        assert_eq!(count(&pool).await, before + 4);
        assert_eq!(out[2], Outcome::ParentMissing);
        assert_eq!(out[3], Outcome::AuthorGone);
        assert_eq!(out[4], Outcome::AuthorGone);
        let Outcome::Created(new_root) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(new_root.root_id, new_root.id);
        assert_eq!(new_root.parent, None);
        assert_eq!(new_root.position, Vec3::new(1.0, 2.0, 3.0));
        let Outcome::Created(under_child) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!(under_child.root_id, root.id);
        assert_eq!(
            under_child.parent,
            Some((Some("done".to_owned()), AnalysisStatus::Completed))
        );
        assert_eq!(
            under_child
                .context
                .as_ref()
                .map(|c| c.full_context.as_str()),
            Some("root\nchild\nunder child")
        );
        let Outcome::Created(long_one) = &out[5] else {
            panic!("{:?}", out[5])
        };
        // 498 + "child": the window stops at the child, whose parent's topic is the baseline.
        assert_eq!(
            long_one.context,
            Some(lineage(&pool, &long, Some(child.id)).await.unwrap())
        );
        let Outcome::Created(under_root) = &out[6] else {
            panic!("{:?}", out[6])
        };
        assert_eq!(under_root.root_id, root.id);
        assert_eq!(under_root.context, None, "the root is not analysed yet");
        let mut ids: Vec<i64> = created.iter().map(|c| c.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4, "distinct ids in input order: {ids:?}");
        let stored = find(&pool, under_child.id).await.unwrap().unwrap();
        assert_eq!(stored.author_nickname, "테스트_손님_0002");
        assert_eq!(stored.parent_id, Some(child.id));
    }

    /// A guest who signed in (token hash gone) can no longer write with the old token.
    #[sqlx::test]
    async fn create_refuses_a_guest_token_that_was_retired(pool: PgPool) {
        let token = [9u8; 32];
        let guest = users::create_guest(&pool, "테스트_손님_0003", &token)
            .await
            .unwrap()
            .id;
        let node = new_node("hello", guest, Some(&token), None);
        assert!(matches!(
            create(&pool, &node).await.unwrap(),
            Outcome::Created(_)
        ));
        sqlx::query!(
            "UPDATE users SET role = 'ROLE_USER', provider = 'google', provider_user_id = 's',
                    guest_token_hash = NULL WHERE id = $1",
            guest
        )
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(create(&pool, &node).await.unwrap(), Outcome::AuthorGone);
        let as_member = new_node("hello", guest, None, None);
        assert!(matches!(
            create(&pool, &as_member).await.unwrap(),
            Outcome::Created(_)
        ));
    }

    /// A statement error (PostgreSQL refuses a NUL in text) stores none of the batch.
    #[sqlx::test]
    async fn create_many_is_all_or_nothing_on_an_error(pool: PgPool) {
        let a = author(&pool).await;
        let batch = [
            new_node("fine", a, None, None),
            new_node("bad\0text", a, None, None),
        ];
        let err = create_many(&pool, &batch).await.unwrap_err();
        assert!(err.as_database_error().is_some(), "{err:?}");
        assert_eq!(count(&pool).await, 0);
        assert!(create_many(&pool, &[]).await.unwrap().is_empty());
    }

    /// The schema's tree rules, whatever writes the row: a root is its own root (CHECK), a child's
    /// parent exists and the child is in its parent's tree (the composite key
    /// `nodes_parent_root_fkey`), so every `root_id` names the root of its tree.
    #[sqlx::test]
    async fn the_schema_keeps_every_node_in_its_parents_tree(pool: PgPool) {
        let a = author(&pool).await;
        let root = add(&pool, a, "root", None, (0.0, 0.0, 0.0)).await;
        let other = add(&pool, a, "other root", None, (0.0, 0.0, 0.0)).await;
        let child = add(&pool, a, "child", Some(root.id), (0.0, 0.0, 0.0)).await;
        let insert = |parent: Option<i64>, root_id: i64| {
            sqlx::query(
                "INSERT INTO nodes (content, author_id, parent_id, root_id, x, y, z)
                 VALUES ('x', $1, $2, $3, 0, 0, 0)",
            )
            .bind(a)
            .bind(parent)
            .bind(root_id)
            .execute(&pool)
        };
        let constraint = |e: sqlx::Error| {
            e.as_database_error()
                .and_then(|d| d.constraint().map(str::to_owned))
                .unwrap_or_else(|| panic!("not a constraint violation: {e:?}"))
        };
        // A grandchild that names another tree's root, its parent as root, or a missing parent.
        for (parent, root_id) in [
            (child.id, other.id),
            (child.id, child.id),
            (999_999, root.id),
        ] {
            let err = insert(Some(parent), root_id).await.unwrap_err();
            assert_eq!(constraint(err), "nodes_parent_root_fkey");
        }
        // A root that names another node as its root.
        let err = insert(None, root.id).await.unwrap_err();
        assert_eq!(constraint(err), "nodes_check");
        // The right root is accepted.
        insert(Some(child.id), root.id).await.unwrap();
        assert_eq!(count(&pool).await, 4);
    }

    /// The CTE against the plain rule, on random chains with random lengths and topics.
    #[sqlx::test]
    async fn lineage_cte_matches_the_rule(pool: PgPool) {
        let a = author(&pool).await;
        let mut rng = StdRng::seed_from_u64(5);
        let mut walked_at_creation = 0;
        for _ in 0..12 {
            let depth = rng.random_range(1..12);
            let mut chain: Vec<(i64, Ancestor)> = Vec::new(); // root first
            for _ in 0..depth {
                let len = rng.random_range(1..260);
                let content: String = (0..len)
                    .map(|_| if rng.random_bool(0.5) { '가' } else { 'a' })
                    .collect();
                let parent = chain.last().map(|(id, _)| *id);
                let id = add(&pool, a, &content, parent, (0.0, 0.0, 0.0)).await.id;
                let topic = rng.random_bool(0.6).then(|| format!("topic-{id}"));
                if let Some(t) = &topic {
                    sqlx::query!(
                        "UPDATE nodes SET topic = $1, analysis_status = 'COMPLETED' WHERE id = $2",
                        t,
                        id
                    )
                    .execute(&pool)
                    .await
                    .unwrap();
                }
                chain.push((id, Ancestor { content, topic }));
            }
            let own: String = "n".repeat(rng.random_range(1..600));
            let ancestors: Vec<Ancestor> = chain.iter().rev().map(|(_, a)| a.clone()).collect();
            let expected = lineage::window(&own, &ancestors);
            let parent_id = chain.last().map(|(id, _)| *id);
            let got = lineage(&pool, &own, parent_id).await.unwrap();
            assert_eq!(got, expected, "depth {depth}, own {} chars", own.len());
            let created = add(&pool, a, &own, parent_id, (0.0, 0.0, 0.0)).await;
            // Creation walks only when the parent is analysed (the window is final then).
            if chain.last().is_some_and(|(_, a)| a.topic.is_some()) {
                assert_eq!(
                    created.context,
                    Some(expected),
                    "create's CTE, depth {depth}"
                );
                walked_at_creation += 1;
            } else {
                assert_eq!(created.context, None, "depth {depth}");
            }
        }
        assert!(
            walked_at_creation >= 4,
            "{walked_at_creation} chains walked at creation"
        );
        // A root has only itself.
        let got = lineage(&pool, "alone", None).await.unwrap();
        assert_eq!(got, lineage::window("alone", &[]));
    }

    async fn ids_in_cube(pool: &PgPool, cube: Cube, limit: i64) -> Vec<i64> {
        in_cube(pool, cube, limit)
            .await
            .unwrap()
            .iter()
            .map(|n| n.id)
            .collect()
    }

    #[sqlx::test]
    async fn in_cube_filters_each_axis_and_caps_newest_first(pool: PgPool) {
        let a = author(&pool).await;
        let mut ids = Vec::new();
        for at in [
            (0.0, 0.0, 0.0),
            (10.0, 10.0, 10.0),
            (-10.0, 10.0, -10.0),
            (11.0, 0.0, 0.0),
            (0.0, -11.0, 0.0),
            (0.0, 0.0, 10.01),
        ] {
            ids.push(add(&pool, a, "p", None, at).await.id);
        }
        let cube = Cube {
            x: 0.0,
            y: 0.0,
            z: 0.0,
            range: 10.0,
        };
        let got: Vec<i64> = ids_in_cube(&pool, cube, 100).await;
        assert_eq!(got, vec![ids[2], ids[1], ids[0]]);
        let capped: Vec<i64> = ids_in_cube(&pool, cube, 2).await;
        assert_eq!(capped, vec![ids[2], ids[1]]);
        let off = Cube { x: 100.0, ..cube };
        assert!(in_cube(&pool, off, 100).await.unwrap().is_empty());
    }

    /// The Morton key PostgreSQL stores in `nodes_viz` is the one the API computes its ranges
    /// with, at the origin, across cell borders, at and past the edges of the keyed space, and
    /// for random positions.
    #[sqlx::test]
    async fn the_database_computes_the_same_viz_key(pool: PgPool) {
        let mut at: Vec<[f64; 3]> = vec![
            [0.0, 0.0, 0.0],
            [-0.0, 0.5, -0.5],
            [0.999, -0.001, 1.0],
            [1_048_575.0, 1_048_575.99, 1_048_576.0],
            [-1_048_576.0, -1_048_576.5, -1_048_577.0],
            [1e12, -1e12, 123.45],
            [f64::MAX, f64::MIN, f64::MIN_POSITIVE],
        ];
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..500 {
            let scale = [10.0, 5_000.0, 2_000_000.0][rng.random_range(0..3)];
            at.push(std::array::from_fn(|_| rng.random_range(-scale..scale)));
        }
        let xs: Vec<f64> = at.iter().map(|p| p[0]).collect();
        let ys: Vec<f64> = at.iter().map(|p| p[1]).collect();
        let zs: Vec<f64> = at.iter().map(|p| p[2]).collect();
        let got: Vec<i64> = sqlx::query_scalar(
            "SELECT mutr_viz_key(x, y, z) FROM unnest($1::float8[], $2::float8[], $3::float8[])
             WITH ORDINALITY AS p(x, y, z, i) ORDER BY i",
        )
        .bind(&xs)
        .bind(&ys)
        .bind(&zs)
        .fetch_all(&pool)
        .await
        .unwrap();
        for (p, key) in at.iter().zip(got) {
            assert_eq!(key, viz_key::key(p[0], p[1], p[2]), "{p:?}");
        }
    }

    /// `in_cube` answers what a plain filter on x, y and z answers, for random cubes over
    /// clustered nodes, small cubes, cubes across the origin and cubes larger than the galaxy.
    #[sqlx::test]
    async fn in_cube_finds_what_a_plain_filter_finds(pool: PgPool) {
        let a = author(&pool).await;
        sqlx::query(
            "INSERT INTO nodes (id, content, author_id, root_id, x, y, z)
             SELECT g, 'n', $1, g,
                    round(((g % 7) * 300 - 900 + (random() - 0.5) * 200)::numeric, 2)::float8,
                    round(((g % 5) * 300 - 600 + (random() - 0.5) * 200)::numeric, 2)::float8,
                    round(((random() - 0.5) * 1000)::numeric, 2)::float8
             FROM generate_series(1, 3000) g",
        )
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let mut found = 0;
        for round in 0..60 {
            let range = match round % 4 {
                0 => rng.random_range(0.0..5.0),
                1 => rng.random_range(5.0..300.0),
                2 => rng.random_range(300.0..3000.0),
                _ => 200.0,
            };
            let cube = Cube {
                x: rng.random_range(-1200.0..1200.0),
                y: rng.random_range(-900.0..900.0),
                z: rng.random_range(-600.0..600.0),
                range,
            };
            let got: Vec<i64> = ids_in_cube(&pool, cube, 100_000).await;
            let want: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM nodes
                 WHERE x BETWEEN $1 - $4 AND $1 + $4 AND y BETWEEN $2 - $4 AND $2 + $4
                   AND z BETWEEN $3 - $4 AND $3 + $4
                 ORDER BY id DESC",
            )
            .bind(cube.x)
            .bind(cube.y)
            .bind(cube.z)
            .bind(cube.range)
            .fetch_all(&pool)
            .await
            .unwrap();
            assert_eq!(got, want, "{cube:?}");
            found += got.len();
        }
        assert!(found > 3000, "the cubes held only {found} nodes");
    }

    /// A plan check rather than a timing: with enough rows, every range is one scan of the
    /// B-tree `nodes_viz` with the exact bounds as index conditions, in a custom plan and in the
    /// generic plan a prepared statement falls back to.
    #[sqlx::test]
    async fn in_cube_uses_the_spatial_index(pool: PgPool) {
        let a = author(&pool).await;
        sqlx::query(
            "INSERT INTO nodes (id, content, author_id, root_id, x, y, z)
             SELECT g, 'n', $1, g, (g % 1000) * 3.0, (g / 1000) * 3.0, 0
             FROM generate_series(1, 20000) g",
        )
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE nodes").execute(&pool).await.unwrap();
        let (first, last): (Vec<i64>, Vec<i64>) =
            viz_key::ranges([-10.0; 3], [10.0; 3], VIZ_KEY_RANGES)
                .into_iter()
                .unzip();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query(
            "PREPARE viz(float8, float8, int8[], int8[]) AS
             WITH inside AS MATERIALIZED (
                SELECT n.id FROM unnest($3, $4) AS k(first, last)
                CROSS JOIN LATERAL (
                    SELECT id FROM nodes
                    WHERE mutr_viz_key(x, y, z) BETWEEN k.first AND k.last
                      AND x BETWEEN $1 AND $2 AND y BETWEEN $1 AND $2 AND z BETWEEN $1 AND $2
                    OFFSET 0
                ) n
             )
             SELECT id FROM inside ORDER BY id DESC LIMIT 5000",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        for (mode, set) in [
            ("custom", "SET plan_cache_mode = force_custom_plan"),
            ("generic", "SET plan_cache_mode = force_generic_plan"),
        ] {
            sqlx::query(set).execute(&mut *conn).await.unwrap();
            // EXPLAIN takes no bind parameters: the ranges are written in (numbers only).
            let list = |keys: &[i64]| {
                let keys: Vec<String> = keys.iter().map(i64::to_string).collect();
                format!("'{{{}}}'", keys.join(","))
            };
            let explain = format!(
                "EXPLAIN EXECUTE viz(-10, 10, {}, {})",
                list(&first),
                list(&last)
            );
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains("Index Scan using nodes_viz"),
                "{mode}: {plan}"
            );
            assert!(plan.contains("Nested Loop"), "{mode}: {plan}");
            assert!(!plan.contains("Filter"), "{mode}: {plan}");
        }
    }

    /// The node writer's statement, on the writer's own connections, runs one cached plan from
    /// the first execution (never planned again per batch) and that plan reads `nodes` and
    /// `users` by index only, although it was made on an empty table, where sequential scans and
    /// hash joins would be cheapest.
    #[sqlx::test]
    async fn the_writer_runs_one_cached_plan_that_reads_by_index(pool: PgPool) {
        let a = author(&pool).await;
        let writer = crate::db::writer_pool(&pool, 1, std::time::Duration::from_secs(1));
        let mut conn = writer.acquire().await.unwrap();
        for i in 0..3 {
            let text = format!("node {i}");
            let outcomes = create_many(&mut *conn, &[new_node(&text, a, None, None)])
                .await
                .unwrap();
            assert!(matches!(outcomes[0], Outcome::Created(_)), "{outcomes:?}");
        }
        let (statement, params, generic, custom): (String, i64, i64, i64) = sqlx::query_as(
            "SELECT statement, cardinality(parameter_types)::bigint, generic_plans, custom_plans
             FROM pg_prepared_statements WHERE statement LIKE '%INSERT INTO nodes%'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((generic, custom), (3, 0), "plans of the writer's statement");

        // The same text, prepared again on this connection: EXPLAIN shows the plan the writer runs.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE writer_plan AS {statement}"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
        let nulls = vec!["NULL"; usize::try_from(params).unwrap()].join(", ");
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE writer_plan({nulls})"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        // Hash joins between the statement's own CTEs are fine; every read of a table is a
        // primary-key look-up.
        let reads: Vec<&str> = plan
            .lines()
            .map(str::trim_start)
            .map(|l| l.trim_start_matches("->  "))
            .filter(|l| l.contains(" on nodes ") || l.contains(" on users "))
            .filter(|l| !l.starts_with("Insert on "))
            .collect();
        assert!(!reads.is_empty(), "{plan}");
        for read in reads {
            assert!(
                read.starts_with("Index Scan using nodes_pkey")
                    || read.starts_with("Index Scan using users_pkey"),
                "not a primary-key look-up: {read}\n{plan}"
            );
        }
    }
}
