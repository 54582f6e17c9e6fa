//! The service's own behaviour on a fake model set, in milliseconds: admission and the queue
//! limit, cancellation, deadlines, drain, the result cache, and how model failures reach the
//! client. The real models are exercised in `analysis.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mutr_ai_server::analysis::emotion::LABELS;
use mutr_ai_server::analysis::prompt::Prompt;
use mutr_ai_server::cache::{CacheSettings, ResultCache};
use mutr_ai_server::engine::{EngineError, Models};
use mutr_ai_server::service::{AnalysisHandler, Limits, Shared};
use mutr_proto::{AnalysisRequest, AnalysisResponse, AnalysisService};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Status};

/// Models that answer when let through: `generate` waits for a permit of `gate` (or its
/// deadline), and every call is counted.
struct Fake {
    gate: Semaphore,
    generated: AtomicUsize,
    fail: bool,
    identity: String,
}

impl Fake {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(Self {
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            generated: AtomicUsize::new(0),
            fail: false,
            identity: format!("fake-{:?}", Instant::now()),
        })
    }

    fn open(&self) {
        self.gate.add_permits(1000);
    }
}

impl Models for Fake {
    async fn generate(
        &self,
        _prompt: Prompt,
        _max_tokens: usize,
        deadline: Instant,
    ) -> Result<String, EngineError> {
        self.generated.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            permit = self.gate.acquire() => {
                drop(permit);
                if self.fail {
                    Err(EngineError::Model("decode: out of memory at 0x7f00".into()))
                } else {
                    Ok("1. \"봄날의 산책\"".into())
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => Err(EngineError::DeadlineExceeded),
        }
    }

    async fn score(
        &self,
        _prompt: Prompt,
        candidates: &'static [&'static str],
        _deadline: Instant,
    ) -> Result<Vec<f64>, EngineError> {
        // joy twice as likely as each other label.
        Ok((0..candidates.len())
            .map(|i| if i == 0 { 2f64.ln() } else { 0.0 })
            .collect())
    }

    async fn embed(
        &self,
        texts: Vec<String>,
        _deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        // The same direction for every text: cosine 1, no drift.
        Ok(texts.iter().map(|_| vec![0.6, 0.8]).collect())
    }

    fn identity(&self) -> &str {
        &self.identity
    }
}

fn limits(max_in_flight: usize) -> Limits {
    Limits {
        max_content_chars: 100,
        max_context_chars: 200,
        max_topic_chars: 20,
        max_in_flight,
        request_timeout: Duration::from_secs(5),
        topic_max_tokens: 30,
    }
}

fn handler(
    models: Option<Arc<Fake>>,
    max_in_flight: usize,
    cache: Option<ResultCache>,
) -> (Arc<AnalysisHandler<Fake>>, Arc<Shared<Fake>>) {
    let shared = Shared::new(limits(max_in_flight), cache);
    if let Some(m) = models {
        shared.set_models(m);
    }
    (Arc::new(AnalysisHandler::new(shared.clone())), shared)
}

fn request(content: &str) -> AnalysisRequest {
    AnalysisRequest {
        content: content.into(),
        parent_topic: "산책".into(),
        baseline_topic: "봄".into(),
        full_context: content.into(),
    }
}

async fn call(h: &AnalysisHandler<Fake>, req: AnalysisRequest) -> Result<AnalysisResponse, Status> {
    h.analyze_node(Request::new(req))
        .await
        .map(tonic::Response::into_inner)
}

/// Starts a call on its own task.
fn spawn_call(
    h: &Arc<AnalysisHandler<Fake>>,
    req: AnalysisRequest,
) -> tokio::task::JoinHandle<Result<AnalysisResponse, Status>> {
    let h = h.clone();
    tokio::spawn(async move { call(&h, req).await })
}

#[tokio::test]
async fn an_answer_is_built_from_the_model_outputs() {
    let (h, _) = handler(Some(Fake::new(true)), 4, None);
    let r = call(&h, request("오늘은 공원을 걸었다")).await.unwrap();
    // The title is cleaned, joy has probability 2/8, identical embeddings drift 0.
    assert_eq!(r.topic, "봄날의 산책");
    assert_eq!(r.emotion, "joy");
    assert_eq!(r.confidence, 0.25);
    assert_eq!(r.mutation_score, 0.0);
    assert_eq!(LABELS[0], "joy");
}

#[tokio::test]
async fn before_the_models_are_loaded_requests_are_unavailable() {
    let (h, _) = handler(None, 4, None);
    let err = call(&h, request("hello")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "the models are still loading")
    );
}

#[tokio::test]
async fn beyond_the_admission_limit_a_request_is_refused_at_once() {
    let fake = Fake::new(false);
    let (h, shared) = handler(Some(fake.clone()), 2, None);
    let held = [
        spawn_call(&h, request("one")),
        spawn_call(&h, request("two")),
    ];
    common::wait_until(Duration::from_secs(5), "two admitted", || async {
        shared.in_flight() == 2
    })
    .await;
    let t = Instant::now();
    let err = call(&h, request("three")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("queue is full"), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // The admitted ones finish once the model answers, and their admission is released.
    fake.open();
    for c in held {
        assert_eq!(c.await.unwrap().unwrap().topic, "봄날의 산책");
    }
    assert_eq!(shared.in_flight(), 0);
    assert!(call(&h, request("four")).await.is_ok());
}

#[tokio::test]
async fn a_cancelled_request_releases_its_admission() {
    let fake = Fake::new(false);
    let (h, shared) = handler(Some(fake.clone()), 1, None);
    let first = spawn_call(&h, request("one"));
    common::wait_until(Duration::from_secs(5), "the first admitted", || async {
        shared.in_flight() == 1
    })
    .await;
    // The client goes away: its future is dropped.
    first.abort();
    common::wait_until(Duration::from_secs(5), "the admission released", || async {
        shared.in_flight() == 0
    })
    .await;
    fake.open();
    assert!(call(&h, request("two")).await.is_ok());
}

#[tokio::test]
async fn the_client_deadline_wins_over_the_request_timeout() {
    // The model never answers; the request timeout is 5 s, the client's deadline 50 ms.
    let (h, shared) = handler(Some(Fake::new(false)), 4, None);
    let mut req = Request::new(request("slow"));
    req.metadata_mut()
        .insert("grpc-timeout", "50m".parse().unwrap());
    let t = Instant::now();
    let err = h.analyze_node(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(50) && t.elapsed() < Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(shared.in_flight(), 0);
}

#[tokio::test]
async fn drain_refuses_new_work_and_waits_for_work_in_flight() {
    let fake = Fake::new(false);
    let (h, shared) = handler(Some(fake.clone()), 4, None);
    let in_flight = spawn_call(&h, request("in flight"));
    common::wait_until(Duration::from_secs(5), "admitted", || async {
        shared.in_flight() == 1
    })
    .await;
    shared.start_draining();
    let err = call(&h, request("new")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "the server is draining")
    );
    // Not idle while the request runs; idle once it finished.
    assert!(
        !shared
            .wait_idle(Instant::now() + Duration::from_millis(50))
            .await
    );
    fake.open();
    assert!(
        shared
            .wait_idle(Instant::now() + Duration::from_secs(5))
            .await
    );
    assert!(in_flight.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_model_failure_is_internal_and_tells_the_client_no_details() {
    let fake = Arc::new(Fake {
        fail: true,
        ..Arc::into_inner(Fake::new(true)).unwrap()
    });
    let (h, _) = handler(Some(fake), 4, None);
    let err = call(&h, request("boom")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Internal, "the analysis failed")
    );
}

#[tokio::test]
async fn a_cached_result_is_served_without_the_models() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        panic!("REDIS_URL is not set: run the tests through `make test` (hack/with-services.sh)");
    };
    let cache = ResultCache::new(
        &url,
        CacheSettings {
            ttl: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let fake = Fake::new(true);
    let (h, _) = handler(Some(fake.clone()), 4, Some(cache));
    let first = call(&h, request("캐시")).await.unwrap();
    assert_eq!(fake.generated.load(Ordering::SeqCst), 1);
    // The answer is stored after it is sent: soon a call is answered without the models.
    common::wait_until(Duration::from_secs(5), "a cache hit", || {
        let (h, fake, first) = (h.clone(), fake.clone(), first.clone());
        async move {
            let calls = fake.generated.load(Ordering::SeqCst);
            assert_eq!(call(&h, request("캐시")).await.unwrap(), first);
            fake.generated.load(Ordering::SeqCst) == calls
        }
    })
    .await;
}
