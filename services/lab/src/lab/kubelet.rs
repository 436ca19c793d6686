//! What Kubernetes does to a pod the lab deletes, kills or partitions, in
//! its order and with its timings: the endpoint removal that reaches the
//! Service after the propagation delay, concurrently the kubelet's preStop
//! sleep, then SIGTERM, then SIGKILL if the pod still lives when the grace
//! period (counted from the deletion) runs out; the ReplicaSet's
//! replacement; and, for a partition, a node that vanishes. Each ends in a
//! [`DrainRow`] built from the pod's own last `/metrics`.

use gsd_telemetry::names;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::Lab;
use gsd_verdict::Ending;

use super::report::{Drain, DrainRow};
use crate::harness::gsd::LastScrape;
use crate::harness::metrics::{scrape, scrape_until};
use crate::harness::{Error, Server};

/// How often a terminating pod is scraped.
const SCRAPE_EVERY: Duration = Duration::from_millis(50);

/// How a deleted pod is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// As the kubelet terminates a pod: preStop, SIGTERM, and SIGKILL only
    /// if the grace period runs out.
    Terminate,
    /// SIGKILL at once: no preStop, no grace.
    Kill,
}

/// When the ReplicaSet's replacement of a deleted pod starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replacement {
    /// With the deletion, as a ReplicaSet does.
    StartNow,
    /// It was started and ready before (a rolling update's surge pod).
    AlreadyStarted,
}

impl Lab {
    /// Deletes pod `idx`: the endpoint goes after the propagation delay;
    /// meanwhile the ReplicaSet's replacement starts (unless it already
    /// has) and the pod is stopped as `stop` says.
    pub(super) async fn delete(
        &mut self,
        idx: usize,
        round: u32,
        stop: Stop,
        replacement: Replacement,
    ) -> Result<(), Error> {
        let mut pod = self.pods.remove(idx);
        let clients_before = self.clients_account().await;
        let before = scrape(pod.admin).await;
        let sessions =
            before.as_deref().and_then(|b| gsd_telemetry::sample(b, names::SERVER_SESSIONS)).unwrap_or(0.0) as u64;
        let deleted = Instant::now();
        self.remove_endpoint_later(pod.id());
        if replacement == Replacement::StartNow {
            self.start_pod().await?;
        }
        let deletion = format!("{} {}", self.config.scenario_verb(), pod.id());
        let step = |what: &str| self.step(round, &format!("{deletion}: {what}"));
        let (ending, seen) = if stop == Stop::Kill {
            self.progress.set(step("SIGKILL"));
            pod.proc.signal(Signal::SIGKILL);
            pod.proc.wait_exit(Duration::from_secs(10)).await;
            (Ending::Killed, LastScrape::default())
        } else {
            self.terminate(&mut pod, deleted, step).await
        };
        self.balancer.forget(pod.id());
        let account = seen.account().or(before.as_deref()).unwrap_or_default();
        let drain = if seen.drained.is_some() { Drain::Finished } else { Drain::Unfinished };
        self.rows.push(DrainRow::terminated(round, pod.id(), sessions, ending, before.as_deref(), account, drain));
        self.open_row = Some(clients_before);
        self.progress.drained();
        Ok(())
    }

    /// The kubelet's part: preStop, SIGTERM, then scrapes until the pod
    /// exits (the first body with the shutdown histogram is its account,
    /// and a scrape after the drain ends its metrics linger); SIGKILL at
    /// the grace period, which counts from `deleted`.
    async fn terminate(
        &self,
        pod: &mut Server,
        deleted: Instant,
        step: impl Fn(&str) -> String,
    ) -> (Ending, LastScrape) {
        let c = &self.config;
        self.progress.set(step("preStop"));
        tokio::time::sleep(c.prestop.min(c.grace)).await;
        self.progress.set(step("SIGTERM, draining"));
        pod.proc.signal(Signal::SIGTERM);
        let seen = pod.scrape_until_exit(deleted + c.grace, SCRAPE_EVERY, |_| {}).await;
        if pod.proc.try_status().is_some() {
            pod.proc.wait_exit(Duration::from_secs(5)).await;
            return (Ending::Exited, seen);
        }
        self.progress.set(step("grace period over: SIGKILL"));
        pod.proc.signal(Signal::SIGKILL);
        pod.proc.wait_exit(Duration::from_secs(10)).await;
        (Ending::GraceRanOut, seen)
    }

    /// The endpoint controller's removal of `id`, `--propagation-delay` from
    /// now, concurrently with whatever the kubelet does meanwhile.
    fn remove_endpoint_later(&self, id: &str) -> tokio::task::JoinHandle<()> {
        let balancer = self.balancer.clone();
        let (id, delay) = (id.to_owned(), self.config.propagation_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            balancer.remove(&id);
        })
    }

    /// Cuts pod `idx`'s network silently, as when its node dies: the Service
    /// stand-in stops carrying its bytes both ways (nothing closed), its
    /// endpoint goes after the propagation delay, and the ReplicaSet starts
    /// a replacement. Both sides must notice on their own, within
    /// PING_INTERVAL + PING_TIMEOUT: the pod frees every session and the
    /// users reconnect elsewhere. Then the pod is SIGKILLed (its node is gone).
    /// With `--heal-after`, a blip instead: no replacement, and at the heal
    /// the pod comes back into the Service and stays.
    pub(super) async fn partition(&mut self, idx: usize, round: u32) -> Result<(), Error> {
        let c = self.config.clone();
        let mut pod = self.pods.remove(idx);
        let id = pod.id().to_owned();
        let clients_before = self.clients_account().await;
        let before = scrape(pod.admin).await;
        let sessions =
            before.as_deref().and_then(|b| gsd_telemetry::sample(b, names::SERVER_SESSIONS)).unwrap_or(0.0) as u64;
        self.progress.set(self.step(round, &format!("partition {id}")));
        self.balancer.partition(&id);
        let cut = Instant::now();
        let removal = self.remove_endpoint_later(&id);
        if c.heal_after.is_none() {
            self.start_pod().await?;
        }
        // The pod is alive behind the cut; the lab reads it directly.
        let bound = c.ping_interval + c.ping_timeout;
        let freed = |body: &str| gsd_telemetry::sample(body, names::SERVER_SESSIONS) == Some(0.0);
        let body = scrape_until(pod.admin, cut + bound + Duration::from_secs(10), SCRAPE_EVERY, freed).await;
        let freed_after = cut.elapsed();
        let body = body.unwrap_or_default();
        let open = gsd_telemetry::sample(&body, names::SERVER_SESSIONS).unwrap_or(0.0) as u64;
        if open > 0 {
            self.findings.push(format!(
                "{id}: {open} of its {sessions} sessions still open {freed_after:.1?} after the cut (bound {bound:?})"
            ));
        }
        let mut row = DrainRow::partitioned(round, &id, sessions, freed_after, before.as_deref(), &body);
        if let Some(heal) = c.heal_after {
            self.progress.set(self.step(round, &format!("partition of {id} heals")));
            tokio::time::sleep_until(cut + heal).await;
            // After the endpoint's removal, so that it does not undo the heal.
            let _ = removal.await;
            self.balancer.heal(&id);
            self.pods.insert(idx, pod);
            row.sigkilled = false;
        } else {
            pod.proc.signal(Signal::SIGKILL);
            pod.proc.wait_exit(Duration::from_secs(10)).await;
            self.balancer.forget(&id);
        }
        self.rows.push(row);
        self.open_row = Some(clients_before);
        self.progress.drained();
        Ok(())
    }
}
