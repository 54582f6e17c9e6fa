//! End to end over a real socket with the real tiny models: health, a real analysis, batching
//! determinism (the whole answer on the CPU, the mutation score on a GPU), bad input, overload,
//! cancellation, the result cache and drain.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mutr_ai_server::server::ModelSource;
use mutr_proto::{AnalysisRequest, AnalysisResponse, AnalysisServiceClient};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(channel);
    let r = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_model_loading_and_drain() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut server =
        TestServer::start_with(config(&Opts::default(), ModelSource::Deferred(rx))).await;
    // Ports are open, models are not there yet.
    for service in ["", "mutr.AnalysisService"] {
        assert_eq!(
            health(server.grpc, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    let readyz = format!("http://{}/readyz", server.metrics);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 503);
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", server.metrics))
            .await
            .unwrap()
            .status(),
        200
    );
    let err = analyze(&mut server.client().await, request("hello", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    assert!(tx.send(loaded_models()).is_ok());
    server.wait_ready().await;
    for service in ["", "mutr.AnalysisService"] {
        assert_eq!(
            health(server.grpc, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }

    server.trigger_shutdown();
    wait_until(Duration::from_secs(10), "readyz to fail", || async {
        reqwest::get(&readyz)
            .await
            .map_or(true, |r| r.status() == 503)
    })
    .await;
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(Opts::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["mutr.AnalysisService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_analysis_is_in_range() {
    let server = TestServer::start(Opts::default()).await;
    let mut client = server.client().await;

    let root = analyze(
        &mut client,
        request("Once upon a time there was a happy little dog.", ""),
    )
    .await
    .unwrap();
    assert_in_range(&root);
    assert_eq!(root.mutation_score, 0.0, "no parent topic gives 0");

    // The embedding model is real: a near paraphrase drifts less than an unrelated text.
    let parent = "The cat sat on the warm mat";
    let close = analyze(
        &mut client,
        request("A cat was sitting on a warm mat.", parent),
    )
    .await
    .unwrap();
    let far = analyze(
        &mut client,
        request("Quarterly tax revenue figures were revised.", parent),
    )
    .await
    .unwrap();
    assert_in_range(&close);
    assert_in_range(&far);
    assert!(
        close.mutation_score < far.mutation_score,
        "close {close:?} far {far:?}"
    );
    assert!(far.mutation_score > 0.5, "{far:?}");
    // The confidence comes from the model, not a constant.
    assert!(
        root.confidence != close.confidence || close.confidence != far.confidence,
        "{root:?} {close:?} {far:?}"
    );

    // Metrics count it.
    let text = server.metrics_text().await;
    assert!(
        metric(&text, "mutr_ai_requests_total{code=\"Ok\"}") >= 3.0,
        "{text}"
    );
    assert!(metric(&text, "mutr_ai_generated_tokens_total") > 0.0);
    assert!(text.contains("mutr_ai_batch_sequences"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_output_does_not_depend_on_the_batch() {
    let probe = AnalysisRequest {
        content: "Lily found a red ball in the park and laughed.".into(),
        parent_topic: "A day at the park".into(),
        baseline_topic: "Spring".into(),
        full_context: "Tom went to the park.\nLily found a red ball in the park and laughed."
            .into(),
    };
    let others: Vec<AnalysisRequest> = (0..8)
        .map(|i| AnalysisRequest {
            content: format!(
                "Story number {i}: the bird flew over {} hills and sang.",
                i * 3 + 1
            ),
            parent_topic: if i % 2 == 0 {
                "Birds".into()
            } else {
                String::new()
            },
            baseline_topic: String::new(),
            full_context: format!("Once upon a time {i}.\nThe bird flew over the hills and sang."),
        })
        .collect();

    let server = TestServer::start(Opts {
        parallel: 8,
        ..Opts::default()
    })
    .await;
    let client = server.client().await;
    let alone = analyze(&mut client.clone(), probe.clone()).await.unwrap();
    // Rounds 0 and 1: the probe joins while the others are decoding. Round 2: the probe comes in
    // the same burst as the others, so it starts decoding together with all of them.
    for round in 0..3 {
        let batched = among_others(&client, &probe, &others, round).await;
        same_answer(&batched, &alone, &format!("round {round}: among 8 others"));
    }
    let text = server.metrics_text().await;
    let labels = "{worker=\"generate\",phase=\"decode\"}";
    let sum = metric(&text, &format!("mutr_ai_batch_sequences_sum{labels}"));
    let count = metric(&text, &format!("mutr_ai_batch_sequences_count{labels}"));
    assert!(
        sum / count > 2.0,
        "decode steps held several sequences: {sum}/{count}"
    );
    server.stop().await.unwrap();

    // The same eight sequences over two contexts: whichever context a request lands in, and
    // whatever shares it, the answer is the one given alone.
    let split = TestServer::start(Opts {
        parallel: 8,
        gen_contexts: 2,
        ..Opts::default()
    })
    .await;
    let client = split.client().await;
    for round in [0, 2] {
        let batched = among_others(&client, &probe, &others, round).await;
        same_answer(
            &batched,
            &alone,
            &format!("two contexts, round {round}: among 8 others"),
        );
    }
    let text = split.metrics_text().await;
    for context in ["0", "1"] {
        let started = metric(
            &text,
            &format!("mutr_ai_context_sequences_total{{context=\"{context}\"}}"),
        );
        assert!(
            started >= 4.0,
            "context {context} took work: {started}\n{text}"
        );
    }
    split.stop().await.unwrap();
}

/// Whether an answer given among others is the one given alone. On the CPU all of it is. On a GPU
/// only the mutation score is: llama.cpp's CUDA kernels reduce in an order that depends on the
/// batch and the context's shape, so greedy decoding may pick another token (on an H200 the topic
/// of the two-context server gained two words), while each text is embedded alone there
/// (`default_embed_parallel`) and its embedding depends on that text only. ai-server/README.md,
/// "GPU", has the figures.
#[track_caller]
fn same_answer(batched: &AnalysisResponse, alone: &AnalysisResponse, what: &str) {
    if gpu_layers() == 0 {
        assert_eq!(batched, alone, "{what}");
    } else {
        assert_eq!(
            batched.mutation_score, alone.mutation_score,
            "{what}: {batched:?} against {alone:?}"
        );
    }
}

/// Sends `others` at once with `probe` among them (round 0 and 1: after the fourth and fifth
/// other, so it joins while they decode; round 2: first, in the same burst) and returns the
/// probe's answer; every answer must be in range.
async fn among_others(
    client: &AnalysisServiceClient<Channel>,
    probe: &AnalysisRequest,
    others: &[AnalysisRequest],
    round: usize,
) -> AnalysisResponse {
    let mut tasks = Vec::new();
    let send = |request: AnalysisRequest, i: usize| {
        let mut c = client.clone();
        tokio::spawn(async move { (i, analyze(&mut c, request).await) })
    };
    if round == 2 {
        tasks.push(send(probe.clone(), usize::MAX));
    }
    for (i, other) in others.iter().enumerate() {
        tasks.push(send(other.clone(), i));
        if round < 2 && i == 3 + round {
            tasks.push(send(probe.clone(), usize::MAX));
        }
    }
    let mut batched = None;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        let r = r.unwrap();
        assert_in_range(&r);
        if i == usize::MAX {
            batched = Some(r);
        }
    }
    batched.expect("the probe was sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_reason() {
    let server = TestServer::start(Opts {
        max_message_bytes: 16 * 1024,
        ..Opts::default()
    })
    .await;
    let mut client = server.client().await;
    let cases = [
        (request("   ", ""), "content is empty"),
        (
            AnalysisRequest {
                full_context: String::new(),
                ..request(&"가".repeat(4001), "")
            },
            "content has 4001 characters; the limit is 4000",
        ),
        (
            AnalysisRequest {
                full_context: "x".repeat(8001),
                ..request("hi", "")
            },
            "full_context has 8001 characters; the limit is 8000",
        ),
        (
            request("hi", &"t".repeat(201)),
            "parent_topic has 201 characters; the limit is 200",
        ),
        (
            AnalysisRequest {
                baseline_topic: "b".repeat(201),
                ..request("hi", "")
            },
            "baseline_topic has 201 characters; the limit is 200",
        ),
        (
            request("nul \0 inside", ""),
            "content contains a NUL character",
        ),
    ];
    for (req, reason) in cases {
        let err = analyze(&mut client, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(err.message(), reason);
    }
    // Over the message size limit (within the character limits): refused before decoding.
    let big = AnalysisRequest {
        full_context: "가".repeat(7000),
        ..request("hi", "")
    };
    let err = analyze(&mut client, big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // Nothing aborted: the server still answers.
    assert_in_range(
        &analyze(&mut client, request("still here", ""))
            .await
            .unwrap(),
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once() {
    // One running, none waiting: the second concurrent request is refused.
    let server = TestServer::start(Opts {
        parallel: 1,
        max_queue: 0,
        n_batch: 8,
        ..Opts::default()
    })
    .await;
    let client = server.client().await;
    let long = "The little bird sang a song in the tall green tree. ".repeat(8);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = client.clone();
        let req = request(&long, "Birds");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            (analyze(&mut c, req).await, t.elapsed())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (Ok(r), _) => {
                assert_in_range(&r);
                ok += 1;
            }
            (Err(e), elapsed) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("queue is full"), "{e:?}");
                assert!(
                    elapsed < Duration::from_secs(2),
                    "refused at once, not after {elapsed:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_expired_requests_free_their_slot() {
    // One slot and no queue; a long prompt decoded three tokens at a time keeps it busy for
    // thousands of decode calls, even on a fast idle machine.
    let server = TestServer::start(Opts {
        parallel: 1,
        max_queue: 0,
        n_batch: 3,
        n_ctx: 2048,
        ..Opts::default()
    })
    .await;
    let client = server.client().await;
    let slow = request(
        &"Tom and Lily played with the big red ball all day long. ".repeat(70),
        "Play",
    );

    // The client gives up (drops the call) while the sequence is decoding.
    let mut c = client.clone();
    let call = tokio::spawn({
        let slow = slow.clone();
        async move { analyze(&mut c, slow).await }
    });
    wait_until(
        Duration::from_secs(10),
        "the slow request to start decoding",
        || async {
            metric(
                &server.metrics_text().await,
                "mutr_ai_active_sequences{worker=\"generate\"}",
            ) >= 1.0
        },
    )
    .await;
    call.abort();
    wait_until(
        Duration::from_secs(10),
        "the cancelled sequence to be freed",
        || async {
            metric(
                &server.metrics_text().await,
                "mutr_ai_sequences_ended_total{worker=\"generate\",outcome=\"cancelled\"}",
            ) >= 1.0
        },
    )
    .await;

    // A deadline that passes mid-request: the server answers DEADLINE_EXCEEDED or CANCELLED and frees the slot.
    let mut req = tonic::Request::new(slow.clone());
    req.set_timeout(Duration::from_millis(20));
    let err = client.clone().analyze_node(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    // The single slot is free again: a short request is admitted and answered.
    let mut c = client.clone();
    wait_until(Duration::from_secs(10), "the slot to be free", || {
        let mut c = c.clone();
        async move { analyze(&mut c, request("short", "")).await.is_ok() }
    })
    .await;
    assert_in_range(&analyze(&mut c, request("short again", "")).await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_cached_in_redis() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        panic!("REDIS_URL is not set: run the tests through `make test` (hack/with-services.sh)");
    };
    let server = TestServer::start(Opts {
        redis_url: Some(url),
        ..Opts::default()
    })
    .await;
    let mut client = server.client().await;
    // Unique per run, so an earlier run's entry cannot answer.
    let nonce = format!("{:?}", Instant::now());
    let req = request(&format!("The dog ran home at dusk ({nonce})."), "Dogs");
    let first = analyze(&mut client, req.clone()).await.unwrap();
    wait_until(Duration::from_secs(10), "a cache hit", || {
        let (mut c, req, first) = (client.clone(), req.clone(), first.clone());
        let server = &server;
        async move {
            let again = analyze(&mut c, req).await.unwrap();
            assert_eq!(again, first);
            metric(&server.metrics_text().await, "mutr_ai_cache_hits_total") >= 1.0
        }
    })
    .await;
    let text = server.metrics_text().await;
    assert!(metric(&text, "mutr_ai_cache_misses_total") >= 1.0, "{text}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_never_fails_a_request() {
    // A port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", dead.local_addr().unwrap());
    drop(dead);
    let server = TestServer::start(Opts {
        redis_url: Some(url),
        ..Opts::default()
    })
    .await;
    let mut client = server.client().await;
    for i in 0..2 {
        assert_in_range(
            &analyze(&mut client, request(&format!("Outage {i}"), "Topic"))
                .await
                .unwrap(),
        );
    }
    wait_until(
        Duration::from_secs(10),
        "cache errors to be counted",
        || async { metric(&server.metrics_text().await, "mutr_ai_cache_errors_total") >= 2.0 },
    )
    .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_work_in_flight_and_refuses_new_work() {
    // A long prompt decoded three tokens at a time: still in flight while the drain is checked.
    let mut server = TestServer::start(Opts {
        parallel: 1,
        n_batch: 3,
        n_ctx: 2048,
        ..Opts::default()
    })
    .await;
    let client = server.client().await;
    let slow = request(
        &"Tom and Lily played with the big red ball all day long. ".repeat(70),
        "Play",
    );
    let mut c = client.clone();
    let in_flight = tokio::spawn(async move { analyze(&mut c, slow).await });
    wait_until(
        Duration::from_secs(10),
        "the request to be in flight",
        || async {
            metric(
                &server.metrics_text().await,
                "mutr_ai_active_sequences{worker=\"generate\"}",
            ) >= 1.0
        },
    )
    .await;

    server.trigger_shutdown();
    wait_until(Duration::from_secs(10), "NOT_SERVING", || async {
        health(server.grpc, "").await == ServingStatus::NotServing
    })
    .await;
    let err = analyze(&mut client.clone(), request("new work", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("draining"), "{err:?}");

    let finished = in_flight
        .await
        .unwrap()
        .expect("the request in flight finishes");
    assert_in_range(&finished);
    server
        .stop()
        .await
        .expect("serve returns Ok after draining");
}

/// The step-cost probe behind `benches/step_cost.rs` runs on the real model and times each shape.
#[test]
fn the_step_cost_probe_times_each_shape() {
    use mutr_ai_server::llm::probe::{Shape, decode_cost};
    let (generate, _) = loaded_models();
    let shapes = [
        Shape {
            sequences: 1,
            tokens: 1,
        },
        Shape {
            sequences: 4,
            tokens: 8,
        },
    ];
    let costs = decode_cost(&generate, &shapes, 40, 2, 1).unwrap();
    assert_eq!(costs.len(), 2);
    assert!(costs.iter().all(|c| !c.is_zero()), "{costs:?}");
}
