//! A load of real clients: guests that grow random forests through the HTTP API (deep chains and
//! wide fans), retrying through outages, and report the nodes the API stored.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

const WORDS: [&str; 12] = [
    "바다", "구름", "기억", "river", "light", "숲", "friend", "밤", "letter", "꿈", "road", "비",
];

/// What the clients stored.
#[derive(Debug, Clone, Default)]
pub struct Grown {
    /// Node ids the API answered with.
    pub ids: Vec<i64>,
    /// Requests that failed and were tried again (outages).
    pub retried: usize,
}

/// Shape of the forest.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Concurrent clients.
    pub clients: usize,
    /// Nodes each client stores.
    pub per_client: usize,
    /// Random seed.
    pub seed: u64,
}

async fn post(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Option<i64> {
    let r = http
        .post(format!("{base}/api/v1/nodes"))
        .header("X-Guest-Token", token)
        .json(body)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok()?["data"]["id"].as_i64()
}

async fn guest(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http
        .post(format!("{base}/api/v1/auth/guest"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok()?["data"]["guestToken"]
        .as_str()
        .map(str::to_owned)
}

/// Grows a forest through `bases` (clients spread over them): each client makes roots (15%),
/// continues its own chain (50%) or answers any node stored so far (35%). A failed request is
/// tried again after a short pause, up to two minutes, so an outage only slows the clients.
pub async fn grow(bases: Vec<String>, shape: Shape) -> Grown {
    let all = Arc::new(Mutex::new(Vec::<i64>::new()));
    let retried = Arc::new(Mutex::new(0usize));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..shape.clients {
        let base = bases[client % bases.len()].clone();
        let (all, retried, http) = (all.clone(), retried.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(shape.seed ^ (client as u64 * 7919));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let token = loop {
                if let Some(t) = guest(&http, &base).await {
                    break t;
                }
                assert!(tokio::time::Instant::now() < deadline, "no guest token");
                *retried.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let mut last: Option<i64> = None;
            for n in 0..shape.per_client {
                let roll: f64 = rng.random();
                let parent = if roll < 0.15 {
                    None
                } else if roll < 0.65 && last.is_some() {
                    last
                } else {
                    let known = all.lock().unwrap();
                    if known.is_empty() {
                        None
                    } else {
                        Some(known[rng.random_range(0..known.len())])
                    }
                };
                let words: Vec<&str> = (0..rng.random_range(2..8))
                    .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                    .collect();
                let body = json!({
                    "parentId": parent,
                    "content": format!("{} #{client}-{n}", words.join(" ")),
                });
                let id = loop {
                    if let Some(id) = post(&http, &base, &token, &body).await {
                        break id;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "a node could not be stored for two minutes"
                    );
                    *retried.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                all.lock().unwrap().push(id);
                last = Some(id);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let ids = all.lock().unwrap().clone();
    let retried = *retried.lock().unwrap();
    Grown { ids, retried }
}
