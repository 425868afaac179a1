//! The SDK's error type.

use calling_core::{AnswerError, CallError, IdError, JoinError, SwitchError};
use calling_media::MediaError;
use calling_signal::TransportError;
use thiserror::Error;

/// Why an SDK call failed.
#[derive(Debug, Error)]
pub enum CallingError {
    /// Logged out, kicked out, or the login expired: log in again.
    #[error("not logged in")]
    NotLoggedIn,
    /// A user or call id is malformed.
    #[error("invalid id: {0}")]
    InvalidId(#[from] IdError),
    /// `call`, `group_call` or `invite` was refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// `accept`, `reject` or `ignore` was refused.
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// `join` was refused.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A media type switch was refused.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// The signaling transport failed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The media engine failed.
    #[error("media: {0}")]
    Media(#[from] MediaError),
    /// The operation needs a call in progress.
    #[error("not in a call")]
    NotInCall,
}
