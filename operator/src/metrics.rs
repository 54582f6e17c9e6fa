//! Prometheus metrics of the operator, on a recorder owned by the [`Metrics`] value (not a global one),
//! so that tests and several controllers in one process each see their own counts.

use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters and histograms of the reconciler.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    reconciles: Counter,
    errors: Counter,
    duration: Histogram,
    switchovers_started: Counter,
    switchovers_completed: Counter,
    _recorder: std::sync::Arc<PrometheusRecorder>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    #[must_use]
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let reconciles = counter("mutr_operator_reconciles_total", vec![]);
        let errors = counter("mutr_operator_reconcile_errors_total", vec![]);
        let switchovers_started = counter(
            "mutr_operator_switchovers_total",
            vec![Label::new("event", "started")],
        );
        let switchovers_completed = counter(
            "mutr_operator_switchovers_total",
            vec![Label::new("event", "completed")],
        );
        let duration = recorder.register_histogram(
            &Key::from_name("mutr_operator_reconcile_duration_seconds"),
            &METADATA,
        );
        recorder.describe_counter(
            "mutr_operator_reconciles_total".into(),
            None,
            "Reconciles run".into(),
        );
        recorder.describe_counter(
            "mutr_operator_reconcile_errors_total".into(),
            None,
            "Reconciles that failed".into(),
        );
        recorder.describe_counter(
            "mutr_operator_switchovers_total".into(),
            None,
            "Switchovers started and completed".into(),
        );
        recorder.describe_histogram(
            "mutr_operator_reconcile_duration_seconds".into(),
            Some(metrics::Unit::Seconds),
            "Duration of one reconcile".into(),
        );
        Self {
            handle: recorder.handle(),
            reconciles,
            errors,
            duration,
            switchovers_started,
            switchovers_completed,
            _recorder: std::sync::Arc::new(recorder),
        }
    }

    /// Counts a reconcile and its duration.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.increment(1);
        self.duration.record(took.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn failed(&self) {
        self.errors.increment(1);
    }

    /// Counts a switchover that started.
    pub fn switchover_started(&self) {
        self.switchovers_started.increment(1);
    }

    /// Counts a switchover that completed.
    pub fn switchover_completed(&self) {
        self.switchovers_completed.increment(1);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
