//! Who may hold a connection: caps on connections that have not logged in
//! yet (over the whole server and per source address) and on all
//! connections of one source address, checked when a connection is
//! accepted, before anything is read from it.
//!
//! A connection costs the server memory and a file descriptor from the
//! moment it is accepted, and one that never logs in costs it for the whole
//! login timeout; an attacker without an account can open as many as the
//! server lets it. These caps bound that: past one, a new connection is
//! closed at once (accept-and-close), before TLS or any parsing. Past the
//! cap over the whole server, the connection that has waited longest for
//! its login is closed instead, so that idle connections cannot lock
//! honest clients out: one that logs in promptly keeps its place.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// The caps, from [`crate::Config`]. Zero means no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdmissionLimits {
    /// Connections not logged in yet, over the server.
    pub(crate) pending: usize,
    /// Connections not logged in yet, per source address.
    pub(crate) pending_per_ip: usize,
    /// All connections of one source address.
    pub(crate) per_ip: usize,
    /// All connections (each is a file descriptor).
    pub(crate) total: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This address holds its most connections waiting for a login.
    PendingPerIp,
    /// This address holds its most connections.
    PerIp,
    /// The server holds its most connections.
    Total,
}

impl Refused {
    /// For logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::PendingPerIp => "too many connections waiting for a login from this address",
            Refused::PerIp => "too many connections from this address",
            Refused::Total => "at the connection limit (file descriptors kept in reserve)",
        }
    }
}

#[derive(Debug, Default)]
struct PerIp {
    pending: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    by_ip: HashMap<IpAddr, PerIp>,
    /// Connections waiting for their login, oldest first: their source
    /// address and what tells them to go. Its length is the number waiting.
    waiting: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    next: u64,
}

impl State {
    /// Counts the waiting connection from `ip` as no longer waiting.
    fn done_waiting(&mut self, ip: IpAddr) {
        if let Some(here) = self.by_ip.get_mut(&ip) {
            here.pending = here.pending.saturating_sub(1);
        }
    }
}

/// The server's count of connections, by state and source address. The
/// number waiting and the number closed to make room are kept in the
/// server's [`Metrics`] (`pending_logins`, `pending_evicted`).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::default(),
            metrics,
        })
    }

    /// Takes `seq` off the waiting list; whether it was on it.
    fn stop_waiting(&self, s: &mut State, seq: u64) -> bool {
        match s.waiting.remove(&seq) {
            Some((ip, _)) => {
                s.done_waiting(ip);
                self.count_waiting(s);
                true
            }
            None => false,
        }
    }

    fn count_waiting(&self, s: &State) {
        self.metrics
            .pending_logins
            .set(crate::metrics::gauge_value(s.waiting.len()));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters only: still right after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `ip`, waiting for its login, or says
    /// which cap it hit.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let l = self.limits;
        let mut s = self.state();
        if l.total > 0 && s.total >= l.total {
            return Err(Refused::Total);
        }
        let here = s.by_ip.get(&ip);
        let (pending, total) = here.map_or((0, 0), |p| (p.pending, p.total));
        if l.pending_per_ip > 0 && pending >= l.pending_per_ip {
            return Err(Refused::PendingPerIp);
        }
        if l.per_ip > 0 && total >= l.per_ip {
            return Err(Refused::PerIp);
        }
        if l.pending > 0 && s.waiting.len() >= l.pending {
            // Make room: the connection that has waited longest goes.
            if let Some((_, (old_ip, go))) = s.waiting.pop_first() {
                go.notify_one();
                s.done_waiting(old_ip);
                Metrics::inc(&self.metrics.pending_evicted);
            }
        }
        s.total += 1;
        let here = s.by_ip.entry(ip).or_default();
        here.pending += 1;
        here.total += 1;
        let seq = s.next;
        s.next += 1;
        let evicted = Arc::new(Notify::new());
        s.waiting.insert(seq, (ip, evicted.clone()));
        self.count_waiting(&s);
        Ok(Ticket {
            admission: self.clone(),
            ip,
            seq,
            evicted,
            admitted: Instant::now(),
        })
    }
}

/// One admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    seq: u64,
    evicted: Arc<Notify>,
    admitted: Instant,
}

impl Ticket {
    /// When the connection was accepted.
    pub(crate) fn admitted(&self) -> Instant {
        self.admitted
    }

    /// The connection logged in: it no longer counts as waiting (and can
    /// no longer be closed to make room). `false` when it was closed to
    /// make room first: it must end instead.
    #[must_use]
    pub(crate) fn logged_in(&mut self) -> bool {
        let a = &self.admission;
        a.stop_waiting(&mut a.state(), self.seq)
    }

    /// Signalled when the connection is to close, before its login, to
    /// make room for a newer one. Never signalled once
    /// [`Ticket::logged_in`] said `true`, so the connection goes on to use
    /// it as its kick signal (one allocation less per session).
    pub(crate) fn eviction(&self) -> Arc<Notify> {
        self.evicted.clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut s = a.state();
        a.stop_waiting(&mut s, self.seq);
        s.total = s.total.saturating_sub(1);
        if let Some(here) = s.by_ip.get_mut(&self.ip) {
            here.total = here.total.saturating_sub(1);
            if here.total == 0 {
                s.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Descriptors kept free below the open-file limit: 5 %, at least 64.
pub(crate) fn connections_for_fd_limit(limit: Option<u64>) -> usize {
    match limit {
        // No limit known (or none): no cap.
        None | Some(0) => 0,
        Some(n) if n >= u64::from(u32::MAX) => 0,
        Some(n) => {
            let reserve = (n / 20).max(64);
            usize::try_from(n.saturating_sub(reserve))
                .unwrap_or(0)
                .max(1)
        }
    }
}

/// The soft open-file limit of this process, if there is one.
#[cfg(unix)]
pub(crate) fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    // rlim_t is u64 on Linux but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let cur = lim.rlim_cur as u64;
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(cur)
}

/// No limit known elsewhere.
#[cfg(not(unix))]
pub(crate) fn open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `f` is ready at once.
    fn futures_now(f: impl std::future::Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.as_mut().poll(&mut cx).is_ready()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admission(limits: AdmissionLimits) -> Arc<Admission> {
        Admission::new(limits, Arc::new(Metrics::default()))
    }

    impl Admission {
        fn pending(&self) -> u64 {
            u64::try_from(self.metrics.pending_logins.get()).unwrap_or(0)
        }

        fn evicted(&self) -> u64 {
            self.metrics.pending_evicted.get()
        }
    }

    #[test]
    fn caps_apply_and_tickets_give_their_place_back() {
        let a = admission(AdmissionLimits {
            pending: 3,
            pending_per_ip: 2,
            per_ip: 3,
            total: 0,
        });
        let t1 = a.enter(ip(1)).unwrap();
        let mut t2 = a.enter(ip(1)).unwrap();
        assert_eq!(a.enter(ip(1)).unwrap_err(), Refused::PendingPerIp);
        // A login frees its waiting place, not its place per address.
        assert!(t2.logged_in());
        assert!(!t2.logged_in(), "it was no longer waiting");
        let mut t3 = a.enter(ip(1)).unwrap();
        assert!(t3.logged_in());
        // Three from 127.0.0.1, one of them waiting: the address is full.
        assert_eq!(a.enter(ip(1)).unwrap_err(), Refused::PerIp);
        let t4 = a.enter(ip(2)).unwrap();
        assert_eq!(a.pending(), 2);
        let t5 = a.enter(ip(3)).unwrap();
        assert_eq!(a.pending(), 3);
        // Full: the longest waiting (t1) is told to go, and the newcomer
        // takes its place.
        let go = t1.eviction();
        let t6 = a.enter(ip(4)).unwrap();
        assert_eq!((a.pending(), a.evicted()), (3, 1));
        assert!(
            futures_now(go.notified()),
            "the oldest waiting connection was not told to go"
        );
        // A login that comes too late is told so.
        let mut t1 = t1;
        assert!(!t1.logged_in(), "an evicted connection may not log in");
        // Its place was given back already: dropping it changes nothing.
        drop(t1);
        assert_eq!(a.pending(), 3);
        // Logged-in connections are never evicted.
        let t7 = a.enter(ip(5)).unwrap();
        assert_eq!(a.evicted(), 2, "t4, the oldest still waiting");
        drop((t2, t3, t4, t5, t6, t7));
        assert_eq!(a.pending(), 0);
        assert!(a.state().by_ip.is_empty(), "no address left behind");
    }

    #[test]
    fn the_total_cap_counts_logged_in_connections_too() {
        let a = admission(AdmissionLimits {
            pending: 0,
            pending_per_ip: 0,
            per_ip: 0,
            total: 2,
        });
        let mut t1 = a.enter(ip(1)).unwrap();
        assert!(t1.logged_in());
        let t2 = a.enter(ip(2)).unwrap();
        assert_eq!(a.enter(ip(3)).unwrap_err(), Refused::Total);
        drop(t2);
        let _t3 = a.enter(ip(3)).unwrap();
    }

    #[test]
    fn the_descriptor_reserve_is_five_percent_and_at_least_64() {
        assert_eq!(connections_for_fd_limit(Some(20_000)), 19_000);
        assert_eq!(connections_for_fd_limit(Some(1024)), 960);
        assert_eq!(connections_for_fd_limit(Some(50)), 1);
        assert_eq!(connections_for_fd_limit(None), 0);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn zero_means_no_cap() {
        let a = admission(AdmissionLimits {
            pending: 0,
            pending_per_ip: 0,
            per_ip: 0,
            total: 0,
        });
        let tickets: Vec<_> = (0..1000).map(|_| a.enter(ip(1)).unwrap()).collect();
        assert_eq!(a.pending(), 1000);
        drop(tickets);
        assert_eq!(a.pending(), 0);
    }
}
