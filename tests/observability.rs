//! Metrics, the last scrape, and traces, checked against what really
//! happened in a drain, with a real Prometheus, promtool and Jaeger.

mod common;

use gsd_telemetry::names;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, Raw, eventually, free_port, only, repo_root, sample, tool, u};
use gsd_protocol::{ClientMessage, ServerMessage};
use nix::sys::signal::Signal;
use serde_json::Value;

const SAFETY: Duration = Duration::from_secs(60);

/// OTLP's default port is shared by the Jaeger test and the "nothing is
/// exported" test; they take turns.
static OTLP_PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = gsd_telemetry::http_get(&addr.to_string(), "/metrics", Duration::from_secs(10)).await.unwrap();
    assert_eq!(status, 200);
    body
}

fn promtool_check(body: &str, what: &str) {
    let Some(promtool) = tool("promtool", "PROMTOOL_BIN") else { return };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics on {what}: {said}");
}

/// A raw session that acks everything until its close; returns the frames
/// drained after the notice.
async fn ack_until_close(mut raw: Raw) -> u32 {
    let mut drained = None;
    loop {
        match raw.next().await {
            common::Seen::Msg(ServerMessage::Data { seq, .. }) => {
                raw.send(ClientMessage::Ack { seq }).await;
                if let Some(n) = &mut drained {
                    *n += 1;
                }
            }
            common::Seen::Msg(ServerMessage::ShutdownNotice { .. }) => drained = Some(0),
            common::Seen::Msg(_) => {}
            _ => return drained.expect("a notice before the close"),
        }
    }
}

#[tokio::test]
async fn histograms_match_what_the_drain_did() {
    let args = ["--push-interval", "50ms", "--metrics-linger", "30s"];
    let (mut a, _) = Proc::server("a", &args).await;
    let (mut b, _) = Proc::server("b", &["--push-interval", "50ms", "--metrics-linger", "0s"]).await;
    let service = common::service(&[&a, &b]).await;
    let (mut client, client_metrics) = Proc::client("client", &service.url(), 6, &["--request-interval", "20ms"]).await;
    a.wait_count("session_open", 3, SAFETY).await;
    b.wait_count("session_open", 3, SAFETY).await;
    let before = scrape(a.admin()).await;
    assert_eq!(sample(&before, names::SERVER_SESSIONS), Some(3.0));
    assert_eq!(sample(&before, names::SERVER_DRAINING), Some(0.0));
    assert_eq!(sample(&before, names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT), Some(0.0));
    promtool_check(&before, "gsd-server /metrics");

    // A pod deletion: the endpoint goes, then the SIGTERM.
    service.remove("a");
    a.signal(Signal::SIGTERM);
    let end = a.wait_for("drain_end", |e| e["message"] == "drain_end", SAFETY).await;
    // The scrape after the drain is the last one: the server exits after it
    // without waiting out its 30 s linger.
    let started = tokio::time::Instant::now();
    let last = scrape(a.admin()).await;
    assert!(a.wait_exit(SAFETY).await.success());
    assert!(started.elapsed() < Duration::from_secs(10), "the linger did not end at the scrape");
    only(&a, "metrics_scraped_after_drain");

    let drained: Vec<Value> = a.events("session_drained");
    assert_eq!(drained.len(), 3);
    let sent: u64 = drained.iter().map(|d| u(d, "sent")).sum();
    assert_eq!(sample(&last, names::SERVER_DRAIN_MESSAGES_SUM), Some(sent as f64));
    assert_eq!(sample(&last, names::SERVER_DRAIN_MESSAGES_COUNT), Some(3.0));
    assert_eq!(sample(&last, names::SERVER_DRAINS.at(&[("outcome", "complete")])), Some(3.0));
    assert_eq!(sample(&last, names::SERVER_DRAINS.at(&[("outcome", "incomplete")])), Some(0.0));
    assert_eq!(sample(&last, names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT), Some(1.0));
    let duration = sample(&last, names::SERVER_SHUTDOWN_DURATION_SECONDS_SUM).unwrap();
    assert!((duration - u(&end, "duration_ms") as f64 / 1000.0).abs() < 0.01, "{duration} vs {end}");
    assert_eq!(sample(&last, names::SERVER_DRAINING), Some(1.0));
    assert_eq!(sample(&last, names::SERVER_SESSIONS), Some(0.0));
    promtool_check(&last, "gsd-server /metrics after the drain");

    b.wait_count("session_open", 6, SAFETY).await;
    let body = eventually("every user back", SAFETY, || async {
        let body = scrape(client_metrics).await;
        (sample(&body, names::CLIENT_SESSIONS) == Some(6.0)).then_some(body)
    })
    .await;
    promtool_check(&body, "gsd-client /metrics");
    assert_eq!(sample(&body, names::CLIENT_RECONNECT_LATENCY_SECONDS_COUNT), Some(3.0));
    assert_eq!(sample(&body, names::CLIENT_RECONNECTS.at(&[("reason", "drain")])), Some(3.0));
    assert_eq!(sample(&body, names::CLIENT_DRAIN_MESSAGES_SUM), Some(sent as f64));
    assert_eq!(sample(&body, names::CLIENT_DRAIN_MESSAGES_COUNT), Some(3.0));
    assert_eq!(sample(&body, names::CLIENT_DRAINS.at(&[("outcome", "complete")])), Some(3.0));
    assert_eq!(sample(&body, names::CLIENT_MESSAGES_LOST), Some(0.0));
    assert_eq!(sample(&body, names::CLIENT_REQUESTS_LOST), Some(0.0));
    let (status, _) = gsd_telemetry::http_get(&client_metrics.to_string(), "/healthz", SAFETY).await.unwrap();
    assert_eq!(status, 200);

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let exit = only(&client, "client_exit");
    assert_eq!(u(&exit, "reconnects"), 3, "the histogram count equals the ledger's reconnects");
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit(SAFETY).await.success());
}

/// Prometheus's HTTP API: the value of an instant query's first sample.
/// A real Prometheus with `config`, its data in `dir`, on a free port;
/// returns the process and its web address.
fn start_prometheus(
    prometheus: &std::path::Path,
    dir: &std::path::Path,
    config: &str,
) -> (tokio::process::Child, String) {
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, web)
}

async fn prom_query(prometheus: &str, query: &str) -> Option<f64> {
    let encoded = url_encode(query);
    let (status, body) =
        gsd_telemetry::http_get(prometheus, &format!("/api/v1/query?query={encoded}"), Duration::from_secs(10))
            .await
            .ok()?;
    // 503 until Prometheus is ready; the callers poll.
    if status != 200 {
        return None;
    }
    let json: Value = serde_json::from_str(&body).unwrap();
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_gets_the_terminated_servers_last_scrape() {
    let Some(prometheus) = tool("prometheus", "PROMETHEUS_BIN") else { return };
    let (mut server, addr) = Proc::server("doomed", &["--push-interval", "50ms", "--metrics-linger", "20s"]).await;
    let (mut client, client_metrics) =
        Proc::client("client", &format!("ws://{addr}/ws"), 3, &["--request-interval", "50ms"]).await;
    server.wait_count("session_open", 3, SAFETY).await;
    let admin = server.admin();

    let dir = tempdir("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: gsd-server\n    static_configs:\n      - targets: ['{admin}']\n  - job_name: gsd-client\n    static_configs:\n      - targets: ['{client_metrics}']\n"
    );
    let (mut prom, web) = start_prometheus(&prometheus, &dir, &config);
    let up = format!("up{{instance=\"{admin}\"}}");
    eventually("prometheus scrapes the server", SAFETY, || prom_query(&web, &up)).await;

    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    only(&server, "metrics_scraped_after_drain");
    let instance = admin.to_string();
    let query = names::SERVER_SHUTDOWN_DURATION_SECONDS_COUNT.at(&[("instance", &instance)]);
    let count = eventually("the shutdown histogram in prometheus", SAFETY, || async {
        prom_query(&web, &query).await.filter(|v| *v > 0.0)
    })
    .await;
    assert_eq!(count, 1.0);
    let drained = names::SERVER_DRAINS.at(&[("instance", &instance), ("outcome", "complete")]);
    assert_eq!(prom_query(&web, &drained).await, Some(3.0));

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    let _ = prom.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gsd-{what}-{}-{:x}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test]
async fn jaeger_receives_the_drain_span_with_a_child_per_session() {
    let Some(jaeger) = tool("jaeger", "JAEGER_BIN") else { return };
    let _port = OTLP_PORT.lock().await;
    // Jaeger's all-in-one defaults: OTLP/HTTP on 4318, the query API on 16686.
    let mut jaeger = tokio::process::Command::new(jaeger)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("jaeger's query API", SAFETY, || async {
        gsd_telemetry::http_get("127.0.0.1:16686", "/api/services", Duration::from_secs(2)).await.ok()
    })
    .await;
    let service = format!("gsd-server-test-{:x}", rand_suffix());
    let envs = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_SERVICE_NAME", service.as_str())];
    let (mut server, addr) =
        Proc::server_env("traced", &["--push-interval", "20ms", "--metrics-linger", "0s"], &envs).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(tokio::spawn(ack_until_close(Raw::connect(addr).await)));
    }
    server.wait_count("session_open", 3, SAFETY).await;
    server.signal(Signal::SIGTERM);
    for s in sessions {
        s.await.unwrap();
    }
    assert!(server.wait_exit(SAFETY).await.success());
    let drained = server.events("session_drained");

    let path = format!("/api/traces?service={service}&operation=drain&lookback=1h&limit=5");
    let trace = eventually("the drain trace in jaeger", SAFETY, || async {
        let (status, body) = gsd_telemetry::http_get("127.0.0.1:16686", &path, Duration::from_secs(5)).await.ok()?;
        let json: Value = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| json["data"][0].clone()).filter(|t| !t.is_null())
    })
    .await;
    let spans = trace["spans"].as_array().unwrap();
    let drain = spans.iter().find(|s| s["operationName"] == "drain").expect("a drain span");
    let tag = |span: &Value, key: &str| -> Value {
        span["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| t["value"].clone())
            .unwrap_or_default()
    };
    assert_eq!(tag(drain, "server_id"), "traced");
    let children: Vec<&Value> = spans
        .iter()
        .filter(|s| s["operationName"] == "session_drain")
        .filter(|s| s["references"][0]["spanID"] == drain["spanID"])
        .collect();
    assert_eq!(children.len(), 3, "one child per session: {trace}");
    // The drain's log lines join its trace: drain_start and drain_end carry
    // the drain span's ids, each session_drained its session_drain span's.
    // (Jaeger writes a trace id without its leading zeros.)
    let trace_id = trace["traceID"].as_str().unwrap();
    let joins = |line: &Value, span: &Value| {
        let logged = line["trace_id"].as_str().unwrap_or_else(|| panic!("no trace_id: {line}"));
        assert_eq!(logged.len(), 32, "{line}");
        assert_eq!(logged.trim_start_matches('0'), trace_id.trim_start_matches('0'), "{line}");
        assert_eq!(line["span_id"], span["spanID"], "{line}");
    };
    for message in ["drain_start", "drain_end"] {
        let lines = server.events(message);
        assert_eq!(lines.len(), 1, "{message}");
        joins(&lines[0], drain);
    }
    for child in children {
        assert_eq!(tag(child, "server_id"), "traced");
        assert_eq!(tag(child, "outcome"), "complete");
        let session_id = tag(child, "session_id");
        let logged = drained.iter().find(|d| d["session_id"] == session_id).expect("a logged session");
        let remaining = tag(child, "remaining");
        assert_eq!(remaining.to_string().trim_matches('"'), u(logged, "remaining").to_string(), "{child}");
        assert!(child["duration"].as_u64().unwrap() > 0);
        joins(logged, child);
    }
    // A line outside every span (the start) carries none.
    let start = server.events("start");
    assert!(start.len() == 1 && start[0].get("trace_id").is_none(), "{start:?}");
    let _ = jaeger.kill().await;
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_exported_or_said() {
    let _port = OTLP_PORT.lock().await;
    // Stand on the default OTLP port and count who knocks.
    // (A Jaeger from the previous test may take a moment to let go of it.)
    let listener = eventually("port 4318 free for the test", SAFETY, || async {
        tokio::net::TcpListener::bind("127.0.0.1:4318").await.ok()
    })
    .await;
    let knocks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = knocks.clone();
    let watcher = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (mut server, addr) = Proc::server("quiet", &["--push-interval", "20ms", "--metrics-linger", "0s"]).await;
    let (mut client, _) = Proc::client("client", &format!("ws://{addr}/ws"), 2, &["--request-interval", "20ms"]).await;
    server.wait_count("session_open", 2, SAFETY).await;
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(knocks.load(std::sync::atomic::Ordering::SeqCst), 0, "something tried to export");
    // Nothing exported, no ids: the drain's lines have none.
    let drain_end = server.events("drain_end");
    assert!(drain_end.len() == 1 && drain_end[0].get("trace_id").is_none(), "{drain_end:?}");
    for proc in [&server, &client] {
        let log = proc.tail().to_lowercase();
        for word in ["otlp", "opentelemetry", "export"] {
            assert!(!log.contains(word), "{} mentions {word}:\n{log}", proc.name);
        }
    }
    watcher.abort();
}

/// Every PromQL expression of a dashboard: (where, expr, instant?).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    fn panels(list: &Value, out: &mut Vec<(String, String, bool)>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = format!("panel {:?} {}", panel["title"].as_str().unwrap_or(""), target["refId"]);
                    out.push((title, expr.to_owned(), target["instant"] == true));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for a in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str().or(a["target"]["expr"].as_str()) {
            out.push((format!("annotation {}", a["name"]), expr.to_owned(), false));
        }
    }
    out
}

/// What Grafana would send for the variables this test's Prometheus knows.
fn substitute(expr: &str, range: &str) -> String {
    expr.replace("$__rate_interval", "4s")
        .replace("$__range", range)
        .replace("$__interval", "1s")
        .replace("${namespace}", "shop")
        .replace("$namespace", "shop")
        .replace("${release}", "gsd")
        .replace("$release", "gsd")
        .replace("${pod}", ".*")
        .replace("$pod", ".*")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus API call; the parsed JSON (status and errors included).
async fn prom_api(prometheus: &str, path: &str) -> Value {
    let (_, body) = gsd_telemetry::http_get(prometheus, path, Duration::from_secs(10)).await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"))
}

/// Whether a query result holds at least one sample that is a number.
fn has_data(result: &Value) -> bool {
    result["data"]["result"].as_array().into_iter().flatten().any(|series| {
        let values = series["values"].as_array().cloned().unwrap_or_else(|| vec![series["value"].clone()]);
        values.iter().any(|v| v[1].as_str().is_some_and(|s| s != "NaN"))
    })
}

/// Metric names an expression refers to (gsd's own, without histogram suffixes).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("gsd_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn dashboards_and_alerts_work_against_a_real_prometheus() {
    let Some(prometheus) = tool("prometheus", "PROMETHEUS_BIN") else { return };
    let root = repo_root();
    let rules = root.join("charts/gsd/rules/gsd.rules.yaml").canonicalize().unwrap();
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(root.join("dashboards")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            let json: Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
            dashboards.push((entry.file_name().into_string().unwrap(), json));
        }
    }
    assert!(!dashboards.is_empty());

    // Two pods behind the Service stand-in and a client; pod `a` will drain with one
    // session that never acks, so its drain is incomplete.
    let (mut a, addr_a) =
        Proc::server("a", &["--push-interval", "100ms", "--drain-timeout", "2s", "--metrics-linger", "30s"]).await;
    let (mut b, _) = Proc::server("b", &["--push-interval", "100ms", "--metrics-linger", "0s"]).await;
    let service = common::service(&[&a, &b]).await;
    let (mut client, client_metrics) = Proc::client("client", &service.url(), 4, &["--request-interval", "50ms"]).await;
    let mut silent = Raw::connect(addr_a).await;

    let dir = tempdir("prometheus-dashboards");
    let target = |addr: SocketAddr, pod: &str| {
        format!("      - targets: ['{addr}']\n        labels: {{namespace: shop, release: gsd, pod: {pod}}}\n")
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: gsd-server\n    static_configs:\n{}{}  - job_name: gsd-client\n    static_configs:\n{}",
        rules.display(),
        target(a.admin(), "a"),
        target(b.admin(), "b"),
        target(client_metrics, "client-0"),
    );
    let (mut prom, web) = start_prometheus(&prometheus, &dir, &config);
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    eventually("prometheus scrapes all three", SAFETY, || async {
        (prom_query(&web, "count(up == 1)").await == Some(3.0)).then_some(())
    })
    .await;
    // Every rule loaded and healthy.
    let loaded = prom_api(&web, "/api/v1/rules").await;
    let healthy: Vec<&Value> = loaded["data"]["groups"][0]["rules"].as_array().unwrap().iter().collect();
    assert_eq!(healthy.len(), 4, "{loaded}");
    for rule in &healthy {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Metric names the services export (histograms by their base name).
    let mut exported = std::collections::BTreeSet::new();
    for addr in [a.admin(), client_metrics] {
        for line in scrape(addr).await.lines().filter(|l| l.starts_with("# TYPE ")) {
            exported.insert(line.split(' ').nth(2).unwrap().to_owned());
        }
    }

    service.remove("a");
    a.signal(Signal::SIGTERM);
    follow_silently(&mut silent).await;
    assert!(a.wait_exit(SAFETY).await.success());
    let end = only(&a, "drain_end");
    assert!(u(&end, "incomplete") >= 1 && u(&end, "complete") >= 1, "{end}");
    b.wait_count("session_open", 4, SAFETY).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few scrapes of the aftermath

    // Every query of every panel, with the variables substituted, returns data.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let range = format!("{}s", (now - started).ceil() as u64 + 5);
    for (file, dashboard) in &dashboards {
        assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()), "{file}: no uid");
        let queries = dashboard_queries(dashboard);
        assert!(queries.len() >= 10, "{file}: only {} queries", queries.len());
        for (place, expr, instant) in queries {
            for name in metric_names(&expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(name.clone(), |n, s| n.strip_suffix(s).unwrap_or(&n).to_owned());
                assert!(exported.contains(&name) || exported.contains(&base), "{file} {place}: {name} is not exported");
            }
            let query = url_encode(&substitute(&expr, &range));
            let result = if instant {
                prom_api(&web, &format!("/api/v1/query?query={query}")).await
            } else {
                prom_api(&web, &format!("/api/v1/query_range?query={query}&start={started}&end={now}&step=1")).await
            };
            assert_eq!(result["status"], "success", "{file} {place}: {expr}\n{result}");
            assert!(has_data(&result), "{file} {place} returns no data: {}", substitute(&expr, &range));
        }
    }
    // Every alert expression parses and names exported metrics only.
    for rule in &healthy {
        let expr = rule["query"].as_str().unwrap();
        for name in metric_names(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).unwrap_or(&n).to_owned());
            assert!(exported.contains(&name) || exported.contains(&base), "{}: {name} is not exported", rule["name"]);
        }
        let result = prom_api(&web, &format!("/api/v1/query?query={}", url_encode(expr))).await;
        assert_eq!(result["status"], "success", "{}: {result}", rule["name"]);
    }

    // The incomplete drain makes GsdDrainIncomplete fire, through the real
    // rule evaluation, once its `for: 1m` has passed.
    let alert = eventually("GsdDrainIncomplete firing", Duration::from_secs(150), || async {
        let alerts = prom_api(&web, "/api/v1/alerts").await;
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "GsdDrainIncomplete" && a["state"] == "firing")
            .cloned()
    })
    .await;
    assert_eq!(alert["labels"]["pod"], "a", "{alert}");
    assert_eq!(alert["labels"]["namespace"], "shop");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert!(alert["annotations"]["description"].as_str().unwrap().starts_with("a in shop reported"), "{alert}");
    // Nothing was lost, so GsdMessagesLost stays silent.
    let alerts = prom_api(&web, "/api/v1/alerts").await;
    assert!(!alerts.to_string().contains("GsdMessagesLost"), "{alerts}");

    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(SAFETY).await.success());
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit(SAFETY).await.success());
    let _ = prom.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a raw session to its close without ever acking.
async fn follow_silently(raw: &mut Raw) {
    while let common::Seen::Msg(_) = raw.next().await {}
}
