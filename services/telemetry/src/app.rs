//! The frame every gsd program runs in: telemetry before anything else, the
//! descriptor limit raised, a multi-thread tokio runtime, and, when the work
//! is over, the runtime stopped before the last spans are flushed. The
//! SIGTERM/SIGINT handling the programs share is [`Signals`].
//!
//! gsd-server, gsd-client and gsd-lab (which is both of them as well) each
//! describe themselves with an [`App`] and hand it their async work; what
//! they do on a signal stays theirs, built from [`Signals`].

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{LogFormat, Telemetry, TelemetryError};

/// Exit status of a gsd program ended by a signal before its work was done
/// (128 + SIGINT, what a shell reports for Ctrl-C).
pub const INTERRUPTED: u8 = 130;

/// How far a program raises its open-descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nofile {
    /// The soft limit up to the hard one: every session holds a descriptor,
    /// and the default soft limit (1024) is far below thousands of sessions.
    Soft,
    /// The hard limit too, to 2^20, where the process may (as root); else as
    /// [`Nofile::Soft`]. For a program that holds several descriptors per
    /// connection and whose children inherit the limit.
    Hard,
}

/// What failed before the program's own work could start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("installing the {0} handler")]
    Signal(&'static str, #[source] std::io::Error),
}

/// One gsd program's set-up, run by [`App::run`].
#[derive(Debug, Clone)]
pub struct App {
    /// The log format and the default OTLP service name; `None` for a
    /// program that installs no subscriber (the lab prints its own report).
    telemetry: Option<(LogFormat, &'static str)>,
    /// How far the descriptor limit is raised before the runtime starts.
    nofile: Nofile,
    /// How long blocking tasks get once the work is over, so that one stuck
    /// in a system call cannot hold the exit.
    runtime_grace: Duration,
}

/// How long the exporter gets to send the last spans (the drain's) at exit.
const TRACE_FLUSH: Duration = Duration::from_secs(3);

/// How long the exit waits for the last log lines to reach stdout while
/// none of them is written (a stdout nobody reads cannot hold the process
/// past it), and at most in all (nor can one that trickles).
const LOG_FLUSH: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(30));

/// The same after a second signal, which means "now", or a panic.
const LOG_FLUSH_INTERRUPTED: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(300));

/// Writes out the buffered log lines, or says on stderr (which is not
/// buffered) that some could not be.
fn flush_logs((stalled, most): (Duration, Duration)) {
    if !crate::writer::flush(stalled, most) {
        eprintln!("gsd: stdout did not take the last log lines in time (none for {stalled:?}, or {most:?} in all)");
    }
    let dropped = crate::writer::lines_dropped();
    if dropped > 0 {
        eprintln!("gsd: {dropped} log lines were dropped because stdout did not keep up");
    }
}

impl App {
    /// A service that logs and traces: `format` for its log lines, `name`
    /// for its spans (unless the OTLP environment names it).
    pub fn service(format: LogFormat, name: &'static str) -> Self {
        App { telemetry: Some((format, name)), nofile: Nofile::Soft, runtime_grace: Duration::from_secs(1) }
    }

    /// A program without a tracing subscriber.
    pub fn untraced() -> Self {
        App { telemetry: None, nofile: Nofile::Soft, runtime_grace: Duration::from_secs(1) }
    }

    pub fn nofile(self, nofile: Nofile) -> Self {
        App { nofile, ..self }
    }

    pub fn runtime_grace(self, runtime_grace: Duration) -> Self {
        App { runtime_grace, ..self }
    }

    /// Installs telemetry, raises the descriptor limit, and runs `work` on a
    /// fresh multi-thread runtime to its end. `work` is given the soft
    /// descriptor limit now in force, when the raise reported it (for the
    /// `start` log line). Telemetry comes first because the OTLP exporter's
    /// HTTP client must not be created inside the runtime; its flush comes
    /// last, after the runtime has stopped.
    pub fn run<F, T>(self, work: impl FnOnce(Option<u64>) -> F) -> Result<T, AppError>
    where
        F: Future<Output = T>,
    {
        let telemetry: Option<Telemetry> = match self.telemetry {
            Some((format, name)) => Some(crate::init(format, name)?),
            None => None,
        };
        let nofile = match self.nofile {
            Nofile::Soft => rlimit::increase_nofile_limit(u64::MAX).ok(),
            Nofile::Hard => rlimit::setrlimit(rlimit::Resource::NOFILE, 1 << 20, 1 << 20)
                .map(|()| 1 << 20)
                .or_else(|_| rlimit::increase_nofile_limit(u64::MAX))
                .ok(),
        };
        let runtime = tokio::runtime::Runtime::new().map_err(AppError::Runtime)?;
        // A panic out of `work` still writes out the lines logged before it.
        let _on_panic = FlushOnPanic;
        let output = runtime.block_on(work(nofile));
        runtime.shutdown_timeout(self.runtime_grace);
        if let Some(telemetry) = telemetry {
            telemetry.shutdown(TRACE_FLUSH);
        }
        flush_logs(LOG_FLUSH);
        Ok(output)
    }
}

/// Writes out the buffered log lines when dropped by a panic's unwinding.
struct FlushOnPanic;

impl Drop for FlushOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            flush_logs(LOG_FLUSH_INTERRUPTED);
        }
    }
}

/// SIGTERM (the kubelet, `kill`) and SIGINT (Ctrl-C): the two signals every
/// gsd program stops on. Once installed, neither kills the process by
/// itself any more: the program decides.
pub struct Signals {
    /// SIGTERM deliveries not yet received.
    term: Signal,
    /// SIGINT deliveries not yet received.
    int: Signal,
}

impl Signals {
    /// Installs both handlers; call it inside the runtime.
    pub fn install() -> Result<Self, AppError> {
        let term = signal(SignalKind::terminate()).map_err(|e| AppError::Signal("SIGTERM", e))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| AppError::Signal("SIGINT", e))?;
        Ok(Signals { term, int })
    }

    /// Resolves at the next SIGTERM or SIGINT, with the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// From now on, the next signal means "now": `log` is called with its
    /// name and the process exits with [`INTERRUPTED`] at once, whatever it
    /// was still doing (a drain, say).
    pub fn exit_on_next(mut self, log: impl FnOnce(&'static str) + Send + 'static) {
        tokio::spawn(async move {
            log(self.recv().await);
            flush_logs(LOG_FLUSH_INTERRUPTED);
            std::process::exit(INTERRUPTED.into());
        });
    }
}
