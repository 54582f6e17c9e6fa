//! The AI server of this pod's colour, over gRPC: `AnalyzeNode` with a deadline per call, and its
//! `grpc.health.v1` status, watched in the background so that the pipeline claims work only while
//! the server can do it.

use std::time::Duration;

use mutr_proto::{AnalysisRequest, AnalysisResponse, AnalysisServiceClient};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The AI server's health as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiHealth {
    /// Not asked yet.
    Unknown,
    /// Answered `SERVING`.
    Serving,
    /// Answered, but not `SERVING` (loading models, draining).
    NotServing,
    /// Did not answer.
    Unreachable,
}

impl AiHealth {
    /// Whether analyses can be sent now.
    pub fn is_serving(self) -> bool {
        self == Self::Serving
    }

    /// The word `/readyz` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Serving => "serving",
            Self::NotServing => "not serving",
            Self::Unreachable => "unreachable",
        }
    }
}

/// The URL of the AI server is unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid AI server URL")]
pub struct InvalidUrl(#[source] tonic::transport::Error);

/// A client of the AI server, cheap to clone (one HTTP/2 connection, reconnected as needed).
#[derive(Debug, Clone)]
pub struct AiClient {
    analysis: AnalysisServiceClient<Channel>,
    health: HealthClient<Channel>,
    timeout: Duration,
}

impl AiClient {
    /// A client of `url` whose calls each get `timeout`; connects lazily.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, InvalidUrl> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(InvalidUrl)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            analysis: AnalysisServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout,
        })
    }

    /// One `AnalyzeNode` call. The deadline travels with the request (`grpc-timeout`) and is
    /// also kept here, so that a server that stopped answering costs one deadline, not a worker.
    pub async fn analyze(&self, request: AnalysisRequest) -> Result<AnalysisResponse, Status> {
        let mut request = Request::new(request);
        request.set_timeout(self.timeout);
        let mut client = self.analysis.clone();
        // A little slack, so that the server's own DEADLINE_EXCEEDED (with its reason) usually
        // arrives first.
        let wait = self.timeout + Duration::from_millis(250);
        let late = || {
            Status::deadline_exceeded(format!(
                "no answer from the AI server within {}",
                humantime::format_duration(self.timeout)
            ))
        };
        match tokio::time::timeout(wait, client.analyze_node(request)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            // tonic's own client-side deadline ends the call as CANCELLED; it is the deadline.
            Ok(Err(status)) if status.code() == tonic::Code::Cancelled => Err(late()),
            // A status with a source was made here, from a transport failure (the connection
            // broke mid-call, the server died): the server is unavailable, the node is not at
            // fault. A status the server sent has no source.
            Ok(Err(status))
                if status.code() == tonic::Code::Unknown
                    && std::error::Error::source(&status).is_some() =>
            {
                Err(Status::unavailable(format!(
                    "the connection to the AI server broke: {}",
                    status.message()
                )))
            }
            Ok(Err(status)) => Err(status),
            Err(_) => Err(late()),
        }
    }

    /// Asks `grpc.health.v1` for the whole server (service `""`).
    pub async fn health(&self, timeout: Duration) -> AiHealth {
        let mut request = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(timeout);
        let mut client = self.health.clone();
        match tokio::time::timeout(timeout, client.check(request)).await {
            Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                AiHealth::Serving
            }
            Ok(Ok(_)) => AiHealth::NotServing,
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => AiHealth::NotServing,
            _ => AiHealth::Unreachable,
        }
    }
}

/// Asks the AI server's health until `stop`: quickly (from 50 ms, doubling, with jitter) while it
/// is not `SERVING`, every `interval` once it is. Publishes each change on `health`.
pub async fn watch_health(
    client: AiClient,
    interval: Duration,
    health: std::sync::Arc<watch::Sender<AiHealth>>,
    stop: CancellationToken,
) {
    let probe_timeout = Duration::from_secs(2).min(interval.max(Duration::from_millis(500)));
    let mut backoff = Duration::from_millis(50);
    loop {
        let now = client.health(probe_timeout).await;
        let before = health.send_replace(now);
        if before != now {
            match now {
                AiHealth::Serving => tracing::info!("AI server is SERVING"),
                other => tracing::warn!(health = other.as_str(), "AI server is not serving"),
            }
        }
        metrics::gauge!("mutr_analysis_ai_serving").set(if now.is_serving() { 1.0 } else { 0.0 });
        let wait = if now.is_serving() {
            backoff = Duration::from_millis(50);
            interval
        } else {
            let wait = backoff.mul_f64(1.0 + rand::random::<f64>() * 0.5);
            backoff = (backoff * 2).min(interval);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}
