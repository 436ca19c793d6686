//! `LOG_FORMAT=json`: one JSON object per event, written straight into the
//! line buffer. The shape is what log collectors and gsd's own tests read:
//!
//! ```json
//! {"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","message":"session_close","reason":"drain_complete","span":{"server_id":"pod-0","session_id":"…","name":"session"}}
//! ```
//!
//! The event's fields are flattened beside `message`; the innermost span's
//! fields go under `span`. When spans are exported (OTLP), a line inside a
//! span also carries `trace_id` and `span_id`: the W3C ids (32 and 16 lower
//! hex digits) of the innermost exported span around it, the ones its trace
//! shows in Jaeger or Tempo, so that a drain's lines and its trace join:
//!
//! ```json
//! {"timestamp":"…","level":"INFO","message":"drain_end","trace_id":"5d41c0e2a07f4b6c9e3a1f2b7c8d9e01","span_id":"a1b2c3d4e5f60718","span":{…}}
//! ```
//!
//! A span's fields are rendered to JSON once, when
//! the span is created, and copied into every event inside it; nothing is
//! serialised into a value tree or parsed back, which is what made the
//! generic JSON formatter the largest cost of a drain (a quarter of the
//! server's instructions per drained session).

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The event formatter of `LOG_FORMAT=json`.
pub struct JsonLines {
    /// Where the ids of `trace_id` and `span_id` are looked up: the
    /// dispatcher this formatter runs in, once it is built (see
    /// [`JsonLines::with_trace_ids`]). `None`: no ids, and no look-up, in a
    /// process that exports nothing.
    dispatch: Option<Arc<OnceLock<WeakDispatch>>>,
}

impl JsonLines {
    /// Lines without trace ids.
    pub fn new() -> Self {
        JsonLines { dispatch: None }
    }

    /// Lines with the trace and span ids of the OpenTelemetry layer of the
    /// dispatcher that `slot` will hold. The dispatcher is asked directly,
    /// not through `tracing::dispatcher::get_default`: inside an event's
    /// dispatch that one answers with the no-op dispatcher.
    pub fn with_trace_ids(slot: Arc<OnceLock<WeakDispatch>>) -> Self {
        JsonLines { dispatch: Some(slot) }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines::new()
    }
}

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

/// Writes `at` as RFC 3339 in UTC with microseconds
/// (`2026-01-01T00:00:00.000000Z`). The date and time to the second are
/// worked out once per second per thread and kept: a drain logs thousands
/// of lines a second, and each paid for the calendar arithmetic and the
/// padded formatting of six fields.
fn timestamp(out: &mut impl fmt::Write, at: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        /// The second last written, and its text to the second.
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != second {
        text = to_the_second(second);
        SECOND.set((second, text));
    }
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    let micros = since.subsec_micros();
    let mut digits = *b".000000Z";
    let mut rest = micros;
    for place in (1..7).rev() {
        digits[place] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second, in UTC (proleptic Gregorian
/// calendar, years 1970 to 9999).
fn to_the_second(second: u64) -> [u8; 19] {
    let (days, of_day) = (second / 86_400, second % 86_400);
    // The civil date of a day count: years of 400 (146,097 days) starting
    // on 1 March, so that the leap day ends its year.
    let days = days as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = (year_of_era + era * 400 + i64::from(month <= 2)).clamp(0, 9999) as u64;
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    text
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(event.metadata().level().as_str())?;
        writer.write_char('"')?;
        let mut visitor = Fields { out: writer.by_ref(), first: false, result: Ok(()) };
        event.record(&mut visitor);
        visitor.result?;
        if let Some(span) = ctx.lookup_current() {
            // Before the span's extensions are borrowed below: the lookup
            // reads them too.
            let dispatch = self.dispatch.as_ref().and_then(|slot| slot.get()).and_then(WeakDispatch::upgrade);
            if let Some((trace_id, span_id)) = dispatch.and_then(|dispatch| exported_ids(&span, &dispatch)) {
                write!(writer, ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"")?;
            }
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

/// The trace and span ids of the innermost span around `span` (itself
/// first) that the OpenTelemetry layer exports: gsd's spans are, a
/// library's are filtered out of it (crate::logs), and a line inside one of
/// those gets its gsd parent's ids. `None` when no layer exports any.
fn exported_ids<'a, S>(span: &SpanRef<'a, S>, dispatch: &Dispatch) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    span.scope().find_map(|span| {
        let cx = tracing_opentelemetry::get_otel_context(&span.id(), dispatch)?;
        let otel = cx.span();
        let ids = otel.span_context();
        ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
    })
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
        self.result = self
            .out
            .write_str(separator)
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
        self.field(field, |out| decimal(out, false, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| decimal(out, value < 0, value.unsigned_abs()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| out.write_str(if value { "true" } else { "false" }));
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

/// An integer in decimal: the digits worked out into a buffer and written
/// at once (the formatting machinery costs several times as much, and a
/// line carries several counts).
fn decimal(out: &mut Writer<'_>, negative: bool, mut value: u64) -> fmt::Result {
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    out.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
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
        // Runs of bytes that need no escape are written whole. Every
        // character that needs escaping is ASCII, and no byte of a
        // multi-byte character is, so each cut falls on a character boundary.
        let mut start = 0;
        loop {
            let end = start + plain_prefix(&s.as_bytes()[start..]);
            self.0.write_str(&s[start..end])?;
            let Some(&byte) = s.as_bytes().get(end) else { return Ok(()) };
            match byte {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{:04x}", byte)?,
            }
            start = end + 1;
        }
    }
}

/// Whether JSON escapes `byte` inside a string: `"`, `\` and the control
/// characters.
fn escaped(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// How many bytes at the start of `bytes` need no escape, looked at eight
/// at a time (a log line's text is mostly such bytes).
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Some byte of `word` is below `n` (n at most 0x80): exact, no false
    // positive or negative, for a yes or no over the eight.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH != 0;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte equal to `c` is a zero byte of `word ^ c...c`.
        if below(word, 0x20) || below(word ^ (ONES * u64::from(b'"')), 1) || below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            break;
        }
        at += 8;
    }
    at + bytes[at..].iter().position(|&byte| escaped(byte)).unwrap_or(bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
            .event_format(JsonLines::new())
            .fmt_fields(JsonFields)
            .with_writer(move || out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        parse(&sink)
    }

    fn parse(sink: &Sink) -> Vec<serde_json::Value> {
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    }

    /// The lines of `emit` with an OpenTelemetry layer exporting gsd's spans
    /// only, as crate::logs installs it (the tracer exports nowhere), and
    /// `trace_ids` as given to the formatter.
    fn traced_lines(trace_ids: bool, emit: impl FnOnce()) -> Vec<serde_json::Value> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        let sink = Sink::default();
        let out = sink.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("gsd-test"))
            .with_filter(tracing_subscriber::filter::filter_fn(crate::logs::exported));
        let slot = Arc::new(OnceLock::new());
        let lines = if trace_ids { JsonLines::with_trace_ids(slot.clone()) } else { JsonLines::new() };
        let fmt = tracing_subscriber::fmt::layer()
            .event_format(lines)
            .fmt_fields(JsonFields)
            .with_writer(move || out.clone());
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(otel).with(fmt));
        slot.set(dispatch.downgrade()).unwrap();
        tracing::dispatcher::with_default(&dispatch, emit);
        parse(&sink)
    }

    /// The W3C ids of `span` as the OpenTelemetry layer has them.
    fn otel_ids(span: &tracing::Span) -> (String, String) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = span.context();
        let otel = cx.span();
        let ids = otel.span_context();
        (ids.trace_id().to_string(), ids.span_id().to_string())
    }

    #[test]
    fn a_line_inside_an_exported_span_carries_its_trace_and_span_ids() {
        let mut want = Vec::new();
        let seen = traced_lines(true, || {
            let drain = tracing::info_span!(target: "gsd_server::drain", "drain", sessions = 2u64);
            let session = tracing::info_span!(target: "gsd_server::drain", parent: &drain, "session_drain");
            want.push(otel_ids(&drain));
            want.push(otel_ids(&session));
            drain.in_scope(|| tracing::info!("drain_start"));
            session.in_scope(|| {
                tracing::info!("session_drained");
                // A library's span is not exported: its lines get the ids
                // of the gsd span around it.
                tracing::info_span!(target: "hyper::proto", "read").in_scope(|| tracing::info!("inner"));
            });
            tracing::info!("outside");
        });
        let (drain, session) = (&want[0], &want[1]);
        assert_eq!(drain.0.len(), 32, "{drain:?}");
        assert_eq!(drain.1.len(), 16, "{drain:?}");
        assert_eq!(drain.0, session.0, "one trace");
        assert_ne!(drain.1, session.1);
        let ids = |line: &serde_json::Value| {
            (line["trace_id"].as_str().map(str::to_owned), line["span_id"].as_str().map(str::to_owned))
        };
        assert_eq!(ids(&seen[0]), (Some(drain.0.clone()), Some(drain.1.clone())), "{}", seen[0]);
        assert_eq!(ids(&seen[1]), (Some(session.0.clone()), Some(session.1.clone())), "{}", seen[1]);
        assert_eq!(ids(&seen[2]), (Some(session.0.clone()), Some(session.1.clone())), "{}", seen[2]);
        assert_eq!(seen[2]["span"]["name"], "read", "the span object stays the innermost one");
        assert_eq!(ids(&seen[3]), (None, None), "{}", seen[3]);

        // Not asked (nothing exported): no ids, even with the layer there.
        let plain = traced_lines(false, || {
            tracing::info_span!(target: "gsd_server::drain", "drain").in_scope(|| tracing::info!("drain_start"))
        });
        assert!(plain[0].get("trace_id").is_none() && plain[0].get("span_id").is_none(), "{}", plain[0]);
        assert_eq!(plain[0]["span"]["name"], "drain");
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
    fn integers_at_their_limits_and_escapes_among_multibyte_characters_stay_exact() {
        let seen = lines(|| {
            tracing::info!(
                zero = 0u64,
                max = u64::MAX,
                min = i64::MIN,
                minus_one = -1i64,
                no = false,
                text = "é\"ü\u{1f}\\→\n",
                "limits"
            );
        });
        let e = &seen[0];
        assert_eq!((e["zero"].as_u64(), e["max"].as_u64()), (Some(0), Some(u64::MAX)));
        assert_eq!((e["min"].as_i64(), e["minus_one"].as_i64()), (Some(i64::MIN), Some(-1)));
        assert_eq!(e["no"].as_bool(), Some(false));
        assert_eq!(e["text"], "é\"ü\u{1f}\\→\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds_across_days_months_and_leap_years() {
        let at = |second: u64, micros: u32| {
            let mut text = String::new();
            let instant = std::time::UNIX_EPOCH + std::time::Duration::new(second, micros * 1000);
            timestamp(&mut text, instant).unwrap();
            text
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00.000000Z");
        assert_eq!(at(1_798_761_599, 120_000), "2026-12-31T23:59:59.120000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(4_107_456_000, 0), "2100-02-28T00:00:00.000000Z", "2100 is not a leap year");
        // The cached second is reused only for the same second.
        assert_eq!(at(1_798_761_599, 1), "2026-12-31T23:59:59.000001Z");
        assert_eq!(at(1_798_761_600, 1), "2027-01-01T00:00:00.000001Z");
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

    #[test]
    fn the_plain_prefix_ends_at_the_first_byte_json_escapes_wherever_it_is() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| escaped(b)).unwrap_or(bytes.len());
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert_eq!(plain_prefix(&plain), len);
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = plain.clone();
                    bytes[at] = byte;
                    assert_eq!(plain_prefix(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
        let multibyte = "é→ \u{7f}\u{1f}x".as_bytes();
        assert_eq!(plain_prefix(multibyte), naive(multibyte));
    }
}
