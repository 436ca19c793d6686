//! The Prometheus side every gsd binary shares: the text exposition of a
//! registry for `/metrics`, the constructors of every metric, which also
//! register it (one place, so metrics are made and registered the same way
//! everywhere), the enums that list a label's values, and
//! the exact-series lookup the lab and the tests scrape with.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::names::Metric;

/// Buckets for durations, in seconds: sub-millisecond to a minute. Drains of a
/// healthy session last milliseconds; a stuck one lasts the whole drain
/// timeout (20 s by default), so the upper buckets must reach past it, with
/// one between 10 s and 20 s so a p99 near the deadline is not guessed.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0];

/// Buckets for message counts: one per value from 0 to 10 (the default drain
/// range is 1 to 10), then coarser beyond for configured larger ranges.
pub const COUNT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 50.0, 100.0];

/// A fieldless enum whose variants are the values of one metric label,
/// each written once, beside its variant: `ALL` lists the variants (to
/// create every series at zero before the first event) and `label` names
/// each. The enum derives `Debug`, `Clone`, `Copy`, `PartialEq` and `Eq`.
#[macro_export]
macro_rules! metric_labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $label:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

/// Registers `metric` in `registry` and returns it. Every gsd metric is made
/// by one of the constructors below, once per registry, with gsd's own names
/// and help: a failure is a bug.
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("each metric is registered once per registry");
    metric
}

/// The counter of log lines dropped because stdout did not keep up
/// ([`crate::log_lines_dropped`], one count per process), registered in
/// `registry` as `name`: read at each scrape.
pub fn register_log_lines_dropped(registry: &Registry, name: Metric) {
    struct Dropped(prometheus::core::Desc, Metric);
    const HELP: &str = "Log lines dropped because stdout did not keep up (its reader stopped).";
    impl prometheus::core::Collector for Dropped {
        fn desc(&self) -> Vec<&prometheus::core::Desc> {
            vec![&self.0]
        }

        fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
            let counter = prometheus::IntCounter::new(self.1.name(), HELP).expect("valid counter");
            counter.inc_by(crate::writer::lines_dropped());
            prometheus::core::Collector::collect(&counter)
        }
    }
    let desc = prometheus::core::Desc::new(name.name().to_owned(), HELP.to_owned(), Vec::new(), Default::default())
        .expect("valid counter");
    registry.register(Box::new(Dropped(desc, name))).expect("each metric is registered once per registry");
}

/// A counter, registered in `registry`.
pub fn counter(registry: &Registry, name: Metric, help: &str) -> prometheus::IntCounter {
    registered(registry, prometheus::IntCounter::new(name.name(), help).expect("valid counter"))
}

/// A counter with `labels`, registered in `registry`.
pub fn counter_vec(registry: &Registry, name: Metric, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    let counter =
        prometheus::IntCounterVec::new(prometheus::Opts::new(name.name(), help), labels).expect("valid counter");
    registered(registry, counter)
}

/// The counters of a vector with one label, for the label values known at
/// start-up, each looked up once: `with_label_values` hashes the value and
/// takes the vector's lock, and a session counts every frame it reads or
/// writes. Creating them also makes each value a zero series from the
/// start (increase() and the dashboards see 0, not nothing).
#[derive(Clone)]
pub struct ByLabel {
    known: Vec<(&'static str, prometheus::IntCounter)>,
    vec: prometheus::IntCounterVec,
}

impl ByLabel {
    /// `vec`'s counters for `values` (a handful: they are scanned).
    pub fn new(vec: &prometheus::IntCounterVec, values: impl IntoIterator<Item = &'static str>) -> ByLabel {
        let known = values.into_iter().map(|value| (value, vec.with_label_values(&[value]))).collect();
        ByLabel { known, vec: vec.clone() }
    }

    /// Adds `n` to the counter of `value` (one not known at start-up goes
    /// through the vector).
    pub fn inc_by(&self, value: &str, n: u64) {
        match self.known.iter().find(|(known, _)| *known == value) {
            Some((_, counter)) => counter.inc_by(n),
            None => self.vec.with_label_values(&[value]).inc_by(n),
        }
    }

    /// Adds one to the counter of `value`.
    pub fn inc(&self, value: &str) {
        self.inc_by(value, 1);
    }
}

/// A histogram with `buckets` ([`DURATION_BUCKETS`] or [`COUNT_BUCKETS`]),
/// registered in `registry`.
pub fn histogram(registry: &Registry, name: Metric, help: &str, buckets: &[f64]) -> prometheus::Histogram {
    let opts = prometheus::HistogramOpts::new(name.name(), help).buckets(buckets.to_vec());
    registered(registry, prometheus::Histogram::with_opts(opts).expect("valid histogram"))
}

/// A gauge of whole numbers, registered in `registry`.
pub fn gauge(registry: &Registry, name: Metric, help: &str) -> prometheus::IntGauge {
    registered(registry, prometheus::IntGauge::new(name.name(), help).expect("valid gauge"))
}

/// A gauge of whole numbers with `labels`, registered in `registry`.
pub fn gauge_vec(registry: &Registry, name: Metric, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    registered(
        registry,
        prometheus::IntGaugeVec::new(prometheus::Opts::new(name.name(), help), labels).expect("valid gauge"),
    )
}

/// A gauge of fractional values (a configured duration in seconds, say),
/// registered in `registry`.
pub fn float_gauge(registry: &Registry, name: Metric, help: &str) -> prometheus::Gauge {
    registered(registry, prometheus::Gauge::new(name.name(), help).expect("valid gauge"))
}

/// The registry in the Prometheus text exposition format (version 0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf).expect("the text encoder only fails on a broken writer");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// An HTTP response carrying [`render`] with the exposition content type.
pub fn metrics_response(registry: &Registry) -> Response {
    let mut response = render(registry).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(prometheus::TEXT_FORMAT));
    response
}

/// The value of the sample named exactly `series` (metric name plus labels
/// as exposed, e.g. `x_total{outcome="complete"}`) in a text exposition.
pub fn sample(body: &str, series: impl AsRef<str>) -> Option<f64> {
    let series = series.as_ref();
    body.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_series() {
        let body = "# HELP x y\nx_total{outcome=\"complete\"} 3\nx_total{outcome=\"incomplete\"} 0\ny 1.5\nz NaN\n";
        assert_eq!(sample(body, r#"x_total{outcome="complete"}"#), Some(3.0));
        assert_eq!(sample(body, "y"), Some(1.5));
        assert_eq!(sample(body, "x_total"), None);
        assert!(sample(body, "z").unwrap().is_nan());
    }
}
