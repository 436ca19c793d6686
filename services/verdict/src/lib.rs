//! gsd-verdict: the one place that decides whether a drain lost anything.
//!
//! - [`names`]: the metric names (gsd-telemetry's), typed;
//! - [`exposition`]: a strict parse of a `/metrics` body (garbage is an
//!   error that names the line, never a silent zero);
//! - [`account`]: a server pod's drain account and a client process's
//!   account, read from those samples;
//! - [`rules`]: [`judge`] turns one drain's evidence (both sides' accounts)
//!   into a list of [`Reason`]s, each with its numbers;
//! - [`report`]: the outcome line, JSON and JUnit for CI gates;
//! - [`proxy`]: a proxy's termination as the clients' logs show it, so
//!   that [`judge_proxy`] can name the setting that cut the sessions.
//!
//! - [`cluster`]: the in-cluster verdict, the `gsd-verdict` program (the
//!   chart's opt-in `helm test` pod);
//! - [`rollout`]: its proxy phase (`--via`): a rollout of the proxy in
//!   front of the servers, judged from the clients' accounts and logs;
//! - [`offline`]: `gsd-verdict judge`, the same verdict on `/metrics`
//!   bodies saved to files (scripts/cluster-check asks it for every count).
//!
//! gsd-lab and the in-cluster verdict collect; this crate judges. A rule
//! lives here once, so the two cannot disagree.

pub mod account;
pub mod cli;
pub mod cluster;
pub mod exposition;
pub mod fixture;
/// The metric names, typed: gsd-telemetry owns them, the server and the
/// client register them, the judge reads them.
pub use gsd_telemetry::names;
pub mod offline;
pub mod proxy;
pub mod report;
pub mod rollout;
pub mod rules;

pub use account::{AccountError, ClientAccount, ServerAccount};
pub use exposition::{Exposition, ParseError};
pub use report::{Case, junit, reasons_json, render_outcome};
pub use rules::{DrainEvidence, Ending, Reason, judge, judge_all, judge_clients, judge_proxy};
