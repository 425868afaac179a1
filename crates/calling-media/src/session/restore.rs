//! Bringing interrupted media back: when a connection goes disconnected or
//! failed, both sides report [`PeerMedia::Interrupted`] and start a bounded
//! wait; the offering side restarts ICE at once and again with backoff
//! while the wait lasts. Reconnected in time is [`PeerMedia::Restored`];
//! not, [`PeerMedia::Failed`] (no more restarts).
//!
//! Each side decides by itself: the other may be unreachable, and the
//! answerer, which never offers, still owes its app a verdict. The
//! answerer asks the offerer to restart ([`MediaSignal::Restart`]) each
//! time the offerer would retry: a path that broke towards the answerer
//! only leaves the offerer's ICE connected, and it would not restart.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::peer::PeerShared;
use super::{Inner, MediaSession};
use crate::types::{MediaEvent, MediaSignal, PeerMedia};

/// The longest wait between two restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A restart (asked for or our own retry) this soon after the last one is
/// served by it: the answerer asks once per retry, at least a second apart.
const MIN_RESTART_GAP: Duration = Duration::from_millis(900);

/// While our last restart offer waits for its answer, a request is served
/// by it for this long; later, the offer may have been lost on the way
/// (the signalling connection dropped too) and is made again.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Where the media of one connection stands across restarts.
#[derive(Default)]
pub(super) struct Restore {
    /// Interrupted since then, and not given up.
    since: Option<Instant>,
    /// [`PeerMedia::Failed`] was reported for the interruption.
    failed: bool,
    /// Counts interruptions, so that the task of an earlier one ends.
    generation: u64,
    /// When we (the offerer) last offered an ICE restart.
    last_restart: Option<Instant>,
}

/// We offered an ICE restart now.
pub(super) fn restarted(shared: &PeerShared) {
    shared
        .restore
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .last_restart = Some(Instant::now());
}

/// The answering side asked for a restart: whether to make one, not when
/// one was made a moment ago, or when its offer (`awaiting` an answer) is
/// still on its way.
pub(super) fn restart_requested(shared: &PeerShared, awaiting: bool) -> bool {
    let gap = if awaiting {
        ANSWER_WAIT
    } else {
        MIN_RESTART_GAP
    };
    !shared.closed.load(Ordering::Acquire) && !restarted_within(shared, gap)
}

/// Whether we offered a restart less than `gap` ago.
fn restarted_within(shared: &PeerShared, gap: Duration) -> bool {
    shared
        .restore
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .last_restart
        .is_some_and(|at| at.elapsed() < gap)
}

/// The connection went disconnected or failed: report it once per
/// interruption and start the task that restores it or gives up.
pub(super) fn interrupted(shared: &Arc<PeerShared>, session: &Weak<Inner>) {
    if shared.closed.load(Ordering::Acquire) {
        return;
    }
    let Some(inner) = session.upgrade() else {
        return;
    };
    let generation = {
        let mut r = shared
            .restore
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if r.since.is_some() || r.failed {
            return;
        }
        r.since = Some(Instant::now());
        r.generation += 1;
        inner.emit(MediaEvent::PeerMedia {
            user: shared.remote.clone(),
            state: PeerMedia::Interrupted,
        });
        r.generation
    };
    tracing::info!(user = %shared.remote, "media interrupted; restoring");
    tokio::spawn(restore(shared.clone(), session.clone(), generation));
}

/// The connection is up: media that was interrupted is restored.
pub(super) fn connected(shared: &PeerShared, session: Option<&Inner>) {
    let mut r = shared
        .restore
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if r.since.take().is_none() && !r.failed {
        return;
    }
    r.failed = false;
    if let Some(inner) = session {
        inner.emit(MediaEvent::PeerMedia {
            user: shared.remote.clone(),
            state: PeerMedia::Restored,
        });
    }
    drop(r);
    tracing::info!(user = %shared.remote, "media restored");
    shared.restored.notify_one();
}

/// Whether interruption `generation` is still the one under way.
fn still_interrupted(shared: &PeerShared, generation: u64) -> bool {
    let r = shared
        .restore
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    r.since.is_some() && r.generation == generation && !shared.closed.load(Ordering::Acquire)
}

/// Restarts ICE (on the offering side) until the connection is back or
/// the session's restore bound has passed, then reports the verdict.
async fn restore(shared: Arc<PeerShared>, session: Weak<Inner>, generation: u64) {
    let Some((bound, first, offerer)) = session.upgrade().map(|inner| {
        let cfg = &inner.config;
        let offerer = super::is_offerer(&inner.local_user, &shared.remote);
        // A restart gets the time a generation needs to check its pairs.
        let first = cfg.ice_check_window.max(Duration::from_secs(1));
        (cfg.media_restore_timeout, first, offerer)
    }) else {
        return;
    };
    let deadline = Instant::now() + bound;
    let mut wait = first;
    loop {
        if !still_interrupted(&shared, generation) {
            return;
        }
        if offerer && restarted_within(&shared, MIN_RESTART_GAP) {
            // A request from the answerer made one a moment ago.
            tracing::debug!(user = %shared.remote, "restarted a moment ago; waiting");
        } else if offerer {
            let Some(inner) = session.upgrade() else {
                return;
            };
            let media = MediaSession { inner };
            if let Err(e) = media.restart_ice(&shared).await {
                tracing::warn!(user = %shared.remote, error = %e, "ICE restart failed");
            }
        } else if let Some(inner) = session.upgrade() {
            // Only the offerer restarts; it may see nothing wrong when the
            // path broke towards us only, so ask it each time.
            tracing::debug!(user = %shared.remote, "asking the offerer to restart ICE");
            inner.emit(MediaEvent::Signal {
                to: shared.remote.clone(),
                signal: MediaSignal::Restart,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(wait.min(left)) => {}
            () = shared.restored.notified() => {}
        }
        if Instant::now() >= deadline {
            break;
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    let mut r = shared
        .restore
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if r.since.is_none() || r.generation != generation || shared.closed.load(Ordering::Acquire) {
        return;
    }
    r.since = None;
    r.failed = true;
    if let Some(inner) = session.upgrade() {
        tracing::warn!(user = %shared.remote, ?bound, "media not restored in time; given up");
        inner.emit(MediaEvent::PeerMedia {
            user: shared.remote.clone(),
            state: PeerMedia::Failed,
        });
    }
}
