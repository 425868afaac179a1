//! Bringing interrupted media back: when a connection goes disconnected or
//! failed, both sides report [`PeerMedia::Interrupted`] and start a bounded
//! wait; the offering side restarts ICE at once and again with backoff
//! while the wait lasts. Reconnected in time is [`PeerMedia::Restored`];
//! not, [`PeerMedia::Failed`] (no more restarts).
//!
//! Each side decides by itself: the other may be unreachable, and the
//! answerer, which never offers, still owes its app a verdict.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::peer::PeerShared;
use super::{Inner, MediaSession};
use crate::types::{MediaEvent, PeerMedia};

/// The longest wait between two restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Where the media of one connection stands across restarts.
#[derive(Default)]
pub(super) struct Restore {
    /// Interrupted since then, and not given up.
    since: Option<Instant>,
    /// [`PeerMedia::Failed`] was reported for the interruption.
    failed: bool,
    /// Counts interruptions, so that the task of an earlier one ends.
    generation: u64,
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
        if offerer {
            let Some(inner) = session.upgrade() else {
                return;
            };
            let media = MediaSession { inner };
            if let Err(e) = media.restart_ice(&shared).await {
                tracing::warn!(user = %shared.remote, error = %e, "ICE restart failed");
            }
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
