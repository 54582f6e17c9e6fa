//! Errors of the operator and the plugin.

/// What can go wrong while reconciling or running a plugin verb.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The resource has no namespace (it is namespaced, so the API server never sends one without).
    #[error("MutrDeployment {0} has no namespace")]
    NoNamespace(String),
    /// The plugin could not tell which MutrDeployment was meant.
    #[error("{0}")]
    Ambiguous(String),
    /// A plugin verb refused to act or a wait failed.
    #[error("{0}")]
    Refused(String),
    /// A wait ran out of time.
    #[error("timed out after {0:?}: {1}")]
    Timeout(std::time::Duration, String),
    /// Writing output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
