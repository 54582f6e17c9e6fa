//! `POST /api/v1/nodes` (create, then broadcast and hand off after commit) and
//! `GET /api/v1/nodes/viz` (the nodes in a cube).

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::Author,
    db::nodes::{self, Cube},
    domain::{
        coordinates::{self, MAX_ROOT_COORDINATE, Vec3},
        node::{MAX_CONTENT_CHARS, Node},
    },
    error::{ApiError, ApiOk, ApiOkJson, Envelope},
    http::{
        extract::{ApiJson, ApiQuery},
        openapi::{
            BadRequest, Internal, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
            Unavailable, UnsupportedMediaType,
        },
    },
    node_writer::{NodeDraft, StoredNode, WriteError},
    state::AppState,
};

/// The body of `POST /api/v1/nodes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateNode {
    /// The node this one answers; none for a new root.
    pub parent_id: Option<i64>,
    /// 1 to 5000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 5000, example = "별이 하나 떨어졌다")]
    pub content: String,
    /// Where a root goes (default 0), at most 10^12 from the origin.
    #[schema(minimum = -1e12, maximum = 1e12)]
    pub x: Option<f64>,
    /// Where a root goes (default 0), at most 10^12 from the origin.
    #[schema(minimum = -1e12, maximum = 1e12)]
    pub y: Option<f64>,
    /// Where a root goes (default 0), at most 10^12 from the origin.
    #[schema(minimum = -1e12, maximum = 1e12)]
    pub z: Option<f64>,
    /// The client's gaze direction, for placing a child.
    pub dir_x: Option<f64>,
    /// The client's gaze direction.
    pub dir_y: Option<f64>,
    /// The client's gaze direction.
    pub dir_z: Option<f64>,
}

impl CreateNode {
    /// Checks what the type cannot: the content's length and that every number is usable.
    pub fn validate(&self) -> Result<(), ApiError> {
        let chars = self.content.chars().count();
        if chars == 0 || self.content.trim().is_empty() {
            return Err(ApiError::BadRequest("content must not be empty".to_owned()));
        }
        // PostgreSQL's text cannot hold U+0000; storing it failed the whole statement.
        if self.content.contains('\0') {
            return Err(ApiError::BadRequest(
                "content must not contain NUL characters".to_owned(),
            ));
        }
        if chars > MAX_CONTENT_CHARS {
            return Err(ApiError::BadRequest(format!(
                "content must be at most {MAX_CONTENT_CHARS} characters"
            )));
        }
        let numbers = [
            ("x", self.x),
            ("y", self.y),
            ("z", self.z),
            ("dirX", self.dir_x),
            ("dirY", self.dir_y),
            ("dirZ", self.dir_z),
        ];
        for (name, value) in numbers {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be a finite number"
                )));
            }
        }
        for (name, value) in &numbers[..3] {
            if value.is_some_and(|v| v.abs() > MAX_ROOT_COORDINATE) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be between -{MAX_ROOT_COORDINATE:e} and {MAX_ROOT_COORDINATE:e}"
                )));
            }
        }
        Ok(())
    }

    fn gaze(&self) -> Option<Vec3> {
        match (self.dir_x, self.dir_y, self.dir_z) {
            (Some(x), Some(y), Some(z)) => Some(Vec3::new(x, y, z)),
            _ => None,
        }
    }

    /// Where the node goes: a root where asked, a child's step from its parent (drawn from `rng`).
    pub fn offset(&self, rng: &mut impl rand::Rng) -> Vec3 {
        match self.parent_id {
            Some(_) => coordinates::child_offset(self.gaze(), rng),
            None => coordinates::place_root(self.x, self.y, self.z),
        }
    }
}

/// Creates a node as `PENDING` (stored in one statement with concurrent creations, see
/// [`crate::node_writer`]); after the commit it is broadcast and handed to the analysis pipeline.
/// Never waits for the analysis.
#[utoipa::path(
    post,
    path = "/api/v1/nodes",
    tag = "nodes",
    operation_id = "createNode",
    summary = "Create a node",
    description = "Stores a node as `PENDING` and answers at once; the analysis follows, and the \
                   live push carries the node when it is created and when its analysis ends. A \
                   root goes to `x`, `y`, `z` (default 0); a child is placed near its parent, \
                   along the gaze `dirX`, `dirY`, `dirZ` when all three are sent.",
    security(("guestToken" = []), ("bearer" = [])),
    request_body(content = CreateNode, content_type = "application/json"),
    responses(
        (status = 200, description = "The new node, `analysisStatus: PENDING`", body = Envelope<Node>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Author {
        user,
        guest_token_hash,
    }: Author,
    ApiJson(body): ApiJson<CreateNode>,
) -> Result<Response, ApiError> {
    state.write_limiter.check(user.id).await?;
    body.validate()?;

    let offset = body.offset(&mut rand::rng());
    let draft = NodeDraft {
        content: body.content,
        author_id: user.id,
        author_nickname: user.nickname,
        guest_token_hash: guest_token_hash.clone(),
        parent_id: body.parent_id,
        offset,
    };
    match state.node_writer.create(draft).await {
        // The JSON the live push carried is the answer's payload: no second serialisation.
        Ok(StoredNode {
            json: Some(json), ..
        }) => Ok(ApiOkJson(json).into_response()),
        Ok(StoredNode { node, json: None }) => Ok(ApiOk(node).into_response()),
        Err(WriteError::ParentMissing(id)) => {
            Err(ApiError::NotFound(format!("parent node {id} not found")))
        }
        Err(WriteError::AuthorGone) => {
            if let Some(hash) = &guest_token_hash {
                state.guest_cache.invalidate(hash);
                return Err(ApiError::Unauthorized("unknown guest token".to_owned()));
            }
            Err(ApiError::Unauthorized("unknown user".to_owned()))
        }
        Err(WriteError::Database(e)) => Err(ApiError::Database(e)),
        Err(WriteError::Stopped) => Err(ApiError::Unavailable("shutting down".to_owned())),
        Err(WriteError::Unavailable) => {
            Err(ApiError::Unavailable("database unavailable".to_owned()))
        }
        Err(e @ WriteError::Batch) => Err(ApiError::Internal(e.into())),
    }
}

/// The query of `GET /api/v1/nodes/viz`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VizQuery {
    /// Centre of the cube.
    pub x: f64,
    /// Centre of the cube.
    pub y: f64,
    /// Centre of the cube.
    pub z: f64,
    /// Half the cube's edge; at most the configured maximum (default 100000).
    #[serde(default = "default_range")]
    #[param(minimum = 0.0, default = 200.0)]
    pub range: f64,
}

fn default_range() -> f64 {
    200.0
}

impl VizQuery {
    /// The cube asked for, once every number is finite and `range` is within `0..=max_range`.
    pub fn cube(&self, max_range: f64) -> Result<Cube, ApiError> {
        for (name, v) in [
            ("x", self.x),
            ("y", self.y),
            ("z", self.z),
            ("range", self.range),
        ] {
            if !v.is_finite() {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be a finite number"
                )));
            }
        }
        if self.range < 0.0 || self.range > max_range {
            return Err(ApiError::BadRequest(format!(
                "range must be between 0 and {max_range}"
            )));
        }
        Ok(Cube {
            x: self.x,
            y: self.y,
            z: self.z,
            range: self.range,
        })
    }
}

/// Every node within `range` of the point on each axis, newest first, capped at the configured
/// number of nodes.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/viz",
    tag = "nodes",
    operation_id = "vizNodes",
    summary = "The nodes in a cube",
    description = "Every node whose coordinates are within `range` of the point on each axis, \
                   newest first, at most the configured number (default 5000). Public.",
    params(VizQuery),
    responses(
        (status = 200, description = "The nodes, newest first", body = Envelope<Vec<Node>>),
        (status = 400, response = BadRequest),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub async fn viz(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<VizQuery>,
) -> Result<ApiOk<Vec<Node>>, ApiError> {
    let cube = q.cube(state.limits.viz_max_range)?;
    let found = nodes::in_cube(&state.db, cube, i64::from(state.limits.viz_max_nodes)).await?;
    metrics::histogram!("mutr_viz_nodes_returned").record(found.len() as f64);
    Ok(ApiOk(found))
}
