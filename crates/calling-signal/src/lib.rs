//! The signaling layer of calling: the session-layer wire protocol
//! ([`protocol`], specified in `docs/PROTOCOL.md`, with the token bucket of
//! its rate limit in [`rate`], shared by server and client) and the client
//! transports the SDK uses to carry call-layer payloads between users.
//!
//! Two [`Transport`] implementations ship here:
//! - [`WsTransport`]: a WebSocket client for `calling-server`, with login,
//!   heartbeats and automatic reconnect (jittered backoff, re-login,
//!   re-joining rooms);
//! - [`MemoryTransport`]: an in-process hub with the same semantics, for
//!   tests and for applications that bring their own channel.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use calling_signal::{MemoryHub, Transport, TransportEvent, UserId};
//!
//! let (alice_id, bob_id) = (UserId::new("alice")?, UserId::new("bob")?);
//! let hub = MemoryHub::new();
//! let alice = hub.register(alice_id.clone());
//! let bob = hub.register(bob_id.clone());
//! let mut bob_events = bob.take_events().expect("taken once");
//!
//! alice.send(&[bob_id], serde_json::json!({"cmd": "invite"})).await?;
//! match bob_events.recv().await {
//!     Some(TransportEvent::Message { from, payload, .. }) => {
//!         assert_eq!(from, alice_id);
//!         assert_eq!(payload["cmd"], "invite");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod memory;
pub mod protocol;
pub mod rate;
mod transport;
mod ws;

/// User ids, validated once where they enter: the same type as the call
/// layer's.
#[doc(no_inline)]
pub use calling_core::UserId;
pub use memory::{MemoryHub, MemoryTransport};
pub use transport::{MessageId, TlsFailure, Transport, TransportError, TransportEvent};
pub use ws::{WsConfig, WsTransport, read_ca_file};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
