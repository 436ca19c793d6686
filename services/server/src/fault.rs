//! FAULT INJECTION (the `FAULT_*` settings, all off by default): what the
//! faults need beyond a configuration field. `FAULT_RESET_AT_SIGTERM` has to
//! choose its sessions the same way every time, and to end their connections
//! with a TCP reset, which needs a hold on the socket from under the
//! WebSocket layer. Nothing here changes what a session does unless a fault
//! is set.

use std::collections::BTreeSet;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

/// Which sessions `FAULT_RESET_AT_SIGTERM` resets: the `count` opened first
/// among those still open at the signal.
pub(crate) struct ResetPick {
    /// How many sessions to reset.
    count: usize,
    /// The number the next session gets, and the numbers of the sessions
    /// open now. One lock for both, so that numbers follow the order in which
    /// sessions opened and a number is never given out while the choice is
    /// being made.
    open: Mutex<(u64, BTreeSet<u64>)>,
    /// Sessions numbered up to this one are reset; chosen once, at the
    /// signal (`None` inside: no session was open).
    cutoff: OnceLock<Option<u64>>,
}

impl ResetPick {
    /// The pick for `FAULT_RESET_AT_SIGTERM=count`; `None` when the fault is
    /// off, so that sessions then keep no number at all.
    pub fn new(count: u32) -> Option<Arc<ResetPick>> {
        (count > 0).then(|| {
            Arc::new(ResetPick {
                count: count as usize,
                open: Mutex::new((0, BTreeSet::new())),
                cutoff: OnceLock::new(),
            })
        })
    }

    /// Numbers a session that has just opened; it leaves the open set when
    /// the ticket is dropped.
    pub fn enter(self: &Arc<Self>) -> Ticket {
        let mut open = self.open.lock().expect("not poisoned");
        let number = open.0;
        open.0 += 1;
        open.1.insert(number);
        Ticket { pick: self.clone(), number }
    }

    /// Chooses the sessions to reset among those open now. Called once, at
    /// the signal, before any session learns of the drain.
    pub fn choose(&self) -> usize {
        let open = self.open.lock().expect("not poisoned");
        let chosen: Vec<u64> = open.1.iter().take(self.count).copied().collect();
        let _ = self.cutoff.set(chosen.last().copied());
        chosen.len()
    }

    /// Whether the session numbered `number` is to be reset (false before
    /// [`ResetPick::choose`]).
    pub fn is_chosen(&self, number: u64) -> bool {
        self.cutoff.get().copied().flatten().is_some_and(|cutoff| number <= cutoff)
    }
}

/// A session's place in the order of [`ResetPick`]: its number, held while
/// the session is open.
pub(crate) struct Ticket {
    /// The pick that gave the number, to leave it again.
    pick: Arc<ResetPick>,
    /// The session's number: sessions that opened earlier have lower ones.
    pub number: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pick.open.lock().expect("not poisoned").1.remove(&self.number);
    }
}

/// A session's hold on its own connection: once armed, the connection ends
/// with a TCP reset (RST) when it is dropped, rather than with an orderly
/// close (FIN). One per HTTP connection, handed to the session as a request
/// extension.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResetSwitch(Arc<AtomicBool>);

impl ResetSwitch {
    /// From now on, dropping the connection resets it.
    pub fn arm(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A connection that its [`ResetSwitch`] can make end with a reset. Reads
/// and writes go straight through.
pub(crate) struct Resettable<S> {
    /// The connection itself.
    inner: S,
    /// Armed by the session on this connection; read when it is dropped.
    switch: ResetSwitch,
    /// Makes `inner` reset when it is closed: the listener's
    /// [`crate::Listener::reset_on_close`].
    reset_on_close: fn(&S) -> io::Result<()>,
}

impl<S> Resettable<S> {
    /// `inner`, and the switch that the session on it will hold.
    pub fn new(inner: S, reset_on_close: fn(&S) -> io::Result<()>) -> (Self, ResetSwitch) {
        let switch = ResetSwitch::default();
        (Resettable { inner, switch: switch.clone(), reset_on_close }, switch)
    }
}

impl<S> Drop for Resettable<S> {
    fn drop(&mut self) {
        if self.switch.is_armed() {
            if let Err(error) = (self.reset_on_close)(&self.inner) {
                // The connection still ends, with a FIN instead of a reset.
                warn!(%error, "fault_reset_not_armed");
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Resettable<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Resettable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sessions_opened_first_among_those_open_are_chosen() {
        let pick = ResetPick::new(2).expect("on");
        let tickets: Vec<Ticket> = (0..5).map(|_| pick.enter()).collect();
        assert!(tickets.iter().all(|t| !pick.is_chosen(t.number)), "nothing is chosen before the signal");
        // The first session has closed: the next two open ones are chosen.
        let mut tickets = tickets.into_iter();
        drop(tickets.next());
        assert_eq!(pick.choose(), 2);
        let chosen: Vec<bool> = tickets.map(|t| pick.is_chosen(t.number)).collect();
        assert_eq!(chosen, [true, true, false, false]);
        // A session that opens after the choice is not chosen.
        assert!(!pick.is_chosen(pick.enter().number));
    }

    #[test]
    fn fewer_open_sessions_than_the_count_are_all_chosen() {
        assert!(ResetPick::new(0).is_none(), "off: no numbers kept");
        let pick = ResetPick::new(3).expect("on");
        let one = pick.enter();
        assert_eq!(pick.choose(), 1);
        assert!(pick.is_chosen(one.number));
        let empty = ResetPick::new(3).expect("on");
        assert_eq!(empty.choose(), 0);
        assert!(!empty.is_chosen(empty.enter().number));
    }
}
