//! Prometheus metrics, served at `{prefix}/metrics`. Each server owns its registry (no global
//! state), and each rule's handles are created once, so counting a request is a few atomic
//! operations.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Invocation latency buckets, in seconds: 1 ms to 30 s (HTTP API's timeout).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The rule label of requests that matched no rule.
const NO_RULE: &str = "-";
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rule: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServedLabels {
    rule: String,
    by: &'static str,
}

/// Which function answers a rule's requests: its own, or its `overflow` on AWS.
const SERVED_BY: [&str; 2] = ["local", "overflow"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

type LatencyFamily = Family<RuleLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    served: Family<ServedLabels, Counter>,
    latency: LatencyFamily,
    errors: Family<ErrorLabels, Counter>,
    in_flight: Family<RuleLabels, Gauge>,
    queued: Family<RuleLabels, Gauge>,
    running: Family<RuleLabels, Gauge>,
    connections: Gauge,
}

/// One rule's handles, shared with the registry.
#[derive(Clone)]
pub struct RuleMetrics {
    requests: [Counter; 5],
    served: [Counter; 2],
    latency: Histogram,
    in_flight: Gauge,
    queued: Gauge,
    running: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let served = Family::<ServedLabels, Counter>::default();
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let errors = Family::<ErrorLabels, Counter>::default();
        let in_flight = Family::<RuleLabels, Gauge>::default();
        let queued = Family::<RuleLabels, Gauge>::default();
        let running = Family::<RuleLabels, Gauge>::default();
        let connections = Gauge::default();
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "lrp_requests",
            "Requests routed to a rule, by rule and status class",
            requests.clone(),
        );
        registry.register(
            "lrp_served",
            "Requests a rule's function answered, by rule and by whom: its own (local) or its overflow on AWS",
            served.clone(),
        );
        registry.register(
            "lrp_invocation_duration_seconds",
            "Time from receiving a request to having the function's answer, by rule",
            latency.clone(),
        );
        registry.register(
            "lrp_errors",
            "Responses lrp made itself, by the kind sent in x-lrp-error",
            errors.clone(),
        );
        registry.register(
            "lrp_in_flight_invocations",
            "Invocations running now, by rule",
            in_flight.clone(),
        );
        registry.register(
            "lrp_queued_invocations",
            "Requests admitted that do not run yet (reading their body or waiting for a slot), by rule",
            queued.clone(),
        );
        registry.register(
            "lrp_running_invocations",
            "Invocations holding a concurrency slot, abandoned ones that still run included, by rule",
            running.clone(),
        );
        registry.register(
            "lrp_open_connections",
            "Client connections open now",
            connections.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            start_time,
        );
        Metrics {
            registry,
            requests,
            served,
            latency,
            errors,
            in_flight,
            queued,
            running,
            connections,
        }
    }

    /// Counts a client connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> InFlight {
        self.connections.inc();
        InFlight(self.connections.clone())
    }

    /// The handles for `rule`; a rule kept across a reload keeps counting where it was.
    pub fn rule(&self, rule: &str) -> RuleMetrics {
        let labels = RuleLabels {
            rule: rule.to_owned(),
        };
        RuleMetrics {
            requests: STATUS_CLASSES.map(|status| {
                self.requests.get_or_create_owned(&RequestLabels {
                    rule: rule.to_owned(),
                    status,
                })
            }),
            served: SERVED_BY.map(|by| {
                self.served.get_or_create_owned(&ServedLabels {
                    rule: rule.to_owned(),
                    by,
                })
            }),
            latency: self.latency.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            queued: self.queued.get_or_create_owned(&labels),
            running: self.running.get_or_create_owned(&labels),
        }
    }

    /// A request no rule matched.
    pub fn unrouted(&self, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                rule: NO_RULE.to_owned(),
                status: status_class(status),
            })
            .inc();
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleMetrics {
    /// A request answered with `status` after `took`, by `served_by` (`local` or `overflow`).
    pub fn finished(&self, status: StatusCode, took: Duration, served_by: &str) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.served[usize::from(served_by == SERVED_BY[1])].inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts an invocation as running until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The limiter's counts, read when `/metrics` is asked for.
    pub fn set_admission(&self, queued: usize, running: usize) {
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
    }
}

/// Holds one count of a gauge; dropping it gives the count back.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn status_class(status: StatusCode) -> &'static str {
    STATUS_CLASSES[usize::from(status.as_u16() / 100).clamp(1, 5) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_errors_and_gauges_are_exposed() {
        let metrics = Metrics::new();
        let rule = metrics.rule("api.example.com");
        rule.finished(StatusCode::OK, Duration::from_millis(3), "local");
        rule.finished(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(40),
            "overflow",
        );
        metrics.unrouted(StatusCode::NOT_FOUND);
        metrics.error("timeout");
        let running = rule.in_flight();
        rule.set_admission(2, 1);
        let connection = metrics.connection_opened();
        let text = metrics.encode();
        for line in [
            r#"lrp_requests_total{rule="api.example.com",status="2xx"} 1"#,
            r#"lrp_requests_total{rule="api.example.com",status="5xx"} 1"#,
            r#"lrp_requests_total{rule="-",status="4xx"} 1"#,
            r#"lrp_errors_total{kind="timeout"} 1"#,
            r#"lrp_in_flight_invocations{rule="api.example.com"} 1"#,
            r#"lrp_queued_invocations{rule="api.example.com"} 2"#,
            r#"lrp_running_invocations{rule="api.example.com"} 1"#,
            r#"lrp_served_total{rule="api.example.com",by="local"} 1"#,
            r#"lrp_served_total{rule="api.example.com",by="overflow"} 1"#,
            "lrp_open_connections 1",
            r#"lrp_invocation_duration_seconds_count{rule="api.example.com"} 2"#,
            r#"lrp_invocation_duration_seconds_bucket{le="0.005",rule="api.example.com"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("process_start_time_seconds "), "{text}");
        drop((running, connection));
        let text = metrics.encode();
        assert!(text.contains(r#"lrp_in_flight_invocations{rule="api.example.com"} 0"#));
        assert!(text.contains("lrp_open_connections 0"), "{text}");
        // The same rule after a reload shares the counters.
        metrics
            .rule("api.example.com")
            .finished(StatusCode::OK, Duration::ZERO, "local");
        assert!(
            metrics
                .encode()
                .contains(r#"lrp_requests_total{rule="api.example.com",status="2xx"} 2"#)
        );
    }
}
