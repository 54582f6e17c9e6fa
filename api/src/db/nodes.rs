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
        at: (f64, f64, f64),
    ) -> Inserted {
        let parent = match parent {
            Some(id) => {
                let p = super::parent(pool, id).await.unwrap().unwrap();
                Some((p.id, p.root_id))
            }
            None => None,
        };
        insert(
            pool,
            &NewNode {
                content,
                author_id,
                parent,
                x: at.0,
                y: at.1,
                z: at.2,
            },
        )
        .await
        .unwrap()
    }

    #[sqlx::test]
    async fn insert_root_and_child(pool: PgPool) {
        let a = author(&pool).await;
        let root = add(&pool, a, "root", None, (1.0, 2.0, 3.0)).await;
        assert_eq!(root.root_id, root.id);
        let child = add(&pool, a, "child", Some(root.id), (4.0, 5.0, 6.0)).await;
        assert_eq!(child.root_id, root.id);
        let grandchild = add(&pool, a, "grandchild", Some(child.id), (0.0, 0.0, 0.0)).await;
        assert_eq!(grandchild.root_id, root.id);

        let found = find(&pool, root.id).await.unwrap().unwrap();
        assert_eq!(found.analysis_status, AnalysisStatus::Pending);
        assert_eq!(found.mutation_filter, Some(MutationFilter::Origin));
        assert_eq!(found.mutation_score, Some(0.0));
        assert_eq!(found.author_nickname, "테스트_작가_0001");
        let found = find(&pool, child.id).await.unwrap().unwrap();
        assert_eq!(
            (found.parent_id, found.mutation_filter, found.mutation_score),
            (Some(root.id), None, None)
        );
        assert_eq!((found.x, found.y, found.z), (4.0, 5.0, 6.0));
        assert_eq!(find(&pool, 999_999).await.unwrap(), None);

        let p = parent(&pool, child.id).await.unwrap().unwrap();
        assert_eq!(
            (p.root_id, p.topic, p.analysis_status),
            (root.id, None, AnalysisStatus::Pending)
        );
        assert_eq!(parent(&pool, 999_999).await.unwrap(), None);
    }

    #[sqlx::test]
    async fn insert_with_missing_parent_violates_the_foreign_key(pool: PgPool) {
        let a = author(&pool).await;
        let err = insert(
            &pool,
            &NewNode {
                content: "x",
                author_id: a,
                parent: Some((424_242, 424_242)),
                x: 0.0,
                y: 0.0,
                z: 0.0,
            },
        )
        .await
        .unwrap_err();
        assert!(
            err.as_database_error()
                .is_some_and(|e| e.is_foreign_key_violation())
        );
    }

    /// The CTE against the plain rule, on random chains with random lengths and topics.
    #[sqlx::test]
    async fn lineage_cte_matches_the_rule(pool: PgPool) {
        let a = author(&pool).await;
        let mut rng = StdRng::seed_from_u64(5);
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
        }
        // A root has only itself.
        let got = lineage(&pool, "alone", None).await.unwrap();
        assert_eq!(got, lineage::window("alone", &[]));
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
        let got: Vec<i64> = in_cube(&pool, cube, 100)
            .await
            .unwrap()
            .iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(got, vec![ids[2], ids[1], ids[0]]);
        let capped: Vec<i64> = in_cube(&pool, cube, 2)
            .await
            .unwrap()
            .iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(capped, vec![ids[2], ids[1]]);
        let off = Cube { x: 100.0, ..cube };
        assert!(in_cube(&pool, off, 100).await.unwrap().is_empty());
    }

    #[sqlx::test]
    async fn in_cube_uses_the_spatial_index(pool: PgPool) {
        // A plan check rather than a timing: with enough rows the GiST index must be chosen.
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
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT id FROM nodes n
             WHERE point(n.x, n.y) <@ box(point(-10, -10), point(10, 10)) AND n.z BETWEEN -10 AND 10
             ORDER BY n.id DESC LIMIT 5000",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("nodes_xy"), "{plan}");
    }
}
