//! The `mutr.AnalysisService` handler: validates a request in one place, admits it or refuses it
//! at once when the queue is full, consults the result cache, runs topic, emotion and embeddings
//! concurrently on the model workers, and maps every failure to a gRPC status with a reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mutr_proto::{AnalysisRequest, AnalysisResponse, AnalysisService};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};

use crate::analysis::{emotion, mutation, prompt, topic};
use crate::cache::{self, CachedResult, ResultCache};
use crate::engine::{EngineError, Models};
use crate::metrics as m;

/// Input limits and admission control.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest `content`, in characters.
    pub max_content_chars: usize,
    /// Longest `full_context`, in characters.
    pub max_context_chars: usize,
    /// Longest `parent_topic` or `baseline_topic`, in characters.
    pub max_topic_chars: usize,
    /// Requests admitted at once (running or waiting for a sequence); one more is refused with
    /// `RESOURCE_EXHAUSTED`.
    pub max_in_flight: usize,
    /// Longest time a request may take; a shorter client deadline wins.
    pub request_timeout: Duration,
    /// Most tokens generated for a topic.
    pub topic_max_tokens: usize,
}

/// State shared by the handler and the server's lifecycle.
pub struct Shared<M> {
    models: RwLock<Option<Arc<M>>>,
    draining: AtomicBool,
    admission: Arc<Semaphore>,
    limits: Limits,
    cache: Option<ResultCache>,
}

impl<M: Models> Shared<M> {
    /// New state: no models yet (requests get `UNAVAILABLE` until [`Shared::set_models`]).
    pub fn new(limits: Limits, cache: Option<ResultCache>) -> Arc<Self> {
        Arc::new(Self {
            models: RwLock::new(None),
            draining: AtomicBool::new(false),
            admission: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            cache,
        })
    }

    /// Makes the loaded models available to requests.
    pub fn set_models(&self, models: Arc<M>) {
        *self.models.write().unwrap_or_else(|e| e.into_inner()) = Some(models);
    }

    /// The models, once loaded.
    pub fn models(&self) -> Option<Arc<M>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the models back (at shutdown, once nothing is in flight).
    pub fn take_models(&self) -> Option<Arc<M>> {
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Refuses new requests from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no admitted request is left, or `until` passes; true when none is left.
    pub async fn wait_idle(&self, until: Instant) -> bool {
        let total = u32::try_from(self.limits.max_in_flight).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(until.into(), self.admission.acquire_many(total)).await {
            Ok(Ok(permits)) => {
                drop(permits);
                true
            }
            _ => false,
        }
    }

    /// Requests admitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.limits.max_in_flight - self.admission.available_permits()
    }
}

/// The tonic service.
pub struct AnalysisHandler<M> {
    shared: Arc<Shared<M>>,
}

impl<M> AnalysisHandler<M> {
    /// A handler over `shared`.
    pub fn new(shared: Arc<Shared<M>>) -> Self {
        Self { shared }
    }
}

/// An admitted request; the in-flight gauge follows it out, however the request ends.
struct Admitted<'a, M> {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: &'a Shared<M>,
}

impl<M> Drop for Admitted<'_, M> {
    fn drop(&mut self) {
        // The permit is still held here: this request counts until the fields drop.
        let in_flight =
            self.shared.limits.max_in_flight - self.shared.admission.available_permits();
        m::in_flight(in_flight.saturating_sub(1));
    }
}

/// Records a request's outcome when dropped, so that cancelled requests count too.
struct Outcome {
    started: Instant,
    code: Code,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        m::request(self.code, self.started.elapsed());
    }
}

#[tonic::async_trait]
impl<M: Models> AnalysisService for AnalysisHandler<M> {
    async fn analyze_node(
        &self,
        request: Request<AnalysisRequest>,
    ) -> Result<Response<AnalysisResponse>, Status> {
        // Until the handler finishes, a dropped future means the client went away.
        let mut outcome = Outcome {
            started: Instant::now(),
            code: Code::Cancelled,
        };
        let result = self.analyze(request).await;
        outcome.code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        result.map(Response::new)
    }
}

impl<M: Models> AnalysisHandler<M> {
    async fn analyze(&self, request: Request<AnalysisRequest>) -> Result<AnalysisResponse, Status> {
        let shared = &self.shared;
        let client_timeout = grpc_timeout(request.metadata());
        let req = request.into_inner();
        validate(&req, &shared.limits)?;
        if shared.draining.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the server is draining"));
        }
        let models = shared
            .models()
            .ok_or_else(|| Status::unavailable("the models are still loading"))?;
        let permit = shared.admission.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the analysis queue is full ({} requests in flight); retry later",
                shared.limits.max_in_flight
            ))
        })?;
        let _admitted = Admitted {
            _permit: permit,
            shared: shared.as_ref(),
        };
        m::in_flight(shared.in_flight());
        let timeout = client_timeout.map_or(shared.limits.request_timeout, |t| {
            t.min(shared.limits.request_timeout)
        });
        let deadline = Instant::now() + timeout;

        let key = shared.cache.as_ref().map(|_| {
            cache::key(
                models.identity(),
                &[
                    &req.content,
                    &req.parent_topic,
                    &req.baseline_topic,
                    &req.full_context,
                ],
            )
        });
        if let (Some(cache), Some(key)) = (&shared.cache, &key)
            && let Some(hit) = cache.get(key).await
        {
            return Ok(AnalysisResponse {
                topic: hit.topic,
                emotion: hit.emotion,
                confidence: hit.confidence,
                mutation_score: hit.mutation_score,
            });
        }

        let response = run_models(&*models, &req, shared.limits.topic_max_tokens, deadline)
            .await
            .map_err(engine_status)?;
        if let (Some(cache), Some(key)) = (shared.cache.clone(), key) {
            let value = CachedResult {
                topic: response.topic.clone(),
                emotion: response.emotion.clone(),
                confidence: response.confidence,
                mutation_score: response.mutation_score,
            };
            // The answer does not wait for the cache.
            tokio::spawn(async move { cache.put(&key, &value).await });
        }
        Ok(response)
    }
}

/// Topic, emotion and mutation score of one request, the three model calls running together.
pub async fn run_models<M: Models>(
    models: &M,
    req: &AnalysisRequest,
    topic_max_tokens: usize,
    deadline: Instant,
) -> Result<AnalysisResponse, EngineError> {
    let parent_topic = req.parent_topic.trim();
    let title = models.generate(
        prompt::topic(&req.content, &req.baseline_topic, &req.full_context),
        topic_max_tokens,
        deadline,
    );
    let scores = models.score(prompt::emotion(&req.content), &emotion::LABELS, deadline);
    let embeddings = async {
        if parent_topic.is_empty() {
            Ok(None)
        } else {
            models
                .embed(
                    vec![parent_topic.to_owned(), req.content.trim().to_owned()],
                    deadline,
                )
                .await
                .map(Some)
        }
    };
    let (title, scores, embeddings) = tokio::try_join!(title, scores, embeddings)?;

    let scores: [f64; emotion::LABELS.len()] = scores
        .try_into()
        .map_err(|_| EngineError::Model("wrong number of emotion scores".into()))?;
    let emotion = emotion::pick(&scores);
    let mutation_score = match embeddings.as_deref() {
        Some([parent, content]) => mutation::calibrate(mutation::cosine(parent, content)),
        Some(_) => return Err(EngineError::Model("wrong number of embeddings".into())),
        None => 0.0,
    };
    Ok(AnalysisResponse {
        topic: topic::topic_or_fallback(&title, &req.baseline_topic),
        emotion: emotion.label.to_owned(),
        confidence: mutation::round4(emotion.confidence) as f32,
        mutation_score: mutation_score as f32,
    })
}

fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::DeadlineExceeded => {
            Status::deadline_exceeded("the analysis did not finish in time")
        }
        EngineError::Stopped => Status::unavailable("the models are shutting down"),
        EngineError::Model(reason) => {
            tracing::error!("analysis failed: {reason}");
            Status::internal("the analysis failed")
        }
    }
}

/// Checks a request against the limits; the reason names the field and the limit.
pub fn validate(req: &AnalysisRequest, limits: &Limits) -> Result<(), Status> {
    if req.content.trim().is_empty() {
        return Err(Status::invalid_argument("content is empty"));
    }
    let fields = [
        ("content", &req.content, limits.max_content_chars),
        ("full_context", &req.full_context, limits.max_context_chars),
        ("parent_topic", &req.parent_topic, limits.max_topic_chars),
        (
            "baseline_topic",
            &req.baseline_topic,
            limits.max_topic_chars,
        ),
    ];
    for (name, value, max) in fields {
        if value.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "{name} contains a NUL character"
            )));
        }
        let chars = value.chars().count();
        if chars > max {
            return Err(Status::invalid_argument(format!(
                "{name} has {chars} characters; the limit is {max}"
            )));
        }
    }
    Ok(())
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`, unit one of
/// `H M S m u n`).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_content_chars: 10,
            max_context_chars: 20,
            max_topic_chars: 5,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(1),
            topic_max_tokens: 30,
        }
    }

    fn req(content: &str) -> AnalysisRequest {
        AnalysisRequest {
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_reasons() {
        let l = limits();
        assert!(validate(&req("좋은 하루"), &l).is_ok());
        let e = validate(&req("  "), &l).unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "content is empty")
        );
        let e = validate(&req("가나다라마바사아자차카"), &l).unwrap_err();
        assert_eq!(e.message(), "content has 11 characters; the limit is 10");
        let mut r = req("a");
        r.parent_topic = "abcdef".into();
        assert_eq!(
            validate(&r, &l).unwrap_err().message(),
            "parent_topic has 6 characters; the limit is 5"
        );
        let mut r = req("a");
        r.full_context = "x\0".into();
        assert_eq!(
            validate(&r, &l).unwrap_err().message(),
            "full_context contains a NUL character"
        );
    }

    #[test]
    fn grpc_timeout_header() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&md), None);
        md.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_millis(250)));
        md.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_secs(3)));
        md.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&md), None);
    }
}
