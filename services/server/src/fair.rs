//! The admin port's admission rule: a fair share per address, so that the
//! kubelet's probes get in whatever other pods hold on the port.
//!
//! Any pod in the cluster may reach the admin port, so a cap alone lets one
//! pod fill it with idle or slow connections and fail every probe. Under
//! the cap, every connection is admitted. At the cap, a newcomer is
//! admitted in place of the oldest idle connection (waiting for its
//! request, not in a handler) of the address holding the most connections,
//! if that address holds at least two more than the newcomer's; else it is
//! refused. The kubelet holds a connection only for the instant a probe
//! takes, so its next probe comes from an address holding none, and gets
//! in unless every one of the cap's connections is held by a different
//! address (64 pods at once, each holding one); pods that hold more only
//! push each other out, and once their shares are even they stop doing so.
//! A preStop call is a request in a handler and is never evicted.
//!
//! What it cannot tell apart: anything sharing the kubelet's address (a pod
//! on the host network of the same node) counts as the kubelet.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The connections admitted on one port, by address.
pub(crate) struct Shares {
    /// Connections admitted; past it, a newcomer needs an eviction.
    max: usize,
    /// Evicted connections not closed yet, at most (each one still holds a
    /// descriptor): [`Shares::room`] waits below it.
    max_evicting: usize,
    /// The book, behind one lock: admission and release are rare and short
    /// next to what a connection costs.
    book: Mutex<Book>,
    /// Woken when an evicted connection has closed.
    closed: Notify,
}

#[derive(Default)]
struct Book {
    /// Each address's connections, oldest first (evicted ones leave at once).
    by_peer: HashMap<IpAddr, VecDeque<Arc<Slot>>>,
    /// Connections admitted and not closed, evicted ones included.
    open: usize,
    /// Connections evicted and not closed yet.
    evicting: usize,
}

/// One admitted connection, as the book and the connection's task both see it.
#[derive(Default)]
pub(crate) struct Slot {
    /// Cancelled when the connection is evicted; its task closes it.
    evicted: CancellationToken,
    /// Requests in a handler on the connection; one that is busy is not
    /// evicted (a preStop call is held for seconds).
    requests: AtomicUsize,
}

/// A connection's place under [`Shares`]: held by the connection's task,
/// given back when it is dropped.
pub(crate) struct Share {
    /// The book to give the place back to.
    shares: Arc<Shares>,
    /// The address the connection came from.
    peer: IpAddr,
    /// What the book holds of this connection.
    slot: Arc<Slot>,
}

/// Marks a connection busy while a request is in a handler.
pub(crate) struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shares {
    pub fn new(max: usize, max_evicting: usize) -> Arc<Shares> {
        Arc::new(Shares { max, max_evicting, book: Mutex::new(Book::default()), closed: Notify::new() })
    }

    /// Resolves once fewer than `max_evicting` evicted connections are
    /// still open. The accept loop waits for it before each accept, so that
    /// evictions that have not taken effect yet hold boundedly many
    /// descriptors, and a newcomer is never refused only because they have
    /// not (the evicted close within moments).
    pub async fn room(&self) {
        loop {
            // Created before the check, so a close in between still wakes it.
            let closed = self.closed.notified();
            if self.book.lock().expect("not poisoned").evicting < self.max_evicting {
                return;
            }
            closed.await;
        }
    }

    /// Admits a connection from `peer`, evicting another if the port is
    /// full and the rule allows; `None` when it is to be refused.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Share> {
        let mut book = self.book.lock().expect("not poisoned");
        if book.open >= self.max {
            let mine = book.by_peer.get(&peer).map_or(0, VecDeque::len);
            // The address holding the most, two more than `peer` at least
            // (one more would only swap their places), that has an idle
            // connection to give up.
            let victim = book
                .by_peer
                .iter()
                .filter(|(_, slots)| slots.len() > mine + 1)
                .filter_map(|(ip, slots)| {
                    let idle = slots.iter().position(|slot| slot.requests.load(Ordering::SeqCst) == 0)?;
                    Some((slots.len(), *ip, idle))
                })
                .max_by_key(|(held, _, _)| *held);
            let (_, ip, idle) = victim?;
            let slots = book.by_peer.get_mut(&ip).expect("just found");
            let slot = slots.remove(idle).expect("just found");
            if slots.is_empty() {
                book.by_peer.remove(&ip);
            }
            slot.evicted.cancel();
            book.evicting += 1;
        }
        book.open += 1;
        let slot = Arc::new(Slot::default());
        book.by_peer.entry(peer).or_default().push_back(slot.clone());
        Some(Share { shares: self.clone(), peer, slot })
    }

    /// Connections admitted and not closed, evicted ones included.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.book.lock().expect("not poisoned").open
    }
}

impl Share {
    /// Resolves when the connection has been evicted.
    pub async fn evicted(&self) {
        self.slot.evicted.cancelled().await
    }

    /// The connection's slot, for its requests to mark it busy.
    pub fn slot(&self) -> Arc<Slot> {
        self.slot.clone()
    }
}

impl Slot {
    /// Marks the connection busy (not to be evicted) until the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut book = self.shares.book.lock().expect("not poisoned");
        book.open -= 1;
        if self.slot.evicted.is_cancelled() {
            book.evicting -= 1;
            self.shares.closed.notify_waiters();
            return;
        }
        if let Some(slots) = book.by_peer.get_mut(&self.peer) {
            slots.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
            if slots.is_empty() {
                book.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn under_the_cap_everyone_is_admitted_and_at_it_the_biggest_holder_yields() {
        let shares = Shares::new(4, 2);
        let attacker: Vec<Share> = (0..4).map(|_| shares.admit(ip(1)).expect("under the cap")).collect();
        assert!(shares.admit(ip(1)).is_none(), "the one holding everything gains nothing");
        // The kubelet's probe: an address with none takes the oldest.
        let probe = shares.admit(ip(9)).expect("a newcomer with none gets in");
        assert!(attacker[0].slot.evicted.is_cancelled() && !attacker[1].slot.evicted.is_cancelled());
        assert_eq!(shares.open(), 5, "the evicted one holds its descriptor until it closes");
        drop(attacker);
        assert_eq!(shares.open(), 1);
        drop(probe);
        assert_eq!(shares.open(), 0);
    }

    #[test]
    fn an_address_evicts_only_from_one_holding_two_more_and_busy_connections_stay() {
        let shares = Shares::new(3, 8);
        let a = [shares.admit(ip(1)).unwrap(), shares.admit(ip(1)).unwrap()];
        let _b = shares.admit(ip(2)).unwrap();
        assert!(shares.admit(ip(2)).is_none(), "1 against 2: no one yields");
        let held = a[0].slot().busy();
        assert!(shares.admit(ip(3)).is_some(), "0 against 2: an idle one yields");
        assert!(a[1].slot.evicted.is_cancelled() && !a[0].slot.evicted.is_cancelled(), "the busy one stays");
        drop(held);
        assert_eq!(a[0].slot.requests.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn evictions_not_yet_closed_are_bounded_and_waited_out() {
        use futures_util::FutureExt;
        let shares = Shares::new(4, 1);
        let mut attacker: Vec<Share> = (0..4).map(|_| shares.admit(ip(1)).unwrap()).collect();
        assert!(shares.room().now_or_never().is_some());
        let _first = shares.admit(ip(2)).expect("an eviction");
        assert!(shares.room().now_or_never().is_none(), "one eviction in flight: the next accept waits");
        drop(attacker.remove(0));
        assert!(shares.room().now_or_never().is_some(), "the evicted one has closed");
    }
}
