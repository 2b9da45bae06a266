//! Prometheus metrics, served at `/metrics` in the text exposition format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of API request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/api/v1/workspaces/{ws}`), or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of transition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `create`, `start`, `stop`, `restart`, `delete`.
    pub kind: String,
}

/// Labels of the workspace gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Workspace state.
    pub state: String,
}

/// Labels of preview (proxied port) request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PreviewLabels {
    /// `path` or `subdomain`.
    pub form: String,
    /// HTTP status code answered (101 for upgrades).
    pub status: u16,
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// API requests by route, method, status.
    pub requests: Family<RequestLabels, Counter>,
    /// API request latency by route and method.
    pub request_seconds: Family<RequestLabels, Histogram>,
    /// Transition (job) durations by kind; `create` is create-to-running.
    pub transition_seconds: Family<TransitionLabels, Histogram>,
    /// Failed transitions by kind.
    pub transition_failures: Family<TransitionLabels, Counter>,
    /// Exec'd commands.
    pub execs: Counter,
    /// Audit records appended.
    pub audit_records: Counter,
    /// Workspaces by state (refreshed at each scrape).
    pub workspaces: Family<StateLabels, Gauge>,
    /// Requests through preview URLs, by form and status.
    pub preview_requests: Family<PreviewLabels, Counter>,
    /// Port-forward connections (`warren port-forward`) opened.
    pub port_forwards: Counter,
    /// Lifecycle-policy passes: how long each took.
    pub policy_pass_seconds: Histogram,
    /// Lifecycle-policy actions started, by action and reason.
    pub policy_actions: Family<PolicyLabels, Counter>,
    /// Webhook delivery attempts by outcome (`delivered`, `retried`, `failed`).
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
}

/// Labels of [`Metrics::webhook_deliveries`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How it ended.
    pub outcome: String,
}

/// Labels of [`Metrics::policy_actions`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `stop`, `delete`, `start`, `fail_start` or `warn`.
    pub action: String,
    /// Why.
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00025, 2.0, 17,
    ))
}

fn transition_histogram() -> Histogram {
    // 10 ms .. ~20 min.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("warren");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let transition_seconds = Family::<TransitionLabels, Histogram>::new_with_constructor(
            transition_histogram as fn() -> Histogram,
        );
        let transition_failures = Family::<TransitionLabels, Counter>::default();
        let execs = Counter::default();
        let audit_records = Counter::default();
        let workspaces = Family::<StateLabels, Gauge>::default();
        registry.register(
            "api_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency by route, method and status",
            request_seconds.clone(),
        );
        registry.register(
            "transition_duration_seconds",
            "Workspace transition durations by kind (create is create-to-running)",
            transition_seconds.clone(),
        );
        registry.register(
            "transition_failures",
            "Failed workspace transitions by kind",
            transition_failures.clone(),
        );
        registry.register("execs", "Commands executed in workspaces", execs.clone());
        registry.register(
            "audit_records",
            "Audit records appended",
            audit_records.clone(),
        );
        registry.register("workspaces", "Workspaces by state", workspaces.clone());
        let preview_requests = Family::<PreviewLabels, Counter>::default();
        registry.register(
            "preview_requests",
            "Requests through workspace preview URLs by form and status",
            preview_requests.clone(),
        );
        let port_forwards = Counter::default();
        registry.register(
            "port_forwards",
            "Port-forward connections opened",
            port_forwards.clone(),
        );
        let policy_pass_seconds = latency_histogram();
        registry.register(
            "policy_pass_duration_seconds",
            "Duration of a lifecycle-policy pass over every workspace",
            policy_pass_seconds.clone(),
        );
        let policy_actions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_actions",
            "Lifecycle-policy actions started, by action and reason",
            policy_actions.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retried, failed)",
            webhook_deliveries.clone(),
        );
        Metrics {
            webhook_deliveries,
            policy_pass_seconds,
            policy_actions,
            registry,
            requests,
            request_seconds,
            transition_seconds,
            transition_failures,
            execs,
            audit_records,
            workspaces,
            preview_requests,
            port_forwards,
        }
    }
}

impl Metrics {
    /// Records one API request.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let l = RequestLabels {
            route: route.to_string(),
            method: method.to_string(),
            status,
        };
        self.requests.get_or_create(&l).inc();
        self.request_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// Records a webhook delivery attempt's outcome.
    pub fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a lifecycle-policy pass.
    pub fn policy_pass(&self, took: Duration, r: &crate::governor::PassReport) {
        use warren_api::policy::Verdict;
        self.policy_pass_seconds.observe(took.as_secs_f64());
        let acted = r.acted.iter().map(|(_, v)| (false, v));
        for (warning, v) in acted.chain(r.warned.iter().map(|(_, v)| (true, v))) {
            let (action, reason) = match v {
                Verdict::Stop(r) => ("stop", r),
                Verdict::Delete(r) => ("delete", r),
                Verdict::Start(r) => ("start", r),
                Verdict::FailStart(r) => ("fail_start", r),
            };
            let action = if warning { "warn" } else { action };
            self.policy_actions
                .get_or_create(&PolicyLabels {
                    action: action.to_owned(),
                    reason: reason.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Records a finished transition.
    pub fn transition(&self, kind: &str, took: Duration, ok: bool) {
        let l = TransitionLabels {
            kind: kind.to_string(),
        };
        self.transition_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if !ok {
            self.transition_failures.get_or_create(&l).inc();
        }
    }

    /// The exposition text, with the workspace gauge set from `by_state`.
    pub fn render(&self, by_state: &[(String, i64)]) -> String {
        self.workspaces.clear();
        for (state, n) in by_state {
            self.workspaces
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*n);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::default();
        m.request("/api/v1/workspaces", "GET", 200, Duration::from_millis(2));
        m.transition("create", Duration::from_secs(1), true);
        m.transition("start", Duration::from_secs(1), false);
        m.execs.inc();
        let text = m.render(&[("running".into(), 3)]);
        assert!(text.contains(r#"warren_api_requests_total{route="/api/v1/workspaces",method="GET",status="200"} 1"#), "{text}");
        assert!(
            text.contains(r#"warren_workspaces{state="running"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"warren_transition_failures_total{kind="start"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"warren_transition_duration_seconds_count{kind="create"} 1"#),
            "{text}"
        );
        assert!(text.contains("warren_execs_total 1"), "{text}");
    }
}
