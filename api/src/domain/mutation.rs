//! The mutation filter: how far a node drifted from its parent's topic, as a class.

use serde::{Deserialize, Serialize};

/// A node's drift class, from its mutation score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MutationFilter {
    /// A root: nothing to drift from.
    Origin,
    /// Stays on the parent's topic (score below 0.25).
    Cluster,
    /// Moves on from it (score below 0.7).
    Evolution,
    /// Leaves it (score 0.7 and above).
    Mutation,
}

impl MutationFilter {
    /// The class of a child node with this score.
    pub fn of_child(score: f64) -> Self {
        if score < 0.25 {
            Self::Cluster
        } else if score < 0.7 {
            Self::Evolution
        } else {
            Self::Mutation
        }
    }

    /// The name stored in the database and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "ORIGIN",
            Self::Cluster => "CLUSTER",
            Self::Evolution => "EVOLUTION",
            Self::Mutation => "MUTATION",
        }
    }
}

/// A root's score: it has no parent topic to drift from.
pub const ROOT_SCORE: f64 = 0.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(MutationFilter::of_child(0.0), MutationFilter::Cluster);
        assert_eq!(MutationFilter::of_child(0.2499), MutationFilter::Cluster);
        assert_eq!(MutationFilter::of_child(0.25), MutationFilter::Evolution);
        assert_eq!(MutationFilter::of_child(0.6999), MutationFilter::Evolution);
        assert_eq!(MutationFilter::of_child(0.7), MutationFilter::Mutation);
        assert_eq!(MutationFilter::of_child(1.0), MutationFilter::Mutation);
        assert_eq!(MutationFilter::Origin.as_str(), "ORIGIN");
    }
}
