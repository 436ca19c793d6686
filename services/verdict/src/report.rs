//! The verdict's words: the outcome lines at the end of a text report, the
//! reasons as JSON (each with its numbers and its sentence), and JUnit XML
//! for CI systems that gate on test reports. The tables above the outcome
//! belong to each collector (a lab run and a cluster run show different
//! rows); what passes and why is said here only.

use serde::Serialize;

use crate::proxy::Via;
use crate::rules::Reason;

/// The last lines of a report: PASS, or FAIL with every reason.
/// `unknown_cuts`: sessions cut in partitions, whose loss no one can count;
/// a PASS says so instead of claiming nothing was lost.
pub fn render_outcome(reasons: &[Reason], unknown_cuts: u64, elapsed_seconds: f64) -> String {
    if !reasons.is_empty() {
        let mut out = "FAIL:\n".to_owned();
        for reason in reasons {
            out += &format!("  - {reason}\n");
        }
        return out;
    }
    if unknown_cuts > 0 {
        return format!(
            "PASS: every user recovered on another pod within the liveness bound; nothing known was lost, \
             and loss in the {unknown_cuts} cut session(s) is unknown ({elapsed_seconds:.1}s)\n"
        );
    }
    format!("PASS: every drain completed and nothing was lost ({elapsed_seconds:.1}s)\n")
}

/// The proxy's block of a report: its termination's cuts and reconnects,
/// as the clients' logs show them.
///
/// ```text
/// via traefik (pod traefik-abc, Traefik graceTimeOut 10s): 12 sessions cut, 12 resumed; 12 reconnects after its termination
///     cuts 10.0–10.4 s after its termination (median 10.1 s): at the setting (9.5–12.0 s)
///     reconnects: at most 12 in one second; latency p50 3.2 ms, p99 9.9 ms, max 10.0 ms
/// ```
pub fn render_via(via: &Via) -> String {
    let pod = if via.pod.is_empty() { String::new() } else { format!("pod {}, ", via.pod) };
    let mut out = format!(
        "via {} ({pod}{} {}): {} cut{}; {} after its termination\n",
        via.proxy,
        via.setting_name,
        crate::proxy::seconds(via.setting_seconds),
        crate::proxy::count(via.cuts, "session"),
        if via.cuts > 0 { format!(", {} resumed", via.resumed) } else { String::new() },
        crate::proxy::count(via.reconnects, "reconnect"),
    );
    if let (Some(first), Some(median), Some(last)) =
        (via.first_after_seconds, via.median_after_seconds, via.last_after_seconds)
    {
        let (from, to) = crate::proxy::window(via.setting_seconds);
        let at = if via.at_setting == Some(true) { "at the setting" } else { "not at the setting" };
        let span = crate::proxy::span(first, last);
        out += &format!("    cuts {span} s after its termination (median {median:.1} s): {at} ({from:.1}–{to:.1} s)\n");
    }
    if let (Some(p50), Some(p99), Some(max)) = (via.p50_ms, via.p99_ms, via.max_ms) {
        out += &format!(
            "    reconnects: at most {} in one second; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms\n",
            via.peak_per_second
        );
    }
    out
}

/// A reason as JSON: its kind, its numbers, and the sentence the text
/// report prints.
#[derive(Debug, Serialize)]
pub struct ReasonJson<'a> {
    /// The sentence.
    pub message: String,
    /// `kind` and the numbers.
    #[serde(flatten)]
    pub reason: &'a Reason,
}

/// `reasons` as a JSON array of [`ReasonJson`].
pub fn reasons_json(reasons: &[Reason]) -> serde_json::Value {
    let list: Vec<ReasonJson<'_>> = reasons.iter().map(|r| ReasonJson { message: r.to_string(), reason: r }).collect();
    serde_json::to_value(list).expect("reasons serialise")
}

/// One JUnit test case: a drained pod, or the clients' account.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name (`drain pod-0`, `clients`).
    pub name: String,
    /// Why it failed; empty when it passed.
    pub reasons: Vec<Reason>,
}

/// A JUnit XML report: one `<testsuite name=suite>` with a `<testcase>` per
/// case, each failing reason a `<failure>` whose message is its sentence.
pub fn junit(suite: &str, cases: &[Case], elapsed_seconds: f64) -> String {
    let failures = cases.iter().filter(|c| !c.reasons.is_empty()).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{elapsed_seconds:.3}\">\n  \
         <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{elapsed_seconds:.3}\">\n",
        cases.len(),
        xml(suite),
        cases.len()
    );
    for case in cases {
        out += &format!("    <testcase classname=\"{}\" name=\"{}\"", xml(suite), xml(&case.name));
        if case.reasons.is_empty() {
            out += "/>\n";
            continue;
        }
        out += ">\n";
        for reason in &case.reasons {
            let kind = serde_json::to_value(reason).ok().and_then(|v| v["kind"].as_str().map(str::to_owned));
            out += &format!(
                "      <failure type=\"{}\" message=\"{}\"/>\n",
                xml(kind.as_deref().unwrap_or("reason")),
                xml(&reason.to_string())
            );
        }
        out += "    </testcase>\n";
    }
    out + "  </testsuite>\n</testsuites>\n"
}

/// `s` escaped for an XML attribute.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&apos;",
            '\n' => out += "&#10;",
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_says_pass_fail_or_unknown() {
        assert!(render_outcome(&[], 0, 1.25).starts_with("PASS: every drain completed and nothing was lost (1.2s)"));
        assert!(render_outcome(&[], 3, 1.0).contains("loss in the 3 cut session(s) is unknown"));
        let fail =
            render_outcome(&[Reason::MessagesLost { messages: 4 }, Reason::RequestsLost { requests: 1 }], 3, 1.0);
        assert_eq!(fail, "FAIL:\n  - 4 messages lost\n  - 1 requests lost\n");
    }

    #[test]
    fn the_proxys_block_gives_its_cuts_and_reconnects() {
        use crate::proxy::Seen;
        let ten = std::time::Duration::from_secs(10);
        let quiet = Via::new("traefik", "traefik-abc", 0.0, "Traefik graceTimeOut", ten * 3, &Seen::default());
        assert_eq!(
            render_via(&quiet),
            "via traefik (pod traefik-abc, Traefik graceTimeOut 30s): 0 sessions cut; 0 reconnects after its \
             termination\n"
        );
        let seen = Seen {
            cuts: vec![10.0, 10.4, 10.1],
            reconnects: vec![(10.5, 3200), (10.6, 9900), (12.0, 10_000)],
            resumed: 0,
        };
        let cut = Via::new("traefik", "", 0.0, "Traefik graceTimeOut", ten, &seen);
        assert_eq!(
            render_via(&cut),
            "via traefik (Traefik graceTimeOut 10s): 3 sessions cut, 0 resumed; 3 reconnects after its termination\n    \
             cuts 10.0–10.4 s after its termination (median 10.1 s): at the setting (9.5–12.0 s)\n    \
             reconnects: at most 2 in one second; latency p50 9.9 ms, p99 10.0 ms, max 10.0 ms\n"
        );
        let early = Via::new("traefik", "", 0.0, "Traefik graceTimeOut", ten, &Seen { cuts: vec![3.1], ..seen });
        assert!(render_via(&early).contains("    cuts 3.1 s after its termination (median 3.1 s): not at the setting"));
    }

    #[test]
    fn json_carries_kind_numbers_and_sentence() {
        let v = reasons_json(&[Reason::DrainedFewer { pod: "pod-0".into(), held: 5, drained: 3 }]);
        assert_eq!(v[0]["kind"], "drained_fewer");
        assert_eq!((v[0]["held"].as_u64(), v[0]["drained"].as_u64()), (Some(5), Some(3)));
        assert_eq!(v[0]["message"], "pod-0: drained 3 of the 5 sessions it held");
    }

    #[test]
    fn junit_has_a_case_per_drain_and_a_failure_per_reason() {
        let cases = [
            Case { name: "drain pod-0".into(), reasons: vec![] },
            Case {
                name: "clients <all>".into(),
                reasons: vec![
                    Reason::MessagesLost { messages: 2 },
                    Reason::Collector { what: "a \"quote\" & more".into() },
                ],
            },
        ];
        let x = junit("gsd-lab delete-pod", &cases, 2.0);
        assert!(x.contains("<testsuite name=\"gsd-lab delete-pod\" tests=\"2\" failures=\"1\" time=\"2.000\">"), "{x}");
        assert!(x.contains("<testcase classname=\"gsd-lab delete-pod\" name=\"drain pod-0\"/>"), "{x}");
        assert!(x.contains("name=\"clients &lt;all&gt;\">"), "{x}");
        assert!(x.contains("<failure type=\"messages_lost\" message=\"2 messages lost\"/>"), "{x}");
        assert!(x.contains("message=\"a &quot;quote&quot; &amp; more\""), "{x}");
        assert_eq!(x.matches("<failure").count(), 2);
    }
}
