//! A proxy's termination as the clients lived it. gsd's users reach the
//! servers through a proxy (Traefik, Envoy Gateway); when the proxy's own
//! pod is terminated (a rollout of its Deployment), it keeps the open
//! WebSockets for its drain setting and then cuts them. The clients count
//! those sessions as cut, and their loss is unknown; what this module adds
//! is *why*: the delay of every cut after the proxy's termination, read
//! from the clients' JSON logs, set against the proxy's setting.
//!
//! - [`known`]: the proxies gsd knows, their setting and its default;
//! - [`Seen`]: the `session_cut` and `reconnected` lines of the clients'
//!   logs from the termination on;
//! - [`Via`]: the figures (cuts, their delays, the reconnect storm) and
//!   whether the cuts are at the setting, as the report and `--json` show
//!   them; [`crate::rules::judge_proxy`] turns them into a reason.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// A proxy gsd knows by name, and the setting that bounds how long it
/// keeps open WebSockets once its pod is terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownProxy {
    /// Its name, as `--via` gives it.
    pub name: &'static str,
    /// The setting, as the report names it.
    pub setting_name: &'static str,
    /// The setting's default, for a proxy installed without it.
    pub default: Duration,
}

/// Every proxy gsd knows: Traefik's `entryPoints.<name>.transport.lifeCycle
/// .graceTimeOut` and Envoy Gateway's `EnvoyProxy.spec.shutdown.drainTimeout`.
pub const KNOWN: [KnownProxy; 2] = [
    KnownProxy { name: "traefik", setting_name: "Traefik graceTimeOut", default: Duration::from_secs(10) },
    KnownProxy {
        name: "envoy-gateway",
        setting_name: "Envoy Gateway shutdown.drainTimeout",
        default: Duration::from_secs(60),
    },
];

/// The proxy named `name`, if gsd knows it.
pub fn known(name: &str) -> Option<&'static KnownProxy> {
    KNOWN.iter().find(|p| p.name == name)
}

/// How much before its setting a cut still counts as the setting's: the
/// termination instant is taken by whoever terminated the proxy (around
/// `kubectl rollout restart`, or from the pod's deletion), not by the proxy
/// itself, and may be a little late; and a proxy's drain timer is not
/// exact to the millisecond.
pub const BEFORE_SETTING: Duration = Duration::from_millis(500);

/// How much after its setting a cut still counts as the setting's: once the
/// proxy's timer fires it closes its connections one by one, and each
/// client notices its closed TCP connection only when its read returns.
pub const AFTER_SETTING: Duration = Duration::from_secs(2);

/// What the clients' logs show from the proxy's termination on, every log
/// read into one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Each `session_cut`: seconds after the termination, to the microsecond.
    pub cuts: Vec<f64>,
    /// Each `reconnected`: when (Unix seconds) and its `latency_us`.
    pub reconnects: Vec<(f64, u64)>,
    /// `session_resumed` lines: cut sessions a resume took back.
    pub resumed: u64,
}

/// A line of a client's log that is not what it claims to be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct LineError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

impl Seen {
    /// Adds the lines of one client's log (gsd-client with
    /// `LOG_FORMAT=json`: one JSON object per line, `timestamp` and
    /// `message` beside the event's fields) at or after `since` (Unix
    /// seconds). Lines that are not JSON (what `kubectl logs` or a shell
    /// adds) are skipped; a line that starts as JSON and does not parse,
    /// or a `session_cut` or `reconnected` without its time or latency,
    /// is an error naming the line.
    pub fn read(&mut self, log: &str, since: f64) -> Result<(), LineError> {
        for (n, text) in log.lines().enumerate() {
            let text = text.trim();
            if !text.starts_with('{') {
                continue;
            }
            let error = |what: String| LineError { line: n + 1, what };
            let event: Value = serde_json::from_str(text).map_err(|e| error(format!("not JSON: {e}")))?;
            let message = event["message"].as_str().unwrap_or_default();
            if !matches!(message, "session_cut" | "reconnected" | "session_resumed") {
                continue;
            }
            let at = event["timestamp"]
                .as_str()
                .and_then(unix_seconds)
                .ok_or_else(|| error(format!("a {message} line with no RFC 3339 `timestamp`")))?;
            if at < since {
                continue;
            }
            if message == "session_resumed" {
                self.resumed += 1;
            } else if message == "session_cut" {
                // To the microsecond, the log's resolution: what is below
                // is the noise of subtracting two large times.
                self.cuts.push(((at - since) * 1e6).round() / 1e6);
            } else {
                let latency = event["latency_us"]
                    .as_u64()
                    .ok_or_else(|| error("a reconnected line with no `latency_us` count".to_owned()))?;
                self.reconnects.push((at, latency));
            }
        }
        Ok(())
    }
}

/// An RFC 3339 time (`2026-01-01T00:00:00.000123Z`, or with an offset
/// `+02:00`) in Unix seconds; `None` when it is not one.
pub fn unix_seconds(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        if part.bytes().all(|b| b.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    let at = |i: usize, want: &[u8]| bytes.get(i).is_some_and(|b| want.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60: a leap second, which Unix time folds into the next.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..len]).parse().ok()?;
        rest = &after_dot[len..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(text.len() - 5, text.len() - 3)?, digits(text.len() - 2, text.len())?);
            if h > 23 || m > 59 {
                return None;
            }
            let east = (h * 60 + m) * 60;
            if *sign == b'+' { east } else { -east }
        }
        _ => return None,
    };
    let whole = days_since_1970(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(whole as f64 + fraction)
}

/// Unix seconds as RFC 3339 in UTC, to the millisecond
/// (`2026-01-01T00:00:00.250Z`); [`unix_seconds`] reads it back. For the
/// Kubernetes API (a restart's `restartedAt`, a log's `sinceTime`) and the
/// report.
pub fn rfc3339(unix: f64) -> String {
    let millis = (unix * 1000.0).round() as i64;
    let (days, ms) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z", ms % 1000)
}

/// The date `days` after 1970-01-01: the inverse of [`days_since_1970`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Counted in 400-year eras from 0000-03-01, years from March (as in
    // days_since_1970), so that each era has the same 146 097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * from_march + 2) / 5 + 1;
    let month = if from_march < 10 { from_march + 3 } else { from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the Gregorian calendar.
fn days_since_1970(year: i64, month: i64, day: i64) -> i64 {
    // Years counted from March, so that February's leap day ends a year
    // and every month before it in that year has a fixed length.
    let y = if month <= 2 { year - 1 } else { year };
    let from_march = (month + 9) % 12;
    let days_before_year = 365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400);
    // March to the month: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31 days.
    let days_before_month = (153 * from_march + 2) / 5;
    // 719 468: the same count for 1970-01-01.
    days_before_year + days_before_month + day - 1 - 719_468
}

/// The `percent` percentile of ascending `sorted` values by nearest rank:
/// the smallest value with at least `percent`% of the values at or below
/// it (the definition of gsd-lab's report; the median of an even count is
/// the lower middle value). `None` for no value.
pub fn percentile(sorted: &[f64], percent: u64) -> Option<f64> {
    let n = sorted.len() as u64;
    let rank = (percent * n).div_ceil(100).clamp(1, n.max(1));
    sorted.get(rank as usize - 1).copied()
}

/// The most of the ascending times `sorted` (seconds) in any one-second
/// window `[t, t + 1)`.
pub fn peak_per_second(sorted: &[f64]) -> u64 {
    let mut end = 0;
    let mut peak = 0;
    for (start, t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < t + 1.0 {
            end += 1;
        }
        peak = peak.max(end - start);
    }
    peak as u64
}

/// Whether every cut (seconds after the termination) lies within the
/// setting's window, [`BEFORE_SETTING`] before it to [`AFTER_SETTING`]
/// after; false when there is no cut.
pub fn at_setting(cuts: &[f64], setting: Duration) -> bool {
    let (from, to) = window(setting.as_secs_f64());
    !cuts.is_empty() && cuts.iter().all(|d| (from..=to).contains(d))
}

/// The delays, in seconds, that count as the setting's (`setting`, in
/// seconds too).
pub fn window(setting: f64) -> (f64, f64) {
    (setting - BEFORE_SETTING.as_secs_f64(), setting + AFTER_SETTING.as_secs_f64())
}

/// One proxy's termination and what the clients' logs show of it: the
/// report's `via` block and `--json`'s `via` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Via {
    /// The proxy, as `--via` named it.
    pub proxy: String,
    /// Its terminated pod (empty when not given).
    pub pod: String,
    /// When the pod began terminating, Unix seconds.
    pub terminated_at: f64,
    /// The setting that bounds how long it keeps WebSockets open.
    pub setting_name: String,
    /// That setting, in seconds.
    pub setting_seconds: f64,
    /// `session_cut` lines after the termination, every log together.
    pub cuts: u64,
    /// `session_resumed` lines after it: cut sessions taken back by a
    /// resume, whose loss is counted, not unknown.
    pub resumed: u64,
    /// The first cut's delay after the termination, in seconds.
    pub first_after_seconds: Option<f64>,
    /// The median delay (nearest rank).
    pub median_after_seconds: Option<f64>,
    /// The last cut's delay.
    pub last_after_seconds: Option<f64>,
    /// Every cut within the setting's window; `None` with no cut.
    pub at_setting: Option<bool>,
    /// `reconnected` lines after the termination.
    pub reconnects: u64,
    /// The most reconnects in any one second.
    pub peak_per_second: u64,
    /// Reconnect latency, 50th percentile, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// The slowest reconnect.
    pub max_ms: Option<f64>,
}

impl Via {
    /// The figures of `seen`, the logs read from `terminated_at` on.
    pub fn new(proxy: &str, pod: &str, terminated_at: f64, setting_name: &str, setting: Duration, seen: &Seen) -> Via {
        let mut cuts = seen.cuts.clone();
        cuts.sort_by(f64::total_cmp);
        let mut times: Vec<f64> = seen.reconnects.iter().map(|(at, _)| *at).collect();
        times.sort_by(f64::total_cmp);
        let mut latencies: Vec<f64> = seen.reconnects.iter().map(|(_, us)| *us as f64 / 1000.0).collect();
        latencies.sort_by(f64::total_cmp);
        Via {
            proxy: proxy.to_owned(),
            pod: pod.to_owned(),
            terminated_at,
            setting_name: setting_name.to_owned(),
            setting_seconds: setting.as_secs_f64(),
            cuts: cuts.len() as u64,
            resumed: seen.resumed,
            first_after_seconds: cuts.first().copied(),
            median_after_seconds: percentile(&cuts, 50),
            last_after_seconds: cuts.last().copied(),
            at_setting: (!cuts.is_empty()).then(|| at_setting(&cuts, setting)),
            reconnects: times.len() as u64,
            peak_per_second: peak_per_second(&times),
            p50_ms: percentile(&latencies, 50),
            p99_ms: percentile(&latencies, 99),
            max_ms: latencies.last().copied(),
        }
    }

    /// Cuts no resume took back: their loss is unknown.
    pub fn unknown_cuts(&self) -> u64 {
        self.cuts.saturating_sub(self.resumed)
    }

    /// The setting as the report says it: `Traefik graceTimeOut (10s)`.
    pub fn setting(&self) -> String {
        format!("{} ({})", self.setting_name, seconds(self.setting_seconds))
    }
}

/// Seconds as a setting is written: `10s`, `1.5s`.
pub fn seconds(value: f64) -> String {
    format!("{value}s")
}

/// Delays from `first` to `last` seconds, to a tenth: `10.0–10.4`, or
/// `10.0` when both read the same.
pub fn span(first: f64, last: f64) -> String {
    let (first, last) = (format!("{first:.1}"), format!("{last:.1}"));
    if first == last { first } else { format!("{first}–{last}") }
}

/// `n` things: `1 session`, `12 sessions`.
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Reason;

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: f64 = 1_767_225_600.0;

    fn line(message: &str, timestamp: &str, extra: &str) -> String {
        format!(r#"{{"timestamp":"{timestamp}","level":"INFO","message":"{message}"{extra}}}"#)
    }

    #[test]
    fn rfc_3339_times_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_seconds("2026-01-01T00:00:00.000000Z"), Some(NEW_YEAR));
        assert_eq!(unix_seconds("2024-02-29T12:00:00Z"), Some(1_709_208_000.0));
        assert_eq!(unix_seconds("2026-01-01T02:00:00+02:00"), Some(NEW_YEAR));
        assert_eq!(unix_seconds("2025-12-31T23:00:00-01:00"), Some(NEW_YEAR));
        let t = unix_seconds("2026-01-01T00:00:10.123456789Z").unwrap();
        assert!((t - NEW_YEAR - 10.123_456_789).abs() < 1e-6, "{t}");
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "2026-01-01T00:00:00Zjunk",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unix_seconds_write_as_rfc_3339_and_read_back() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(NEW_YEAR + 0.25), "2026-01-01T00:00:00.250Z");
        assert_eq!(rfc3339(NEW_YEAR - 0.001), "2025-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(1_709_208_000.0), "2024-02-29T12:00:00.000Z");
        assert_eq!(rfc3339(951_825_600.0), "2000-02-29T12:00:00.000Z", "a leap day of a 400th year");
        // Every day over eight years (two leap days, a century's turn
        // within reach), and a time of day, read back to the millisecond.
        for day in 0..(8 * 366) {
            let t = 946_684_800.0 + f64::from(day) * 86_400.0 + 45_296.789;
            let text = rfc3339(t);
            let back = unix_seconds(&text).unwrap_or_else(|| panic!("{text} does not read back"));
            assert!((back - t).abs() < 1e-3, "{text}: {back} for {t}");
        }
    }

    #[test]
    fn a_log_gives_each_cut_its_delay_and_each_reconnect_its_time_from_the_termination_on() {
        let since = NEW_YEAR + 5.0;
        let log = [
            "Defaulted container \"client\" out of: client, init".to_owned(),
            line("session_cut", "2026-01-01T00:00:04.900000Z", r#","reason":"error""#),
            line("session_cut", "2026-01-01T00:00:15.000000Z", r#","reason":"error""#),
            String::new(),
            line("reconnected", "2026-01-01T00:00:15.250000Z", r#","from":"a","to":"b","latency_us":250000"#),
            line("session_cut", "2026-01-01T00:00:15.400000Z", r#","reason":"timeout""#),
            line("session_resumed", "2026-01-01T00:00:04.950000Z", r#","user":1"#),
            line("session_resumed", "2026-01-01T00:00:15.500000Z", r#","user":2"#),
            line("drain_end", "not a time", ""),
            "  ".to_owned() + &line("reconnected", "2026-01-01T00:00:16.000000Z", r#","latency_us":1500"#),
        ]
        .join("\n");
        let mut seen = Seen::default();
        seen.read(&log, since).unwrap();
        assert_eq!(seen.cuts.len(), 2, "the cut before the termination is not its: {seen:?}");
        assert_eq!(seen.cuts, [10.0, 10.4], "to the microsecond");
        assert_eq!(seen.resumed, 1, "the resume before the termination is not its either");
        assert_eq!(seen.reconnects.iter().map(|r| r.1).collect::<Vec<_>>(), [250_000, 1500]);
        assert!((seen.reconnects[0].0 - (NEW_YEAR + 15.25)).abs() < 1e-6);
        // A second log adds to the first.
        seen.read(&line("session_cut", "2026-01-01T00:00:16Z", ""), since).unwrap();
        assert_eq!(seen.cuts.len(), 3);
    }

    #[test]
    fn a_line_that_claims_to_be_json_and_is_not_is_named() {
        let mut seen = Seen::default();
        let cut_short = format!("{}\n{{\"timestamp\":\"2026-01-01T00:00:15Z\",\"mess", line("x", "t", ""));
        let e = seen.read(&cut_short, 0.0).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("line 2: not JSON: "), "{e}");
        let untimed = line("session_cut", "yesterday", "");
        assert_eq!(
            seen.read(&untimed, 0.0).unwrap_err().to_string(),
            "line 1: a session_cut line with no RFC 3339 `timestamp`"
        );
        let no_latency = line("reconnected", "2026-01-01T00:00:15Z", r#","latency_us":"fast""#);
        assert_eq!(
            seen.read(&no_latency, 0.0).unwrap_err().to_string(),
            "line 1: a reconnected line with no `latency_us` count"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(
            (percentile(&ten, 50), percentile(&ten, 99), percentile(&ten, 100)),
            (Some(5.0), Some(10.0), Some(10.0))
        );
        assert_eq!(
            (percentile(&ten, 0), percentile(&ten, 10), percentile(&ten, 11)),
            (Some(1.0), Some(1.0), Some(2.0))
        );
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99), Some(99.0));
        assert_eq!((percentile(&[7.0], 50), percentile(&[], 50)), (Some(7.0), None));
    }

    #[test]
    fn the_peak_is_the_most_in_any_one_second() {
        assert_eq!(peak_per_second(&[]), 0);
        assert_eq!(peak_per_second(&[3.0]), 1);
        assert_eq!(peak_per_second(&[0.0, 0.5, 0.99, 1.0, 1.2, 1.9, 5.0]), 4, "[0.99, 1.99) holds 4");
        assert_eq!(peak_per_second(&[0.0, 1.0, 2.0, 3.0]), 1, "a window is half-open");
    }

    #[test]
    fn the_match_holds_from_half_a_second_before_the_setting_to_two_after() {
        let ten = Duration::from_secs(10);
        assert_eq!(window(10.0), (9.5, 12.0));
        assert!(at_setting(&[9.5, 10.0, 12.0], ten), "both edges count");
        assert!(!at_setting(&[9.49, 10.0], ten));
        assert!(!at_setting(&[10.0, 12.01], ten));
        assert!(!at_setting(&[], ten), "nothing cut is no match");
    }

    #[test]
    fn the_figures_of_a_proxys_termination() {
        let seen = Seen {
            cuts: vec![10.4, 10.0, 10.1],
            reconnects: vec![(NEW_YEAR + 10.5, 3000), (NEW_YEAR + 10.2, 1000), (NEW_YEAR + 12.0, 9000)],
            resumed: 2,
        };
        let via = Via::new("traefik", "traefik-abc", NEW_YEAR, "Traefik graceTimeOut", Duration::from_secs(10), &seen);
        assert_eq!((via.cuts, via.first_after_seconds, via.median_after_seconds), (3, Some(10.0), Some(10.1)));
        assert_eq!((via.last_after_seconds, via.at_setting), (Some(10.4), Some(true)));
        assert_eq!((via.reconnects, via.peak_per_second), (3, 2));
        assert_eq!((via.resumed, via.unknown_cuts()), (2, 1));
        assert_eq!((via.p50_ms, via.p99_ms, via.max_ms), (Some(3.0), Some(9.0), Some(9.0)));
        assert_eq!(via.setting(), "Traefik graceTimeOut (10s)");
        let none = Via::new("x", "", 0.0, "relay drain", Duration::from_millis(1500), &Seen::default());
        assert_eq!((none.cuts, none.at_setting, none.first_after_seconds, none.p50_ms), (0, None, None, None));
        assert_eq!(none.setting(), "relay drain (1.5s)");
    }

    #[test]
    fn a_cut_by_the_proxy_says_when_and_which_setting() {
        let reason = |sessions, first, last, setting_seconds, at_setting| Reason::CutByProxy {
            proxy: "traefik".into(),
            pod: "traefik-abc".into(),
            sessions,
            first_after_seconds: first,
            last_after_seconds: last,
            setting_name: "Traefik graceTimeOut".into(),
            setting_seconds,
            at_setting,
        };
        assert_eq!(
            reason(12, 10.01, 10.04, 10.0, true).to_string(),
            "12 sessions cut 10.0 s after the proxy's SIGTERM = Traefik graceTimeOut (10s)"
        );
        assert_eq!(
            reason(12, 10.0, 10.4, 10.0, true).to_string(),
            "12 sessions cut 10.0–10.4 s after the proxy's SIGTERM = Traefik graceTimeOut (10s)"
        );
        assert_eq!(
            reason(12, 3.1, 3.4, 10.0, false).to_string(),
            "12 sessions cut 3.1–3.4 s after the proxy's SIGTERM, not at Traefik graceTimeOut (10s): something else \
             cut them"
        );
        assert_eq!(
            reason(1, 1.5, 1.5, 1.5, true).to_string(),
            "1 session cut 1.5 s after the proxy's SIGTERM = Traefik graceTimeOut (1.5s)"
        );
    }

    #[test]
    fn known_proxies_carry_their_setting_and_its_default() {
        let traefik = known("traefik").unwrap();
        assert_eq!((traefik.setting_name, traefik.default), ("Traefik graceTimeOut", Duration::from_secs(10)));
        let envoy = known("envoy-gateway").unwrap();
        assert_eq!(
            (envoy.setting_name, envoy.default),
            ("Envoy Gateway shutdown.drainTimeout", Duration::from_secs(60))
        );
        assert_eq!(known("Traefik"), None, "names are exact");
        assert_eq!(known("haproxy"), None);
    }
}
