//! The Service stand-in, the lab's, the bench's and the tests' alike: an
//! L4 round-robin TCP balancer like kube-proxy.
//!
//! New connections go only to endpoints that are ready (polled on `/readyz`)
//! and not yet removed by the terminator; connections already open are never
//! cut when an endpoint goes away, as with kube-proxy's conntrack. With
//! ClientIP affinity a client address keeps its backend while it stays
//! eligible.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How many connections the balancer in this process can proxy: two
/// descriptors each, under the NOFILE limit, with `reserve` kept for
/// everything else.
pub fn capacity(reserve: u64) -> u64 {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    soft.saturating_sub(reserve) / 2
}

/// One endpoint of the Service.
#[derive(Debug, Clone)]
struct Endpoint {
    /// The pod's id, by which the lab removes or cuts it.
    id: String,
    /// Where its connections go (the pod's WebSocket port).
    addr: SocketAddr,
    /// Where its `/readyz` is (the pod's admin port).
    admin: SocketAddr,
    /// Last `/readyz` answer was 200.
    ready: bool,
    /// Removed from the endpoints (the pod is terminating and the removal
    /// has propagated).
    removed: bool,
    /// Cancelled when the pod's network is cut: its connections stop
    /// carrying bytes either way, silently (a partition, not a reset).
    cut: CancellationToken,
    /// Cancelled (and replaced) by [`Balancer::reset`]: the connections
    /// open then are reset on both sides; later ones are not.
    reset: CancellationToken,
}

/// What the accept loop, the probe loop and the handle share.
#[derive(Default)]
struct Inner {
    /// Every endpoint added and not yet forgotten.
    endpoints: Mutex<Vec<Endpoint>>,
    /// The round-robin position.
    next: AtomicUsize,
    /// ClientIP affinity: the endpoint id each client address was sent to.
    affinity: Mutex<HashMap<IpAddr, String>>,
}

/// Handle on a running balancer; stops when dropped.
pub struct Balancer {
    /// The state shared with its tasks.
    inner: Arc<Inner>,
    /// Where it listens: the Service's address.
    pub addr: SocketAddr,
    /// Cancelled on drop: ends the accept loop, the probes and every
    /// proxied connection.
    stop: CancellationToken,
}

impl Balancer {
    /// Listens on `listen` and polls readiness every `period`.
    pub async fn start(listen: SocketAddr, client_ip_affinity: bool, period: Duration) -> std::io::Result<Balancer> {
        let listener = gsd_telemetry::listen(listen)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, inner.clone(), client_ip_affinity, stop.clone()));
        tokio::spawn(probe_loop(inner.clone(), period, stop.clone()));
        Ok(Balancer { inner, addr, stop })
    }

    /// Adds pod `id`'s endpoint `addr`, whose readiness is probed on
    /// `admin`; it takes traffic once the probe passes.
    pub fn add(&self, id: &str, addr: SocketAddr, admin: SocketAddr) {
        let endpoint = Endpoint {
            id: id.to_owned(),
            addr,
            admin,
            ready: false,
            removed: false,
            cut: CancellationToken::new(),
            reset: CancellationToken::new(),
        };
        self.inner.endpoints.lock().unwrap().push(endpoint);
    }

    /// The terminator's endpoint removal: no new connections from now on.
    pub fn remove(&self, id: &str) {
        for e in self.inner.endpoints.lock().unwrap().iter_mut().filter(|e| e.id == id) {
            e.removed = true;
        }
    }

    /// Cuts the pod's network: open connections go silent in both directions
    /// (held open, nothing forwarded, nothing closed) and probes fail, as
    /// for a node that vanished. The endpoint itself is removed later, by
    /// [`Balancer::remove`].
    pub fn partition(&self, id: &str) {
        for e in self.inner.endpoints.lock().unwrap().iter_mut().filter(|e| e.id == id) {
            e.cut.cancel();
            e.ready = false;
        }
    }

    /// Ends pod `id`'s partition: new connections carry bytes again and
    /// its endpoint is back (once its probe passes). The connections open
    /// through the partition stay silent: both ends gave them up.
    pub fn heal(&self, id: &str) {
        for e in self.inner.endpoints.lock().unwrap().iter_mut().filter(|e| e.id == id) {
            e.cut = CancellationToken::new();
            e.removed = false;
        }
    }

    /// Resets every connection open to pod `id` now, on both sides (a TCP
    /// RST to the client and to the server, as a proxy in front of the pods
    /// that restarts does); the pod stays an endpoint, and new connections
    /// reach it as before.
    pub fn reset(&self, id: &str) {
        for e in self.inner.endpoints.lock().unwrap().iter_mut().filter(|e| e.id == id) {
            std::mem::take(&mut e.reset).cancel();
        }
    }

    /// Drops the endpoint entirely (the pod is gone).
    pub fn forget(&self, id: &str) {
        self.inner.endpoints.lock().unwrap().retain(|e| e.id != id);
    }

    /// Whether `id` is ready and not removed.
    pub fn eligible(&self, id: &str) -> bool {
        self.inner.endpoints.lock().unwrap().iter().any(|e| e.id == id && e.ready && !e.removed)
    }

    /// Waits until `id` takes new connections (its first probe passed).
    pub async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<(), super::Error> {
        let eligible = || async { self.eligible(id).then_some(()) };
        super::metrics::poll(timeout, Duration::from_millis(20), eligible)
            .await
            .ok_or_else(|| super::Error::Stuck(format!("{id} never became ready")))
    }

    /// `ws://addr/ws`: the URL users reach the Service at.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Inner {
    fn pick(&self, client: IpAddr, affinity: bool) -> Option<(SocketAddr, CancellationToken, CancellationToken)> {
        let endpoints = self.endpoints.lock().unwrap();
        let eligible: Vec<&Endpoint> = endpoints.iter().filter(|e| e.ready && !e.removed).collect();
        if eligible.is_empty() {
            return None;
        }
        if affinity {
            let mut sticky = self.affinity.lock().unwrap();
            if let Some(e) = sticky.get(&client).and_then(|id| eligible.iter().find(|e| &e.id == id)) {
                return Some((e.addr, e.cut.clone(), e.reset.clone()));
            }
            let e = eligible[self.next.fetch_add(1, Ordering::Relaxed) % eligible.len()];
            sticky.insert(client, e.id.clone());
            return Some((e.addr, e.cut.clone(), e.reset.clone()));
        }
        let e = eligible[self.next.fetch_add(1, Ordering::Relaxed) % eligible.len()];
        Some((e.addr, e.cut.clone(), e.reset.clone()))
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, affinity: bool, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let Ok((mut inbound, peer)) = accepted else {
            // Out of descriptors or the like: back off a moment.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some((backend, cut, reset)) = inner.pick(peer.ip(), affinity) else {
            // No endpoint: the connection is reset, as a Service without
            // endpoints rejects it.
            let _ = inbound.set_zero_linger();
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(backend).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = stop.cancelled() => {}
                // Partitioned: hold both sockets, forward nothing, close
                // nothing, until the lab stops.
                _ = cut.cancelled() => stop.cancelled().await,
                // Reset: both sockets dropped with SO_LINGER 0, an RST each way.
                _ = reset.cancelled() => {
                    let _ = inbound.set_zero_linger();
                    let _ = outbound.set_zero_linger();
                }
            }
        });
    }
}

async fn probe_loop(inner: Arc<Inner>, period: Duration, stop: CancellationToken) {
    loop {
        let targets: Vec<(String, SocketAddr)> = inner
            .endpoints
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !e.cut.is_cancelled())
            .map(|e| (e.id.clone(), e.admin))
            .collect();
        for (id, addr) in targets {
            let ready = matches!(
                gsd_telemetry::http_get(&addr.to_string(), "/readyz", Duration::from_secs(1)).await,
                Ok((200, _))
            );
            for e in inner.endpoints.lock().unwrap().iter_mut().filter(|e| e.id == id) {
                e.ready = ready;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}
