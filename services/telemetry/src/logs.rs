//! Log and trace set-up: `LOG_FORMAT` (pretty or JSON lines), `RUST_LOG`,
//! and OTLP export of gsd's spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with the session's fields as a
    /// prefix: what `kubectl logs` shows best.
    Pretty,
    /// One JSON object per line, for log collectors and for the tests.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid filter: {0}")]
    Filter(String),
    #[error("OTLP exporter set-up failed ({variable}={endpoint}): {detail}")]
    Otlp { variable: &'static str, endpoint: String, detail: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Handle on the installed telemetry. Call [`Telemetry::shutdown`] before exit
/// so that the last spans (the drain) leave the process.
#[must_use = "dropping the handle without shutdown() may lose the last spans"]
pub struct Telemetry {
    /// Present only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// variant) is set: without it nothing is exported and nothing is said.
    provider: Option<SdkTracerProvider>,
}

/// The OTLP endpoint variable and its value, if any is set and non-empty.
fn otlp_endpoint() -> Option<(&'static str, String)> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name, value)))
        .find(|(_, value)| !value.trim().is_empty())
}

/// Installs the global tracing subscriber: the log layer in `format`, filtered
/// by `RUST_LOG` (default `info`), and, when an OTLP endpoint is configured,
/// an OpenTelemetry layer exporting spans over OTLP/HTTP (protobuf).
///
/// `default_service` names the service when neither `OTEL_SERVICE_NAME` nor a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` does; both of those are read by
/// the SDK itself.
///
/// Call it before the tokio runtime starts: the OTLP exporter's blocking HTTP
/// client runs on its own thread and must not be created inside the runtime.
pub fn init(format: LogFormat, default_service: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| TelemetryError::Filter(format!("{spec:?}: {e}")))?
        }
        _ => EnvFilter::new("info"),
    };
    // Before the log layer: its JSON lines carry the exported spans' ids.
    let provider = match otlp_endpoint() {
        None => None,
        Some((variable, endpoint)) => Some(otlp_provider(default_service).map_err(|detail| TelemetryError::Otlp {
            variable,
            endpoint,
            detail,
        })?),
    };
    // The JSON lines' trace ids are looked up in the dispatcher built below.
    let slot = std::sync::Arc::new(std::sync::OnceLock::new());
    let fmt_layer = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(crate::writer::LogWriter::stdout())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(crate::writer::LogWriter::stdout())
            .event_format(if provider.is_some() {
                crate::json::JsonLines::with_trace_ids(slot.clone())
            } else {
                crate::json::JsonLines::new()
            })
            .fmt_fields(crate::json::JsonFields)
            .boxed(),
    };
    let otel_layer = provider.as_ref().map(|provider| {
        // Only gsd's own spans go to the collector, never the HTTP stack's.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(default_service))
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    });

    let dispatch =
        tracing::Dispatch::new(tracing_subscriber::registry().with(otel_layer).with(fmt_layer.with_filter(filter)));
    let _ = slot.set(dispatch.downgrade());
    dispatch.try_init().map_err(|_| TelemetryError::AlreadyInstalled)?;
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    Ok(Telemetry { provider })
}

/// Set once [`init`] has installed an OTLP exporter.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans over OTLP: code may skip spans made
/// only for the trace (one per drained session) when nothing exports them.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether a span or event is exported over OTLP: gsd's own, never the
/// HTTP stack's.
pub(crate) fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("gsd")
}

fn otlp_provider(default_service: &'static str) -> Result<SdkTracerProvider, String> {
    // reqwest is built with rustls in this workspace (gsd-verdict's
    // HTTPS) and panics building a client with no crypto provider: give it
    // ring, the one compiled in, unless one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| e.to_string())?;
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attrs| attrs.split(',').any(|kv| kv.trim_start().starts_with("service.name=")));
    let mut resource = Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(default_service);
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter, waiting at most `timeout`. Blocking:
    /// call it outside the async runtime (after it has finished), as the
    /// binaries' `main` does.
    pub fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(timeout) {
                eprintln!("gsd: flushing traces failed: {e}");
            }
        }
    }
}
