//! Reading a gsd process's `/metrics`, and waiting on what it says: the lab,
//! the bench and the tests wait for a gauge or a counter to reach a value
//! rather than sleeping and hoping it did.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::Error;

/// `/metrics` of a server's admin port or a client's metrics port, if it
/// answers 200 within 2 s.
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    scrape_within(addr, Duration::from_secs(2)).await
}

/// The same, given `timeout`.
pub async fn scrape_within(addr: SocketAddr, timeout: Duration) -> Option<String> {
    match gsd_telemetry::http_get(&addr.to_string(), "/metrics", timeout).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// The sample named exactly `series` (name and labels as exposed, e.g.
/// `gsd_server_drains_total{outcome="complete"}`), if `addr` answers.
pub async fn scrape_value(addr: SocketAddr, series: impl AsRef<str>) -> Option<f64> {
    let series = series.as_ref();
    gsd_telemetry::sample(&scrape(addr).await?, series)
}

/// Runs `check` every `every` until it yields something, or `None` once
/// `timeout` has passed.
pub async fn poll<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until `series` at `addr` reaches at least `want`.
pub async fn wait_value(addr: SocketAddr, series: impl AsRef<str>, want: f64, timeout: Duration) -> Result<(), Error> {
    let series = series.as_ref();
    let reached = |value: f64| value >= want;
    let found = poll(timeout, Duration::from_millis(100), || async {
        scrape_value(addr, series).await.filter(|v| reached(*v))
    })
    .await;
    match found {
        Some(_) => Ok(()),
        None => {
            let value = scrape_value(addr, series).await.unwrap_or(0.0);
            Err(Error::Stuck(format!("{series} reached only {value} of {want} at {addr}")))
        }
    }
}

/// Scrapes `addr` every `every` until a body satisfies `done` or `until`
/// passes; the last body it answered, if any.
pub async fn scrape_until(
    addr: SocketAddr,
    until: Instant,
    every: Duration,
    done: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut last = None;
    while Instant::now() < until {
        if let Some(body) = scrape(addr).await {
            let finished = done(&body);
            last = Some(body);
            if finished {
                break;
            }
        }
        tokio::time::sleep(every).await;
    }
    last
}
