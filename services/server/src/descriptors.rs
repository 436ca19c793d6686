//! How many connections each port may hold, from the process's descriptor
//! limit, so that no number of connections on one port can take the
//! descriptors another needs.
//!
//! Every connection holds a descriptor from its accept to its close, as an
//! HTTP request and then as a session, and the kernel refuses the accept
//! that would go past RLIMIT_NOFILE on every port at once: a WebSocket port
//! allowed more connections than the limit leaves the admin port (probes,
//! `/metrics`, `/prestop`) unable to accept anything. So the limit is split
//! at start, once (a container's limit does not change while it runs):
//!
//! ```text
//! RLIMIT_NOFILE (soft) = open at start (stdio, the two listeners, the runtime, the log)
//!                      + SLACK (the OTLP exporter, a file read for a moment)
//!                      + the admin port: ADMIN_CONNECTIONS + ADMIN_REFUSALS + ADMIN_EVICTING
//!                      + the WebSocket port's refusals: WS_REFUSALS
//!                      + the WebSocket port's connections (HTTP and sessions): the rest
//! ```
//!
//! The WebSocket port then refuses (503, as over MAX_HTTP_CONNECTIONS) a
//! connection that would take it past its share, so its accepts never fail
//! and the admin port's share is always there. A limit lowered after start
//! (prlimit) is not seen: the accept loop still survives it
//! ([`crate::http`]), but the shares no longer add up.

/// Connections the admin port holds at once. The kubelet's probes and
/// preStop call and Prometheus's scrapes need a handful; the rest is room
/// for the fair share of [`crate::fair`] to work in.
pub(crate) const ADMIN_CONNECTIONS: usize = 64;

/// Refusals (503, then close) in flight at once on the admin port.
pub(crate) const ADMIN_REFUSALS: usize = 8;

/// Admin connections evicted for a fairer share but not closed yet: an
/// eviction takes effect when the evicted connection's task next runs.
pub(crate) const ADMIN_EVICTING: usize = 8;

/// Refusals (503, then close) in flight at once on the WebSocket port.
pub(crate) const WS_REFUSALS: usize = 64;

/// Descriptors kept for what opens one now and then: the OTLP exporter's
/// connection, a file read for a moment, an accepted connection on its way
/// to being closed unanswered.
const SLACK: u64 = 16;

/// The fewest connections the WebSocket port must be left: below this the
/// limit is a mistake, and the server says so rather than serve nobody.
const WS_MIN: u64 = 16;

/// How the descriptor limit is shared out; logged once at start
/// (`connection_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The soft RLIMIT_NOFILE; `None` when there is none (or it cannot be
    /// read), and then no share is derived.
    pub nofile: Option<u64>,
    /// Descriptors open when the budget was made.
    pub in_use: u64,
    /// Everything but the WebSocket port's connections.
    pub reserve: u64,
    /// Connections the WebSocket port may hold at once, HTTP and sessions.
    pub ws: usize,
}

impl Budget {
    /// The budget of this process, from its soft limit and the descriptors
    /// it has open now.
    pub fn measure() -> Result<Budget, String> {
        let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft);
        // The directory's own descriptor is counted too: one more is safe.
        let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        Budget::new(nofile.filter(|n| *n != rlimit::INFINITY), in_use)
    }

    /// The budget for a soft limit of `nofile` with `in_use` descriptors
    /// already open; an error when the WebSocket port would be left fewer
    /// than [`WS_MIN`].
    pub fn new(nofile: Option<u64>, in_use: u64) -> Result<Budget, String> {
        let fixed = (ADMIN_CONNECTIONS + ADMIN_REFUSALS + ADMIN_EVICTING + WS_REFUSALS) as u64;
        let reserve = in_use + SLACK + fixed;
        let Some(limit) = nofile else {
            return Ok(Budget { nofile, in_use, reserve, ws: usize::MAX });
        };
        match limit.checked_sub(reserve).filter(|ws| *ws >= WS_MIN) {
            Some(ws) => Ok(Budget { nofile, in_use, reserve, ws: usize::try_from(ws).unwrap_or(usize::MAX) }),
            None => Err(format!(
                "the open-file limit (RLIMIT_NOFILE) is {limit}: gsd-server keeps {reserve} descriptors for itself \
                 and the admin port ({in_use} open now) and needs at least {WS_MIN} more for the WebSocket port; \
                 raise it to {} or more",
                reserve + WS_MIN
            )),
        }
    }

    /// The WebSocket port's cap on HTTP connections: MAX_HTTP_CONNECTIONS,
    /// unless its share of descriptors is smaller.
    pub fn ws_http(&self, max_http_connections: u32) -> usize {
        (max_http_connections as usize).min(self.ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_port_gets_what_the_reserve_leaves() {
        // 14 open at start, as gsd-server has under a limit of 256.
        let budget = Budget::new(Some(256), 14).unwrap();
        assert_eq!((budget.reserve, budget.ws), (14 + 16 + 64 + 8 + 8 + 64, 82));
        assert_eq!(budget.ws_http(1024), 82, "MAX_HTTP_CONNECTIONS is cut to the share");
        assert_eq!(budget.ws_http(50), 50, "a smaller MAX_HTTP_CONNECTIONS stands");
        let big = Budget::new(Some(1 << 20), 14).unwrap();
        assert_eq!(big.ws, (1 << 20) - 174);
        assert_eq!(big.ws_http(1024), 1024);
    }

    #[test]
    fn no_limit_derives_no_share_and_a_limit_below_the_reserve_is_refused() {
        assert_eq!(Budget::new(None, 14).unwrap().ws, usize::MAX);
        for nofile in [0, 64, 174, 189] {
            let error = Budget::new(Some(nofile), 14).unwrap_err();
            assert!(error.contains(&format!("is {nofile}:")) && error.contains("raise it to 190"), "{error}");
        }
        assert_eq!(Budget::new(Some(190), 14).unwrap().ws, 16);
    }
}
