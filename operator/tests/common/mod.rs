//! A stateful in-memory Kubernetes API server for the reconciler and plugin tests, served to a real
//! `kube::Client` through a tower `service_fn`, plus stand-ins for the cluster's own controllers
//! (Deployment and Job controllers, kubelet) that tests drive step by step.
//!
//! It implements what the operator and the plugin call: get, list (equality label selectors), create,
//! server-side apply (create or deep-merge, `force`), JSON merge patch, and the status subresource.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use mutr_operator::crd::MutrDeployment;
use mutr_operator::k8s::{self, Context};
use mutr_operator::metrics::Metrics;
use serde_json::{Value, json};

/// Key of a stored object: (resource plural, namespace, name).
type Key = (String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    /// Requests seen, as "METHOD plural/name[/sub]".
    log: Vec<String>,
    /// Requests seen as RBAC sees them: (API group, resource[/subresource], verb).
    calls: std::collections::BTreeSet<(String, String, String)>,
    /// Field manager owning each top-level `spec` field: the one piece of server-side apply's field
    /// ownership modelled here, so that an apply without `force` that would take a field another
    /// manager set is refused with 409 Conflict (what Lease-based leader election relies on).
    owners: BTreeMap<(Key, String), String>,
}

/// The fake API server.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// The test clock (seconds after the epoch origin below).
    pub clock: Arc<Mutex<Timestamp>>,
}

pub const NS: &str = "shop";

fn status(code: StatusCode, reason: &str, message: &str) -> Response<kube::client::Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    respond(code, &body)
}

fn respond(code: StatusCode, body: &Value) -> Response<kube::client::Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// RFC 7386 merge; `null` deletes.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').expect("equality selectors only");
        labels.get(k).and_then(Value::as_str) == Some(v)
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl FakeApi {
    pub fn new() -> Self {
        let fake = Self::default();
        *fake.clock.lock().unwrap() = "2026-11-26T00:00:00Z".parse().unwrap();
        fake
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        Client::new(service, NS)
    }

    /// A reconciler context on this fake, with the fake's clock.
    pub fn context(&self) -> Arc<Context> {
        let mut ctx = Context::new(self.client(), Metrics::new(), Some("test".into()));
        let clock = self.clock.clone();
        ctx.clock = Arc::new(move || *clock.lock().unwrap());
        Arc::new(ctx)
    }

    pub fn advance(&self, seconds: i64) {
        let mut clock = self.clock.lock().unwrap();
        *clock = clock
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap();
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<kube::client::Body> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = req.into_body().collect_bytes().await.unwrap();
        let path: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
        // /api/v1/namespaces/ns/plural[/name[/sub]] or /apis/group/version/namespaces/ns/plural[/name[/sub]]
        let (group, rest) = match path.first() {
            Some(&"api") => ("", &path[2..]),
            Some(&"apis") => (path.get(1).copied().unwrap_or_default(), &path[3..]),
            _ => return status(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
        };
        if rest.len() < 3 || rest[0] != "namespaces" {
            return status(StatusCode::NOT_FOUND, "NotFound", "only namespaced paths");
        }
        let (ns, plural) = (rest[1].to_owned(), rest[2].to_owned());
        let name = rest.get(3).map(|s| (*s).to_owned());
        let sub = rest.get(4).map(|s| (*s).to_owned());
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), decode(v)))
            .collect();
        let verb = match (method.as_str(), name.is_some()) {
            _ if query.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            _ => "other",
        };
        let resource = match &sub {
            Some(sub) => format!("{plural}/{sub}"),
            None => plural.clone(),
        };
        self.state
            .lock()
            .unwrap()
            .calls
            .insert((group.to_owned(), resource, verb.to_owned()));
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            // No change notifications: a watch ends empty after a while, and the watcher opens the
            // next one; the controller learns of changes through its initial list and requeues.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            self.state
                .lock()
                .unwrap()
                .log
                .push(format!("WATCH {plural}"));
            return Response::builder()
                .status(StatusCode::OK)
                .body(kube::client::Body::from(Vec::new()))
                .unwrap();
        }
        let mut state = self.state.lock().unwrap();
        state.log.push(format!(
            "{method} {plural}{}{}",
            name.as_ref().map(|n| format!("/{n}")).unwrap_or_default(),
            sub.as_ref().map(|s| format!("/{s}")).unwrap_or_default()
        ));
        let now = *self.clock.lock().unwrap();
        match (method.as_str(), name) {
            ("GET", None) => {
                let selector = query.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((p, n, _), o)| {
                        *p == plural
                            && *n == ns
                            && selector_matches(&selector, &o["metadata"]["labels"])
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                let rv = state.resource_version.to_string();
                respond(
                    StatusCode::OK,
                    &json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": rv }, "items": items }),
                )
            }
            ("GET", Some(name)) => match state.objects.get(&(plural, ns, name.clone())) {
                Some(o) => respond(StatusCode::OK, o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{name} not found"),
                ),
            },
            ("POST", None) => {
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
                let key = (plural, ns.clone(), name.clone());
                if state.objects.contains_key(&key) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{name} already exists"),
                    );
                }
                Self::stamp_new(&mut state, &mut obj, &ns, now);
                state.objects.insert(key, obj.clone());
                respond(StatusCode::CREATED, &obj)
            }
            ("PATCH", Some(name)) => {
                let patch: Value = if content_type.contains("yaml") {
                    serde_yaml::from_slice(&body).unwrap()
                } else {
                    serde_json::from_slice(&body).unwrap()
                };
                let apply = content_type.starts_with("application/apply-patch");
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                let force = query.get("force").is_some_and(|f| f == "true");
                let key = (plural, ns.clone(), name.clone());
                if sub.is_none() {
                    if let (Some(current), Some(fields)) = (
                        state.objects.get(&key),
                        patch.get("spec").and_then(Value::as_object),
                    ) {
                        let conflicts: Vec<String> = fields
                            .iter()
                            .filter(|(field, value)| {
                                current["spec"]
                                    .get(field.as_str())
                                    .is_some_and(|v| v != *value)
                            })
                            .filter(|(field, _)| {
                                state
                                    .owners
                                    .get(&(key.clone(), (*field).clone()))
                                    .is_some_and(|m| *m != manager)
                            })
                            .map(|(field, _)| field.clone())
                            .collect();
                        if apply && !force && !conflicts.is_empty() {
                            return status(
                                StatusCode::CONFLICT,
                                "Conflict",
                                &format!("Apply failed with conflicts: {conflicts:?}"),
                            );
                        }
                    }
                    if let Some(fields) = patch.get("spec").and_then(Value::as_object) {
                        for (field, value) in fields {
                            let owner = (key.clone(), field.clone());
                            if value.is_null() {
                                state.owners.remove(&owner);
                            } else {
                                state.owners.insert(owner, manager.clone());
                            }
                        }
                    }
                }
                let existing = state.objects.get(&key).cloned();
                let mut obj = match (existing, apply, sub.as_deref()) {
                    (Some(o), _, _) => o,
                    (None, true, None) => {
                        // A server-side apply that creates the object is authorized as a create too.
                        state
                            .calls
                            .insert((group.to_owned(), key.0.clone(), "create".to_owned()));
                        let mut obj = patch.clone();
                        Self::stamp_new(&mut state, &mut obj, &ns, now);
                        state.objects.insert(key, obj.clone());
                        return respond(StatusCode::CREATED, &obj);
                    }
                    _ => {
                        return status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            &format!("{name} not found"),
                        );
                    }
                };
                if sub.as_deref() == Some("status") {
                    if apply {
                        obj["status"] = patch["status"].clone();
                    } else {
                        merge(&mut obj["status"], &patch["status"]);
                    }
                } else {
                    let before = obj.get("spec").cloned();
                    let mut patch = patch;
                    if let Some(p) = patch.as_object_mut() {
                        p.remove("status");
                    }
                    merge(&mut obj, &patch);
                    if obj.get("spec").cloned() != before {
                        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        obj["metadata"]["generation"] = json!(generation);
                    }
                }
                state.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
                state.objects.insert(key, obj.clone());
                respond(StatusCode::OK, &obj)
            }
            ("DELETE", Some(name)) => match state.objects.remove(&(plural, ns, name.clone())) {
                Some(o) => respond(StatusCode::OK, &o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{name} not found"),
                ),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake",
            ),
        }
    }

    /// Every (API group, resource, verb) requested so far.
    pub fn calls(&self) -> std::collections::BTreeSet<(String, String, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    fn stamp_new(state: &mut State, obj: &mut Value, ns: &str, now: Timestamp) {
        state.resource_version += 1;
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("uid-{}", state.resource_version));
        meta["resourceVersion"] = json!(state.resource_version.to_string());
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!(now.to_string());
    }

    // ---- direct access for tests -------------------------------------------------------------

    pub fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(plural.into(), NS.into(), name.into()))
            .cloned()
    }

    pub fn names(&self, plural: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .keys()
            .filter(|(p, _, _)| p == plural)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    pub fn all(&self, plural: &str) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn put(&self, plural: &str, obj: Value) {
        let mut state = self.state.lock().unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let mut obj = obj;
        let now = *self.clock.lock().unwrap();
        Self::stamp_new(&mut state, &mut obj, NS, now);
        state.objects.insert((plural.into(), NS.into(), name), obj);
    }

    pub fn edit(&self, plural: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().unwrap();
        let obj = state
            .objects
            .get_mut(&(plural.into(), NS.into(), name.into()))
            .unwrap_or_else(|| panic!("no {plural}/{name}"));
        f(obj);
    }

    pub fn remove(&self, plural: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .objects
            .remove(&(plural.into(), NS.into(), name.into()));
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Reasons of the Events published so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        // Creation order (uids are numbered); a repeat folded into a `series` counts each time.
        let mut events = self.all("events");
        events.sort_by_key(|e| {
            e["metadata"]["uid"].as_str().unwrap()[4..]
                .parse::<u64>()
                .unwrap()
        });
        events
            .into_iter()
            .flat_map(|e| {
                let count = e["series"]["count"].as_u64().unwrap_or(1) as usize;
                std::iter::repeat_n(e["reason"].as_str().unwrap().to_owned(), count)
            })
            .collect()
    }

    // ---- stand-ins for the cluster's controllers ---------------------------------------------

    /// Deployment controller and kubelet: every Deployment not named in `unready` gets its pods and
    /// becomes available; one in `unready` gets pods that never turn ready. Pods of a Deployment
    /// scaled down go away unless `linger` is true (still draining).
    pub fn kubelet(&self, unready: &[&str], linger: bool) {
        for d in self.all("deployments") {
            let name = d["metadata"]["name"].as_str().unwrap().to_owned();
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = if unready.contains(&name.as_str()) {
                0
            } else {
                replicas
            };
            let generation = d["metadata"]["generation"].clone();
            self.edit("deployments", &name, |d| {
                d["status"] = json!({
                    "observedGeneration": generation, "replicas": replicas, "readyReplicas": ready,
                    "availableReplicas": ready, "updatedReplicas": replicas,
                });
            });
            let labels = d["spec"]["template"]["metadata"]["labels"].clone();
            let existing: Vec<String> = self
                .names("pods")
                .into_iter()
                .filter(|p| p.starts_with(&format!("{name}-pod-")))
                .collect();
            let have = existing.len() as i64;
            if have < replicas {
                for i in have..replicas {
                    self.put("pods", json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": format!("{name}-pod-{i}"), "labels": labels }, "status": { "phase": "Running" } }));
                }
            } else if have > replicas && !linger {
                for i in replicas..have {
                    self.remove("pods", &format!("{name}-pod-{i}"));
                }
            }
        }
    }

    /// Job controller: finishes a Job, with a pod carrying `message` as its termination message.
    pub fn finish_job(&self, name: &str, succeeded: bool, message: Option<&str>) {
        let (type_, phase) = if succeeded {
            ("Complete", "Succeeded")
        } else {
            ("Failed", "Failed")
        };
        self.edit("jobs", name, |j| {
            j["status"] = json!({ "conditions": [{ "type": type_, "status": "True", "reason": if succeeded { "Completed" } else { "BackoffLimitExceeded" }, "message": "Job has reached the specified backoff limit" }] });
        });
        let terminated = match message {
            Some(m) => json!({ "exitCode": if succeeded { 0 } else { 1 }, "message": m }),
            None => json!({ "exitCode": if succeeded { 0 } else { 1 } }),
        };
        self.put("pods", json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("{name}-x"), "labels": { "batch.kubernetes.io/job-name": name } },
            "status": { "phase": phase, "containerStatuses": [{ "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": { "terminated": terminated } }] },
        }));
    }

    pub fn md(&self, name: &str) -> MutrDeployment {
        serde_json::from_value(
            self.get("mutrdeployments", name)
                .expect("the MutrDeployment exists"),
        )
        .unwrap()
    }

    /// Runs one reconcile of `name` with a fresh read, as the controller would after a watch event.
    pub async fn reconcile(
        &self,
        ctx: &Arc<Context>,
        name: &str,
    ) -> kube::runtime::controller::Action {
        k8s::reconcile(Arc::new(self.md(name)), ctx.clone())
            .await
            .expect("reconcile succeeds")
    }

    /// Selector colour of a Service.
    pub fn selects(&self, service: &str) -> Option<String> {
        self.get("services", service)?["spec"]["selector"]["mutr.io/color"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn replicas(&self, deployment: &str) -> Option<i64> {
        self.get("deployments", deployment)?["spec"]["replicas"].as_i64()
    }

    pub fn status(&self, name: &str) -> Value {
        self.get("mutrdeployments", name).unwrap()["status"].clone()
    }
}

/// A MutrDeployment named `mutr` as a user would apply it.
pub fn mutr_deployment(api_image: &str, auto_promote: bool) -> Value {
    json!({
        "apiVersion": "mutr.io/v1alpha1",
        "kind": "MutrDeployment",
        "metadata": { "name": "mutr", "namespace": NS },
        "spec": {
            "api": { "image": api_image, "replicas": 2 },
            "aiServer": { "image": "ghcr.io/mutr/ai-server:1", "replicas": 1, "model": { "profile": "tiny" } },
            "database": { "name": "mutr-db", "key": "url" },
            "redis": { "name": "mutr-redis", "key": "url" },
            "strategy": { "autoPromote": auto_promote, "scaleDownDelaySeconds": 30 },
        },
    })
}

/// Asserts a condition's status and reason.
#[track_caller]
pub fn assert_condition(status: &Value, type_: &str, expected: &str, reason: &str) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"));
    assert_eq!(
        (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap()),
        (expected, reason),
        "{type_}: {c:#}"
    );
}
