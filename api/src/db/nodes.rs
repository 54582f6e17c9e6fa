//! Nodes: insert, the lineage walk (one recursive CTE), the galaxy view and lookups.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{
    lineage::{self, LineageContext},
    mutation::MutationFilter,
    node::{AnalysisStatus, Node},
};

/// The parent of a node being created, as creation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// Its id.
    pub id: i64,
    /// The root of its tree.
    pub root_id: i64,
    /// Its position.
    pub x: f64,
    /// Its position.
    pub y: f64,
    /// Its position.
    pub z: f64,
    /// Its topic, once analysed.
    pub topic: Option<String>,
    /// Where it is in the pipeline.
    pub analysis_status: AnalysisStatus,
}

/// The parent with this id, locked against nothing: parents are never deleted or moved.
pub async fn parent(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Parent>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT id, root_id, x, y, z, topic, analysis_status FROM nodes WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Parent {
        id: r.id,
        root_id: r.root_id,
        x: r.x,
        y: r.y,
        z: r.z,
        topic: r.topic,
        analysis_status: status(&r.analysis_status),
    }))
}

/// A node to insert as `PENDING`.
#[derive(Debug, Clone)]
pub struct NewNode<'a> {
    /// Its text.
    pub content: &'a str,
    /// Its author.
    pub author_id: i64,
    /// The parent and its root, or none for a new root.
    pub parent: Option<(i64, i64)>,
    /// Its position, already rounded.
    pub x: f64,
    /// Its position, already rounded.
    pub y: f64,
    /// Its position, already rounded.
    pub z: f64,
}

/// What the insert returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The new id.
    pub id: i64,
    /// The root of its tree (its own id for a root).
    pub root_id: i64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Inserts a node as `PENDING`. A root is its own root, `ORIGIN` with score 0.0.
pub async fn insert(db: impl PgExecutor<'_>, node: &NewNode<'_>) -> Result<Inserted, sqlx::Error> {
    let (parent_id, root_id) = node.parent.unzip();
    let (filter, score) = if node.parent.is_none() {
        (
            Some(MutationFilter::Origin.as_str()),
            Some(crate::domain::mutation::ROOT_SCORE),
        )
    } else {
        (None, None)
    };
    let row = sqlx::query!(
        r#"WITH new_id AS (SELECT nextval(pg_get_serial_sequence('nodes', 'id')) AS id)
        INSERT INTO nodes (id, content, author_id, parent_id, root_id, x, y, z, mutation_filter, mutation_score)
        SELECT new_id.id, $1, $2, $3, COALESCE($4, new_id.id), $5, $6, $7, $8, $9 FROM new_id
        RETURNING id, root_id, created_at"#,
        node.content,
        node.author_id,
        parent_id,
        root_id,
        node.x,
        node.y,
        node.z,
        filter,
        score,
    )
    .fetch_one(db)
    .await?;
    Ok(Inserted {
        id: row.id,
        root_id: row.root_id,
        created_at: row.created_at,
    })
}

/// The lineage window of a node whose text is `own` and whose parent is `parent_id` (none for a
/// root): one recursive CTE walks from the parent towards the root while fewer than 500
/// characters were walked, and also returns the topic just before the window.
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
            FROM walk w JOIN nodes p ON p.id = w.parent_id
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

struct NodeRow {
    id: i64,
    content: String,
    author_nickname: String,
    topic: Option<String>,
    emotion: String,
    mutation_filter: Option<String>,
    mutation_score: Option<f64>,
    x: f64,
    y: f64,
    z: f64,
    parent_id: Option<i64>,
    root_id: i64,
    created_at: DateTime<Utc>,
    analysis_status: String,
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

/// The nodes inside `cube`, newest first, at most `limit`.
pub async fn in_cube(
    db: impl PgExecutor<'_>,
    cube: Cube,
    limit: i64,
) -> Result<Vec<Node>, sqlx::Error> {
    let rows = sqlx::query_as!(
        NodeRow,
        "SELECT n.id, n.content, u.nickname AS author_nickname, n.topic, n.emotion, n.mutation_filter,
                n.mutation_score, n.x, n.y, n.z, n.parent_id, n.root_id, n.created_at, n.analysis_status
         FROM nodes n JOIN users u ON u.id = n.author_id
         WHERE point(n.x, n.y) <@ box(point($1::float8 - $4::float8, $2::float8 - $4::float8),
                                      point($1::float8 + $4::float8, $2::float8 + $4::float8))
           AND n.z BETWEEN $3::float8 - $4::float8 AND $3::float8 + $4::float8
         ORDER BY n.id DESC
         LIMIT $5",
        cube.x,
        cube.y,
        cube.z,
        cube.range,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

fn status(s: &str) -> AnalysisStatus {
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
