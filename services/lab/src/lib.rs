//! gsd-lab: a Kubernetes pod deletion, rolling restart or kill rehearsed on
//! one machine with real processes and signals, and a report of what was
//! lost. It stands in for a cluster: see the README's "Local rehearsal".

pub mod balancer;
pub mod bench;
pub mod config;
pub mod lab;
pub mod proc;

pub use config::LabConfig;
pub use lab::{Report, render, run};
