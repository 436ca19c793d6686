//! What every gsd binary shares for being observed: log set-up (`LOG_FORMAT`,
//! `RUST_LOG`), OTLP trace export (standard `OTEL_*` variables), the Prometheus
//! text exposition, the histogram buckets, a tiny HTTP GET used by the lab
//! and the tests to scrape `/metrics` and probe `/readyz`, the name of every metric ([`names`]) and the [`app`]
//! frame each binary runs in (runtime, descriptor limit, signals).

pub mod app;
mod http;
mod json;
mod logs;
mod metrics;
pub mod names;
mod writer;

pub use http::{HttpError, http_get, http_post, listen, set_tcp_liveness};
pub use logs::{LogFormat, Telemetry, TelemetryError, exporting, init};
pub use metrics::{
    ByLabel, COUNT_BUCKETS, DURATION_BUCKETS, counter, counter_vec, float_gauge, gauge, gauge_vec, histogram,
    metrics_response, register_log_lines_dropped, render, sample,
};
pub use writer::lines_dropped as log_lines_dropped;
