//! `LOG_FORMAT=json`: one JSON object per event, written straight into the
//! line buffer. The shape is what log collectors and gsd's own tests read:
//!
//! ```json
//! {"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","message":"session_close","reason":"drain_complete","span":{"server_id":"pod-0","session_id":"…","name":"session"}}
//! ```
//!
//! The event's fields are flattened beside `message`; the innermost span's
//! fields go under `span`. A span's fields are rendered to JSON once, when
//! the span is created, and copied into every event inside it; nothing is
//! serialised into a value tree or parsed back, which is what made the
//! generic JSON formatter the largest cost of a drain (a quarter of the
//! server's instructions per drained session).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `LOG_FORMAT=json`.
pub struct JsonLines;

/// Renders fields as the inside of a JSON object: `"k":v,"k2":v2`.
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Fields { out: writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut visitor = Fields { out: current.as_writer(), first, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut visitor = Fields { out: writer.by_ref(), first: false, result: Ok(()) };
        event.record(&mut visitor);
        visitor.result?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            match extensions.get::<FormattedFields<N>>() {
                Some(fields) if !fields.fields.is_empty() => write!(writer, "{},", fields.fields)?,
                _ => {}
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field as `"name":value`, comma-separated.
struct Fields<'w> {
    /// The line being written.
    out: Writer<'w>,
    /// No field written yet (no comma before the next one).
    first: bool,
    /// The first write error, reported once the visit is over.
    result: fmt::Result,
}

impl Fields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `r#type` and the like arrive with their raw-identifier prefix.
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = write!(self.out, "{separator}")
            .and_then(|_| string(&mut self.out, name))
            .and_then(|_| self.out.write_char(':'))
            .and_then(|_| value(&mut self.out));
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.field(field, |out| string(out, &value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value` as a JSON string.
fn string(out: &mut Writer<'_>, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => {
                    self.0.write_str(&s[start..i])?;
                    write!(self.0, "\\u{:04x}", c as u32)?;
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            self.0.write_str(escape)?;
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let sink = Sink::default();
        let out = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .fmt_fields(JsonFields)
            .with_writer(move || out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    }

    #[test]
    fn events_are_one_json_object_with_flat_fields_and_the_span() {
        let seen = lines(|| {
            let span = tracing::info_span!("session", server_id = "pod-0", session_id = "ab", n = 3u64);
            let _in = span.enter();
            tracing::warn!(
                kind = "not_json",
                detail = "a \"quoted\"\nline\t\u{1}",
                count = 7u64,
                ok = true,
                delta = -2i64,
                ratio = 0.5,
                "protocol_error"
            );
            span.record("n", 4u64);
        });
        assert_eq!(seen.len(), 1);
        let e = &seen[0];
        assert_eq!(e["level"], "WARN");
        assert_eq!(e["message"], "protocol_error");
        assert_eq!(e["detail"], "a \"quoted\"\nline\t\u{1}");
        assert_eq!((e["count"].as_u64(), e["ok"].as_bool(), e["delta"].as_i64()), (Some(7), Some(true), Some(-2)));
        assert_eq!(e["ratio"].as_f64(), Some(0.5));
        assert_eq!(e["span"]["server_id"], "pod-0");
        assert_eq!(e["span"]["name"], "session");
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn an_event_outside_any_span_has_no_span_and_odd_values_stay_valid_json() {
        let seen = lines(|| {
            tracing::info!(server_message = "{\"message\":\"client_exit\"}", nan = f64::NAN, "server_error_frame");
            tracing::info!("bare");
        });
        assert_eq!(seen[0]["message"], "server_error_frame");
        assert_eq!(seen[0]["server_message"], "{\"message\":\"client_exit\"}");
        assert_eq!(seen[0]["nan"], "NaN");
        assert!(seen[0].get("span").is_none());
        assert_eq!(seen[1]["message"], "bare");
    }
}
