//! The scenarios a rehearsal repeats `--rounds` times: `delete-pod` (the
//! oldest pod deleted and replaced at once, as by a ReplicaSet),
//! `rolling-restart` (every replica replaced the way the default Deployment
//! strategy does it: maxSurge 1, maxUnavailable 0), `kill` (a SIGKILL with
//! no preStop and no grace) and `partition` (a node that vanishes). Each
//! round waits for every user to be back on a session, then lets traffic
//! settle.

use super::Lab;
use super::kubelet::{Replacement, Stop};
use crate::config::Scenario;
use crate::harness::Error;

impl Lab {
    /// Starts the pods and clients, then runs every round.
    pub(super) async fn rehearse(&mut self) -> Result<(), Error> {
        let c = self.config.clone();
        self.progress.set(format!("starting {} pods", c.servers));
        let mut ids = Vec::new();
        for _ in 0..c.servers {
            ids.push(self.start_pod().await?);
        }
        for id in ids {
            self.balancer.wait_ready(&id, super::START_TIMEOUT).await?;
        }
        self.progress.set(format!("starting {} x {} users", c.clients, c.users));
        for i in 0..c.clients {
            self.start_client(i).await?;
        }
        self.wait_users_back("every user connected").await;
        self.progress.set("traffic".into());
        tokio::time::sleep(c.settle).await;

        for round in 1..=c.rounds {
            match c.scenario {
                Scenario::Partition => self.partition(0, round).await?,
                Scenario::DeletePod => self.delete(0, round, Stop::Terminate, Replacement::StartNow).await?,
                Scenario::Kill => self.delete(0, round, Stop::Kill, Replacement::StartNow).await?,
                Scenario::RollingRestart => self.roll(round).await?,
            }
            if c.scenario != Scenario::RollingRestart {
                self.wait_users_back(&format!("round {round}: users back")).await;
                self.close_row().await;
            }
            self.progress.set(self.step(round, "traffic"));
            tokio::time::sleep(c.settle).await;
        }
        Ok(())
    }

    /// One round of a rolling restart: for every pod there was, a surge pod
    /// is started and made ready, then the old one deleted (not replaced:
    /// the surge pod is its replacement), and the users wait for.
    async fn roll(&mut self, round: u32) -> Result<(), Error> {
        let old: Vec<String> = self.pods.iter().map(|p| p.id().to_owned()).collect();
        for id in old {
            self.progress.set(self.step(round, "surge pod"));
            let new = self.start_pod().await?;
            self.balancer.wait_ready(&new, super::START_TIMEOUT).await?;
            let idx = self.pods.iter().position(|p| p.id() == id).expect("old pod still there");
            self.delete(idx, round, Stop::Terminate, Replacement::AlreadyStarted).await?;
            self.wait_users_back(&format!("round {round}: users back")).await;
            self.close_row().await;
        }
        Ok(())
    }
}
