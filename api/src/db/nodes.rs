//! Nodes: insert, the lineage walk (one recursive CTE), the galaxy view and lookups.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{
    coordinates::Vec3,
    lineage::{self, LineageContext},
    mutation::MutationFilter,
    node::{AnalysisStatus, Node},
};

/// A node to create as `PENDING`.
#[derive(Debug, Clone)]
pub struct NewNode<'a> {
    /// Its text.
    pub content: &'a str,
    /// Its author.
    pub author_id: i64,
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
    /// The lineage window.
    pub context: LineageContext,
}

/// Creates a node as `PENDING` in one statement (so in one transaction): reads the parent, walks
/// the lineage with one recursive CTE, inserts the node (root id, rounded position; a root is
/// `ORIGIN` with score 0.0). `None` when the parent does not exist.
pub async fn create(
    db: impl PgExecutor<'_>,
    node: &NewNode<'_>,
) -> Result<Option<Created>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH RECURSIVE
        parent AS (
            SELECT id, root_id, x, y, z, topic, analysis_status FROM nodes WHERE id = $3
        ),
        walk AS (
            SELECT n.id, n.parent_id, n.content, n.topic, 1 AS depth, $7::bigint AS acc_before
            FROM nodes n WHERE n.id = $3
          UNION ALL
            SELECT p.id, p.parent_id, p.content, p.topic, w.depth + 1,
                   w.acc_before + char_length(w.content)
            FROM walk w JOIN nodes p ON p.id = w.parent_id
            WHERE w.acc_before < $8
        ),
        new_node AS (SELECT nextval(pg_get_serial_sequence('nodes', 'id')) AS id),
        ins AS (
            INSERT INTO nodes (id, content, author_id, parent_id, root_id, x, y, z,
                               mutation_filter, mutation_score)
            SELECT new_node.id, $1, $2, parent.id, COALESCE(parent.root_id, new_node.id),
                   round((COALESCE(parent.x, 0) + $4::float8)::numeric, 2)::float8,
                   round((COALESCE(parent.y, 0) + $5::float8)::numeric, 2)::float8,
                   round((COALESCE(parent.z, 0) + $6::float8)::numeric, 2)::float8,
                   CASE WHEN parent.id IS NULL THEN 'ORIGIN' END,
                   CASE WHEN parent.id IS NULL THEN 0.0::float8 END
            FROM new_node LEFT JOIN parent ON true
            WHERE $3::bigint IS NULL OR parent.id IS NOT NULL
            RETURNING id, root_id, x, y, z, created_at
        )
        SELECT ins.id AS "id!", ins.root_id AS "root_id!", ins.x AS "x!", ins.y AS "y!", ins.z AS "z!",
               ins.created_at AS "created_at!",
               parent.topic AS "parent_topic?", parent.analysis_status AS "parent_status?",
               COALESCE((SELECT array_agg(content ORDER BY depth DESC) FROM walk
                         WHERE acc_before < $8), '{}') AS "window!",
               (SELECT topic FROM walk WHERE acc_before >= $8) AS baseline_topic
        FROM ins LEFT JOIN parent ON true"#,
        node.content,
        node.author_id,
        node.parent_id,
        node.offset.x,
        node.offset.y,
        node.offset.z,
        lineage::char_len(node.content),
        lineage::WINDOW_CHARS,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Created {
        id: r.id,
        root_id: r.root_id,
        position: Vec3::new(r.x, r.y, r.z),
        created_at: r.created_at,
        parent: r.parent_status.map(|s| (r.parent_topic, status(&s))),
        context: lineage::assemble(node.content, &r.window, r.baseline_topic),
    }))
}

/// The lineage window of a stored node whose text is `own` and whose parent is `parent_id` (none
/// for a root), for recovery (creation computes it in [`create`]): one recursive CTE walks from the parent towards the root while fewer than 500
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
///
/// The cube is searched first, through the GiST index, in a materialized CTE: otherwise a cached
/// generic plan may walk the primary key backwards and filter, which reads most of a large galaxy
/// when the cube is sparse. The cost then follows the number of nodes in the cube.
pub async fn in_cube(
    db: impl PgExecutor<'_>,
    cube: Cube,
    limit: i64,
) -> Result<Vec<Node>, sqlx::Error> {
    let rows = sqlx::query_as!(
        NodeRow,
        r#"WITH inside AS MATERIALIZED (
            SELECT id FROM nodes
            WHERE point(x, y) <@ box(point($1::float8 - $4::float8, $2::float8 - $4::float8),
                                     point($1::float8 + $4::float8, $2::float8 + $4::float8))
              AND z BETWEEN $3::float8 - $4::float8 AND $3::float8 + $4::float8
        ),
        newest AS (SELECT id FROM inside ORDER BY id DESC LIMIT $5)
        SELECT n.id, n.content, u.nickname AS author_nickname, n.topic, n.emotion, n.mutation_filter,
               n.mutation_score, n.x, n.y, n.z, n.parent_id, n.root_id, n.created_at, n.analysis_status
        FROM newest JOIN nodes n ON n.id = newest.id JOIN users u ON u.id = n.author_id
        ORDER BY n.id DESC"#,
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
        offset: (f64, f64, f64),
    ) -> Created {
        create(
            pool,
            &NewNode {
                content,
                author_id,
                parent_id: parent,
                offset: Vec3::new(offset.0, offset.1, offset.2),
            },
        )
        .await
        .unwrap()
        .expect("parent exists")
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
        assert_eq!(root.context, lineage::window("root", &[]));

        let child = add(&pool, a, "child", Some(root.id), (10.0, -0.123, 0.0)).await;
        assert_eq!(child.root_id, root.id);
        assert_eq!(
            child.position,
            Vec3::new(11.0, 1.88, -3.01),
            "relative to the parent"
        );
        assert_eq!(child.parent, Some((None, AnalysisStatus::Pending)));
        assert_eq!(child.context.full_context, "root\nchild");

        sqlx::query!(
            "UPDATE nodes SET topic = 'done', analysis_status = 'COMPLETED' WHERE id = $1",
            child.id
        )
        .execute(&pool)
        .await
        .unwrap();
        let grandchild = add(&pool, a, "grandchild", Some(child.id), (0.0, 0.0, 0.0)).await;
        assert_eq!(grandchild.root_id, root.id);
        assert_eq!(
            grandchild.parent,
            Some((Some("done".to_owned()), AnalysisStatus::Completed))
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
                parent_id: Some(424_242),
                offset: Vec3::ORIGIN,
            },
        )
        .await
        .unwrap();
        assert_eq!(created, None);
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 0);
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
            let created = add(&pool, a, &own, parent_id, (0.0, 0.0, 0.0)).await;
            assert_eq!(created.context, expected, "create's CTE, depth {depth}");
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
            "EXPLAIN WITH inside AS MATERIALIZED (
                SELECT id FROM nodes
                WHERE point(x, y) <@ box(point(-10, -10), point(10, 10)) AND z BETWEEN -10 AND 10
             ),
             newest AS (SELECT id FROM inside ORDER BY id DESC LIMIT 5000)
             SELECT n.id FROM newest JOIN nodes n ON n.id = newest.id ORDER BY n.id DESC",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("nodes_xy"), "{plan}");
    }
}
