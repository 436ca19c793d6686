//! gsd-lab: a Kubernetes pod deletion, rolling restart or kill rehearsed on
//! one machine with real processes and signals, and a report of what was
//! lost. It stands in for a cluster: see docs/lab.md.

pub mod bench;
pub mod cli;
pub mod config;
pub mod harness;
pub mod lab;

pub use config::LabConfig;
/// The binary reaps its children through `gsd_lab::proc::Reaper`.
pub use harness::proc;
pub use lab::{Report, render, run};
