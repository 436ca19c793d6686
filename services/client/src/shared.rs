//! What every virtual user of the process shares: the configuration, the
//! metrics and the shutdown token.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::ClientMetrics;

/// What every virtual user of the process shares.
pub(crate) struct Shared {
    /// The process's configuration, the same for every user.
    pub config: Config,
    /// The process's metrics, which every user adds to.
    pub metrics: ClientMetrics,
    /// Cancelled on SIGTERM/SIGINT: users finish and close with 1000.
    pub shutdown: CancellationToken,
}
