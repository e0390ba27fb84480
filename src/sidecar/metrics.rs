//! The sidecar's counters, rendered in the Prometheus text format for `GET /metrics`:
//! requests by route and status, rejections by reason, and a latency histogram per route.
//! Labels are fixed strings (route templates, reason codes), never request data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::error::Reason;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bucket bound (non-cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(&'static str, u16), u64>,
    rejections: BTreeMap<Reason, u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// Shared by all requests; one short lock per request.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    /// Records one finished request. `route` is the route template (`/v1/ingest/{table}`).
    pub fn observe(
        &self,
        route: &'static str,
        status: u16,
        rejected: Option<Reason>,
        took: Duration,
    ) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.requests.entry((route, status)).or_default() += 1;
        if let Some(reason) = rejected {
            *c.rejections.entry(reason).or_default() += 1;
        }
        let seconds = took.as_secs_f64();
        let histogram = c.latency.entry(route).or_default();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            histogram.buckets[i] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        out.push_str("# HELP pgcloak_sidecar_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE pgcloak_sidecar_requests_total counter\n");
        for ((route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "pgcloak_sidecar_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP pgcloak_sidecar_rejections_total Refused requests by reason.\n");
        out.push_str("# TYPE pgcloak_sidecar_rejections_total counter\n");
        for (reason, n) in &c.rejections {
            let _ = writeln!(
                out,
                "pgcloak_sidecar_rejections_total{{reason=\"{}\"}} {n}",
                reason.as_str()
            );
        }
        out.push_str("# HELP pgcloak_sidecar_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE pgcloak_sidecar_request_duration_seconds histogram\n");
        for (route, h) in &c.latency {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "pgcloak_sidecar_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let name = "pgcloak_sidecar_request_duration_seconds";
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        let route = "/v1/ingest/{table}";
        m.observe(route, 201, None, Duration::from_millis(3));
        m.observe(route, 400, Some(Reason::NotJwe), Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "pgcloak_sidecar_requests_total{route=\"/v1/ingest/{table}\",status=\"201\"} 1"
        ));
        assert!(text.contains("pgcloak_sidecar_rejections_total{reason=\"not_jwe\"} 1"));
        assert!(text.contains("_bucket{route=\"/v1/ingest/{table}\",le=\"0.005\"} 1"));
        assert!(text.contains("_bucket{route=\"/v1/ingest/{table}\",le=\"0.05\"} 2"));
        assert!(text.contains("_count{route=\"/v1/ingest/{table}\"} 2"));
    }
}
