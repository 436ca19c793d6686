//! One harness for the lab, the bench and the tests: starting gsd-server
//! and gsd-client processes ([`gsd`]), reading their logs and reaping them
//! ([`proc`]), scraping and waiting on their `/metrics` ([`metrics`]), and
//! the one Service stand-in in front of them ([`service`]). What differs
//! between the three users (the kubelet's sequence, the measurements, the
//! assertions) stays with them.

pub mod gsd;
pub mod metrics;
pub mod proc;
pub mod service;

pub use gsd::{Client, ClientExit, Launcher, Reconnect, Server};
pub use proc::{Proc, ProcError, Reaper};
pub use service::Balancer;

/// Why the lab or the bench could not carry on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A process did not start, or did not say what it was waited for.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The Service stand-in's port is taken or not allowed.
    #[error("the Service stand-in cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    /// Something waited for never happened (a pod never ready, a metric
    /// that never reached its value), or the machine cannot hold the run.
    #[error("{0}")]
    Stuck(String),
}
