//! A node as clients see it (CONTRACT.md), and its analysis status.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use super::mutation::MutationFilter;

/// Content limits of a node, in characters.
pub const MAX_CONTENT_CHARS: usize = 5000;

/// Where a node is in the analysis pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnalysisStatus {
    /// Stored, waiting for analysis.
    Pending,
    /// Claimed by a worker.
    Processing,
    /// Analysed.
    Completed,
    /// Analysis gave up.
    Failed,
}

impl AnalysisStatus {
    /// Parses the database's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }
}

/// A node on the wire. Field names are exact, including `cratedAt`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its id.
    pub id: i64,
    /// Its text.
    pub content: String,
    /// The author's nickname.
    pub author_nickname: String,
    /// Its topic; `null` until analysed.
    pub topic: Option<String>,
    /// Its emotion; `neutral` until analysed.
    pub emotion: String,
    /// Its drift class; a root is `ORIGIN` from the start, a child has none until analysed.
    pub mutation_filter: Option<MutationFilter>,
    /// Its drift score; a root has 0.0 from the start, a child has none until analysed.
    pub mutation_score: Option<f64>,
    /// X.
    pub x: f64,
    /// Y.
    pub y: f64,
    /// Z.
    pub z: f64,
    /// The node it answers; `null` for a root.
    pub parent_id: Option<i64>,
    /// The root of its tree; a root's own id.
    pub root_id: i64,
    /// Creation time as a local date-time without zone (UTC), the old server's spelling.
    #[serde(rename = "cratedAt", serialize_with = "local_date_time")]
    #[schema(
        value_type = String,
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}$",
        example = "2026-11-21T09:30:00.123"
    )]
    pub crated_at: DateTime<Utc>,
    /// Creation time with its zone.
    pub created_at: DateTime<Utc>,
    /// Where it is in the analysis pipeline.
    pub analysis_status: AnalysisStatus,
}

/// `2026-11-21T09:30:00.123`: ISO-8601 local date-time, milliseconds, no zone.
fn local_date_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn wire_shape() {
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0).unwrap()
            + chrono::Duration::milliseconds(123);
        let node = Node {
            id: 42,
            content: "hi".into(),
            author_nickname: "차분한_구름_4821".into(),
            topic: None,
            emotion: "neutral".into(),
            mutation_filter: Some(MutationFilter::Evolution),
            mutation_score: Some(0.4123),
            x: 1.5,
            y: -3.25,
            z: 12.0,
            parent_id: Some(7),
            root_id: 1,
            crated_at: t,
            created_at: t,
            analysis_status: AnalysisStatus::Pending,
        };
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 42, "content": "hi", "authorNickname": "차분한_구름_4821", "topic": null,
                "emotion": "neutral", "mutationFilter": "EVOLUTION", "mutationScore": 0.4123,
                "x": 1.5, "y": -3.25, "z": 12.0, "parentId": 7, "rootId": 1,
                "cratedAt": "2026-11-21T09:30:00.123", "createdAt": "2026-11-21T09:30:00.123Z",
                "analysisStatus": "PENDING"
            })
        );
    }
}
