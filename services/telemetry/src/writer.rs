//! The log lines' way to stdout: a buffer in memory that a thread of its own
//! writes out in batches. A worker that logs never waits on stdout: a
//! reader that stops (a full pipe, a stuck log collector) blocks that thread
//! alone, and once the buffer is full the lines that do not fit are dropped
//! and counted ([`lines_dropped`], exported as `gsd_*_log_lines_dropped_total`),
//! never allowed to stall a drain. Batching is also what makes logging
//! cheap: a drain of thousands of sessions writes its lines in a few dozen
//! system calls rather than one per line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Most bytes of log lines held for the writer thread. A client of 10,000
/// users logs about 4 MB of ledger lines at its exit, a drain of 10,000
/// sessions about 3 MB.
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// How long a logger waits for room in a full buffer before it drops its
/// line: a slow reader (a busy pipe) slows logging down, as a blocking
/// write would; a reader that stopped costs one such wait, after which
/// lines are dropped at once until a batch is written again.
const FULL_WAIT: Duration = Duration::from_millis(250);

/// A batch is written in pieces of this size, each one progress.
const CHUNK: usize = 64 << 10;

/// How long the writer thread lets lines gather after the first one of a
/// batch: a bound on how late a line reaches stdout, and what turns a burst
/// of lines into one write.
const LINGER: Duration = Duration::from_millis(20);

/// What the loggers and the writer thread share.
struct Buffered {
    state: Mutex<State>,
    /// Wakes the writer thread (a batch waits) and the flushers (a batch
    /// was written).
    changed: Condvar,
    /// Lines dropped: the buffer was full, or stdout failed to take them.
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Lines not yet taken by the writer thread.
    lines: Vec<u8>,
    /// Whether the writer thread waits for a line (only then is it woken:
    /// a line added while it lingers or writes costs no system call).
    idle: bool,
    /// Batches written so far, and taken so far: a flush waits until every
    /// batch taken before it is written.
    written: u64,
    taken: u64,
    /// Chunks of [`CHUNK`] bytes written so far: how a flush tells a slow
    /// reader from a stopped one.
    chunks: u64,
    /// The buffer was full for [`FULL_WAIT`]: lines are dropped at once
    /// until the next batch is written.
    stalled: bool,
}

/// The process's one buffer, started by the first [`LogWriter::stdout`].
static STDOUT: OnceLock<Arc<Buffered>> = OnceLock::new();

/// Log lines dropped so far because stdout did not keep up (or failed).
pub fn lines_dropped() -> u64 {
    STDOUT.get().map_or(0, |buffered| buffered.dropped.load(Ordering::Relaxed))
}

/// Writes out the lines logged so far; whether everything was written.
/// Gives up once nothing was written for `stalled` (a stdout nobody reads
/// would hold it forever) or after `most` in all (one that trickles
/// would hold it for as long as the buffer lasts). Called before the
/// process exits.
pub fn flush(stalled: Duration, most: Duration) -> bool {
    STDOUT.get().is_none_or(|buffered| buffered.flush(stalled, most))
}

/// A `MakeWriter` for the log layer: each line goes into the buffer.
#[derive(Clone)]
pub struct LogWriter(Arc<Buffered>);

impl LogWriter {
    /// The writer of the process's stdout (its thread starts on first use).
    pub fn stdout() -> LogWriter {
        LogWriter(STDOUT.get_or_init(|| Buffered::start(|| Box::new(std::io::stdout()))).clone())
    }

    /// A writer to `out`, with a thread of its own (for the tests).
    #[cfg(test)]
    fn to(out: impl Write + Send + 'static) -> LogWriter {
        let mut out = Some(out);
        LogWriter(Buffered::start(move || Box::new(out.take().expect("made once"))))
    }
}

impl Buffered {
    fn start(out: impl FnOnce() -> Box<dyn Write + Send> + Send + 'static) -> Arc<Buffered> {
        let buffered = Arc::new(Buffered {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = buffered.clone();
        std::thread::Builder::new()
            .name("gsd-log".into())
            .spawn(move || writer.write_out(out()))
            .expect("a thread for the log writer");
        buffered
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writer thread: waits for a line, lets more gather for [`LINGER`],
    /// writes them all in one go, and again, for the process's life.
    fn write_out(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            while state.lines.is_empty() {
                state.idle = true;
                state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.idle = false;
            drop(state);
            std::thread::sleep(LINGER);
            let mut state = self.lock();
            std::mem::swap(&mut batch, &mut state.lines);
            state.taken += 1;
            drop(state);
            // The buffer is empty again: a logger waiting for room goes on.
            self.changed.notify_all();
            // A stdout that fails (closed) loses what was in it, counted as
            // dropped; logging goes on, and a later line is tried again.
            for piece in batch.chunks(CHUNK) {
                if out.write_all(piece).and_then(|()| out.flush()).is_err() {
                    let lines = piece.iter().filter(|&&byte| byte == b'\n').count();
                    self.dropped.fetch_add(lines as u64, Ordering::Relaxed);
                }
                self.lock().chunks += 1;
                self.changed.notify_all();
            }
            batch.clear();
            if batch.capacity() > MAX_BUFFERED_BYTES / 8 {
                batch = Vec::new();
            }
            let mut state = self.lock();
            state.written += 1;
            state.stalled = false;
            drop(state);
            self.changed.notify_all();
        }
    }

    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        let full = |state: &State| state.lines.len() + line.len() > MAX_BUFFERED_BYTES;
        if full(&state) && !state.stalled {
            let deadline = Instant::now() + FULL_WAIT;
            while full(&state) && !state.stalled {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    state.stalled = true;
                    break;
                }
                state = self.changed.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
            }
        }
        if full(&state) {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.lines.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            drop(state);
            self.changed.notify_all();
        }
    }

    /// Waits until every line logged before the call is written; gives up
    /// when nothing was written for `stalled` (a slow reader that keeps
    /// reading is waited for), or after `most`.
    fn flush(&self, stalled: Duration, most: Duration) -> bool {
        let end = Instant::now() + most;
        let mut state = self.lock();
        // Every batch taken by now, and the lines waiting (a batch still to
        // take), must be written.
        let target = state.taken + u64::from(!state.lines.is_empty());
        if state.idle && !state.lines.is_empty() {
            state.idle = false;
            self.changed.notify_all();
        }
        let (mut progress, mut deadline) = (state.chunks, (Instant::now() + stalled).min(end));
        while state.written < target {
            if state.chunks != progress {
                (progress, deadline) = (state.chunks, (Instant::now() + stalled).min(end));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        true
    }
}

/// One line on its way into the buffer: the log layer writes a whole
/// formatted line with one `write_all`.
pub struct Line<'a>(&'a Buffered);

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink the test can read, and block.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        /// Held by the test: every write waits on it (a reader that stopped).
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            self.writes.fetch_add(1, Ordering::Relaxed);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_a_burst_is_one_write() {
        let sink = Sink::default();
        let writer = LogWriter::to(sink.clone());
        for i in 0..1000 {
            log(&writer, &format!("line {i}\n"));
        }
        assert!(writer.0.flush(Duration::from_secs(10), Duration::from_secs(30)));
        let text = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")), "{lines:?}");
        let writes = sink.writes.load(Ordering::Relaxed);
        assert!(writes <= 3, "1000 lines logged at once took {writes} writes");
    }

    #[test]
    fn a_stdout_that_stops_does_not_block_a_logger_and_the_lines_past_the_buffer_are_counted() {
        let sink = Sink::default();
        let stopped = sink.gate.lock().unwrap();
        let writer = LogWriter::to(sink.clone());
        let line = "x".repeat(1023) + "\n";
        let fit = MAX_BUFFERED_BYTES / line.len();
        let started = Instant::now();
        // The first batch is taken by the writer thread, which then waits on
        // the stopped sink; the buffer fills behind it, the next line waits
        // FULL_WAIT for room, and it and every line after it are dropped.
        log(&writer, &line);
        std::thread::sleep(LINGER * 4);
        for _ in 0..fit + 100 {
            log(&writer, &line);
        }
        let took = started.elapsed();
        assert!(took >= FULL_WAIT && took < FULL_WAIT + Duration::from_secs(5), "logging took {took:?}");
        assert_eq!(writer.0.dropped.load(Ordering::Relaxed), 100, "the lines past the buffer, exactly");
        assert!(!writer.0.flush(Duration::from_millis(50), Duration::from_secs(30)), "nothing can be written yet");
        drop(stopped);
        assert!(writer.0.flush(Duration::from_secs(10), Duration::from_secs(30)));
        assert_eq!(sink.written.lock().unwrap().len(), (fit + 1) * line.len(), "every line kept was written");
    }

    /// A stdout that takes every write and fails it (closed).
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_failing_stdout_did_not_take_are_counted_dropped() {
        let writer = LogWriter::to(Closed);
        for i in 0..37 {
            log(&writer, &format!("line {i}\n"));
        }
        assert!(writer.0.flush(Duration::from_secs(10), Duration::from_secs(30)));
        assert_eq!(writer.0.dropped.load(Ordering::Relaxed), 37);
    }

    /// A stdout that takes each write slowly (a reader that trickles).
    struct Slow(Duration);

    impl Write for Slow {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.0);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stdout_that_trickles_holds_the_exit_no_longer_than_the_most_it_is_given() {
        // 32 chunks of 64 KiB at 50 ms each: 1.6 s of writing, with progress
        // every 50 ms, so only the bound in all stops the wait.
        let writer = LogWriter::to(Slow(Duration::from_millis(50)));
        let line = "y".repeat(1023) + "\n";
        for _ in 0..32 * CHUNK / line.len() {
            log(&writer, &line);
        }
        let started = Instant::now();
        assert!(!writer.0.flush(Duration::from_secs(5), Duration::from_millis(300)), "not all of it in 300 ms");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(1), "{took:?}");
    }
}
