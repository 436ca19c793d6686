//! gsd-lab's rehearsal settings: the scenario, the stand-ins' timings (the
//! kubelet's preStop and grace period, the Service's propagation delay and
//! readiness period) and what the pods and clients are started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// A rehearsal's settings: `gsd-lab [OPTIONS]` (or `gsd-lab rehearse
/// [OPTIONS]`); the program's help is in [`crate::cli`].
#[derive(Debug, Clone, Args)]
pub struct LabConfig {
    /// What to rehearse.
    #[arg(long, value_enum, default_value = "delete-pod")]
    pub scenario: Scenario,

    /// How many times to repeat it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Server replicas (pods) behind the Service.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub servers: u32,

    /// Client processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub clients: u32,

    /// Virtual users per client process.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,

    /// The Service's address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// preStop sleep before SIGTERM (the chart's default).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub prestop: Duration,

    /// terminationGracePeriodSeconds, counted from the start of preStop (the
    /// chart's default).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Delay before a terminating pod's endpoint is removed from the Service,
    /// concurrent with preStop (the EndpointSlice propagation race).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub propagation_delay: Duration,

    /// Interval of the Service's readiness probes.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub readiness_period: Duration,

    /// Session affinity of the Service.
    #[arg(long, value_enum, default_value = "none")]
    pub affinity: Affinity,

    /// The servers' DRAIN_TIMEOUT.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// The servers' PUSH_INTERVAL: a data frame per session this often.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub push_interval: Duration,
    /// The clients' REQUEST_INTERVAL: a request per session this often.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub request_interval: Duration,

    /// The clients' processing time per data frame (slow it to make drains long).
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub processing_time: Duration,

    /// The clients open their next session at the notice.
    #[arg(long)]
    pub make_before_break: bool,

    /// The servers' and clients' PING_INTERVAL and PING_TIMEOUT: a silent
    /// peer is given up after their sum (what the `partition` scenario shows).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// How long after its ping a silent peer is given up (PING_TIMEOUT).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// The servers' DRAIN_MESSAGES: frames owed per session at the drain.
    #[arg(long, default_value = "1-10")]
    pub drain_messages: String,

    /// FAULT INJECTION: the servers' FAULT_DROP_OWED. Each drained session
    /// is owed its frames but never sent the last N: the report must show
    /// exactly N lost per drained session, and the lab exits 1.
    #[arg(long, default_value_t = 0)]
    pub fault_drop_owed: u32,

    /// FAULT INJECTION: the servers' FAULT_RESET_AT_SIGTERM. Each deleted
    /// pod resets the N sessions it opened first at SIGTERM, with no notice
    /// and no close: the report must name them, and the lab exits 1.
    #[arg(long, default_value_t = 0)]
    pub fault_reset_at_sigterm: u32,

    /// FAULT INJECTION: the servers' FAULT_CLOSE_LAST_SEQ_LOWER. Each drained
    /// session is never sent its last K owed frames, and its close says a
    /// last_seq K below the notice's: a correct client reports them lost.
    #[arg(long, default_value_t = 0)]
    pub fault_close_last_seq_lower: u32,

    /// The servers' RESUME_WINDOW: how long a session cut without notice
    /// stays parked for its client to resume it (0s: resume off). Every pod
    /// signs with the same key, as the chart's pods do.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resume_window: Duration,

    /// `partition` only: the partition heals after this long, counted from
    /// the cut. The pod stays up and comes back into the Service (a network
    /// blip, not a dead node); without it the pod is SIGKILLed once it has
    /// freed its sessions and a replacement is started. The partition is on
    /// the path between the clients and the pod (the Service stand-in); the
    /// pods reach each other's admin port throughout, so a resume that
    /// lands on another pod fetches the session from the partitioned one.
    #[arg(long, value_parser = parse_duration)]
    pub heal_after: Option<Duration>,

    /// Traffic time before the first deletion and between rounds.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,

    /// How long users may take to be back on a session after a drain.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,

    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also write the verdict as JUnit XML here (a test case per drained
    /// pod, one for the clients' account, one for the lab's own findings),
    /// for CI systems that gate on test reports.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One pod deleted per round; the Deployment replaces it.
    DeletePod,
    /// Every replica replaced per round: maxSurge 1, maxUnavailable 0.
    RollingRestart,
    /// One pod SIGKILLed per round, without preStop or grace: what loss looks like.
    Kill,
    /// One pod's network cut silently per round (packets dropped both ways,
    /// no FIN, no RST), as when a node dies: both sides must notice within
    /// PING_INTERVAL + PING_TIMEOUT; then the pod is replaced.
    Partition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    None,
    ClientIp,
}

use gsd_protocol::duration::parse_duration;

impl Default for LabConfig {
    /// Every setting at its default, as `gsd-lab` alone has them.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: LabConfig,
        }
        <Defaults as clap::Parser>::parse_from(["gsd-lab"]).config
    }
}

impl LabConfig {
    /// Checks what clap cannot: that the budget makes sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.grace.is_zero() {
            return Err("--grace must be larger than 0".into());
        }
        if self.readiness_period.is_zero() {
            return Err("--readiness-period must be larger than 0".into());
        }
        if self.resume_window > Duration::from_secs(3600) {
            return Err(format!("--resume-window {:?} is over the servers' limit of 1h", self.resume_window));
        }
        if let Some(heal) = self.heal_after {
            if self.scenario != Scenario::Partition {
                return Err("--heal-after is for --scenario partition only".into());
            }
            if heal.is_zero() {
                return Err("--heal-after must be larger than 0".into());
            }
        }
        Ok(())
    }
}
