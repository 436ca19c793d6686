//! Metrics, the last scrape, and traces, checked against what really
//! happened in a drain, with a real Prometheus, promtool and Jaeger.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Forwarder, Proc, Raw, eventually, free_port, only, sample, tool, u};
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
    let (mut a, addr_a) = Proc::server("a", &args).await;
    let (mut b, addr_b) = Proc::server("b", &["--push-interval", "50ms", "--metrics-linger", "0s"]).await;
    let service = Forwarder::start(vec![addr_a, addr_b]).await;
    let (mut client, client_metrics) = Proc::client("client", &service.url(), 6, &["--request-interval", "20ms"]).await;
    a.wait_count("session_open", 3, SAFETY).await;
    b.wait_count("session_open", 3, SAFETY).await;
    let before = scrape(addr_a).await;
    assert_eq!(sample(&before, "gsd_server_sessions"), Some(3.0));
    assert_eq!(sample(&before, "gsd_server_draining"), Some(0.0));
    assert_eq!(sample(&before, "gsd_server_shutdown_duration_seconds_count"), Some(0.0));
    promtool_check(&before, "gsd-server /metrics");

    a.signal(Signal::SIGTERM);
    let end = a.wait_for("drain_end", |e| e["message"] == "drain_end", SAFETY).await;
    // The scrape after the drain is the last one: the server exits after it
    // without waiting out its 30 s linger.
    let started = tokio::time::Instant::now();
    let last = scrape(addr_a).await;
    assert!(a.wait_exit(SAFETY).await.success());
    assert!(started.elapsed() < Duration::from_secs(10), "the linger did not end at the scrape");
    only(&a, "metrics_scraped_after_drain");

    let drained: Vec<Value> = a.events("session_drained");
    assert_eq!(drained.len(), 3);
    let sent: u64 = drained.iter().map(|d| u(d, "sent")).sum();
    assert_eq!(sample(&last, "gsd_server_drain_messages_sum"), Some(sent as f64));
    assert_eq!(sample(&last, "gsd_server_drain_messages_count"), Some(3.0));
    assert_eq!(sample(&last, r#"gsd_server_drains_total{outcome="complete"}"#), Some(3.0));
    assert_eq!(sample(&last, r#"gsd_server_drains_total{outcome="incomplete"}"#), Some(0.0));
    assert_eq!(sample(&last, "gsd_server_shutdown_duration_seconds_count"), Some(1.0));
    let duration = sample(&last, "gsd_server_shutdown_duration_seconds_sum").unwrap();
    assert!((duration - u(&end, "duration_ms") as f64 / 1000.0).abs() < 0.01, "{duration} vs {end}");
    assert_eq!(sample(&last, "gsd_server_draining"), Some(1.0));
    assert_eq!(sample(&last, "gsd_server_sessions"), Some(0.0));
    promtool_check(&last, "gsd-server /metrics after the drain");

    b.wait_count("session_open", 6, SAFETY).await;
    let body = eventually("every user back", SAFETY, || async {
        let body = scrape(client_metrics).await;
        (sample(&body, "gsd_client_sessions") == Some(6.0)).then_some(body)
    })
    .await;
    promtool_check(&body, "gsd-client /metrics");
    assert_eq!(sample(&body, "gsd_client_reconnect_latency_seconds_count"), Some(3.0));
    assert_eq!(sample(&body, r#"gsd_client_reconnects_total{reason="drain"}"#), Some(3.0));
    assert_eq!(sample(&body, "gsd_client_drain_messages_sum"), Some(sent as f64));
    assert_eq!(sample(&body, "gsd_client_drain_messages_count"), Some(3.0));
    assert_eq!(sample(&body, r#"gsd_client_drains_total{outcome="complete"}"#), Some(3.0));
    assert_eq!(sample(&body, "gsd_client_messages_lost_total"), Some(0.0));
    assert_eq!(sample(&body, "gsd_client_requests_lost_total"), Some(0.0));
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
async fn prom_query(prometheus: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) =
        gsd_telemetry::http_get(prometheus, &format!("/api/v1/query?query={encoded}"), Duration::from_secs(10))
            .await
            .ok()?;
    assert_eq!(status, 200, "{body}");
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

    let dir = tempdir("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: gsd-server\n    static_configs:\n      - targets: ['{addr}']\n  - job_name: gsd-client\n    static_configs:\n      - targets: ['{client_metrics}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prom = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = format!("up{{instance=\"{addr}\"}}");
    eventually("prometheus scrapes the server", SAFETY, || prom_query(&web, &up)).await;

    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SAFETY).await.success());
    only(&server, "metrics_scraped_after_drain");
    let query = format!("gsd_server_shutdown_duration_seconds_count{{instance=\"{addr}\"}}");
    let count = eventually("the shutdown histogram in prometheus", SAFETY, || async {
        prom_query(&web, &query).await.filter(|v| *v > 0.0)
    })
    .await;
    assert_eq!(count, 1.0);
    let drained = format!("gsd_server_drains_total{{instance=\"{addr}\",outcome=\"complete\"}}");
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
    for child in children {
        assert_eq!(tag(child, "server_id"), "traced");
        assert_eq!(tag(child, "outcome"), "complete");
        let session_id = tag(child, "session_id");
        let logged = drained.iter().find(|d| d["session_id"] == session_id).expect("a logged session");
        let remaining = tag(child, "remaining");
        assert_eq!(remaining.to_string().trim_matches('"'), u(logged, "remaining").to_string(), "{child}");
        assert!(child["duration"].as_u64().unwrap() > 0);
    }
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
    for proc in [&server, &client] {
        let log = proc.tail().to_lowercase();
        for word in ["otlp", "opentelemetry", "export"] {
            assert!(!log.contains(word), "{} mentions {word}:\n{log}", proc.name);
        }
    }
    watcher.abort();
}
