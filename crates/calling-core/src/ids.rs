//! Identifiers: users, calls, invites, rooms and parties.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// Longest user id accepted, in bytes (TRTCCalling's limit).
pub const MAX_USER_ID_LEN: usize = 32;

/// Longest call, invite or group id accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn check_token(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { len: s.len(), max });
    }
    if let Some((at, c)) = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii() || !is_id_byte(*c as u8))
    {
        return Err(IdError::InvalidChar { ch: c, at });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: ASCII letters, digits, `-` and `_`, 1 to the
            /// length limit in bytes.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_token(&s, $max)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

token_id!(
    /// A user id: ASCII letters, digits, `-` and `_`, 1 to 32 bytes.
    UserId,
    MAX_USER_ID_LEN
);
token_id!(
    /// A call id, unique per call and shared by every party of it. Glare
    /// resolution compares call ids as strings: the lower one wins.
    CallId,
    MAX_TOKEN_LEN
);
token_id!(
    /// An invite id, one per invitation (a `call`, `group_call` or `invite`
    /// command); every invitee of that invitation sees the same id.
    InviteId,
    MAX_TOKEN_LEN
);
token_id!(
    /// An application group id (for example an IM group the call belongs to).
    GroupId,
    MAX_TOKEN_LEN
);

/// The secret of a call's join tickets: 128 random bits minted by the call's
/// sponsor, shared with connected members only (in rosters sent to them),
/// never in an invite. Whoever shows it in an `enter` may join. Its `Debug`
/// hides the value so that logs do not leak it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JoinSecret(String);

impl JoinSecret {
    /// Validates `s` as a token: ASCII letters, digits, `-` and `_`, 1 to
    /// [`MAX_TOKEN_LEN`] bytes.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_token(&s, MAX_TOKEN_LEN)?;
        Ok(Self(s))
    }

    /// The secret as a string slice, to hand to another user.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time that depends on the lengths only, so that a guesser
    /// learns nothing from how fast a wrong secret is refused.
    pub(crate) fn matches(&self, other: &JoinSecret) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl TryFrom<String> for JoinSecret {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<JoinSecret> for String {
    fn from(secret: JoinSecret) -> String {
        secret.0
    }
}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecret(..)")
    }
}

/// What a connected member hands out so that someone can join its call
/// ([`crate::CallSnapshot::join_ticket`], [`crate::CallMachine::join`]):
/// whom to ask, and the secret that proves the right to join. Knowing a call
/// id alone gives no way in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JoinTicket {
    /// The member the joiner asks: the one that handed the ticket out.
    pub host: UserId,
    /// The call's join secret.
    pub secret: JoinSecret,
}

impl fmt::Display for JoinTicket {
    /// The ticket's text form, `host:secret`, to hand to a joiner.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.secret.as_str())
    }
}

impl std::str::FromStr for JoinTicket {
    type Err = IdError;

    /// Reads the text form `host:secret`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let Some((host, secret)) = s.split_once(':') else {
            return Err(IdError::Empty);
        };
        Ok(JoinTicket {
            host: UserId::new(host)?,
            secret: JoinSecret::new(secret)?,
        })
    }
}

/// The media room number of a call, random in `1..=2^31-1` as in TRTCCalling.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RoomId(u32);

impl RoomId {
    /// The largest room id.
    pub const MAX: u32 = i32::MAX as u32;

    /// Validates a room id: `1..=2^31-1`.
    pub fn new(id: u32) -> Result<Self, IdError> {
        if id == 0 || id > Self::MAX {
            return Err(IdError::RoomOutOfRange(id));
        }
        Ok(Self(id))
    }

    /// The room number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for RoomId {
    type Error = IdError;
    fn try_from(id: u32) -> Result<Self, IdError> {
        Self::new(id)
    }
}

impl From<RoomId> for u32 {
    fn from(id: RoomId) -> u32 {
        id.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One participation of a user in a call (Matrix's `party_id`), fresh each
/// time the user rings for, places or joins a call. A user's party ids only
/// grow (see [`crate::CallMachine::with_party_base`]), so "participation
/// `q` is over" also retires every earlier one, and a message naming a lower
/// party than the one known is recognised as late. Kept below 2^53 so that
/// JavaScript reads it exactly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct PartyId(pub u64);

/// Media type of a call, numbered as in TRTCCalling.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    /// Audio only (TRTCCalling `1`).
    Audio,
    /// Audio and video (TRTCCalling `2`).
    Video,
}

impl MediaType {
    /// TRTCCalling's number for this type: audio 1, video 2.
    pub fn code(self) -> u8 {
        match self {
            MediaType::Audio => 1,
            MediaType::Video => 2,
        }
    }

    /// The type for TRTCCalling's number, if it is 1 or 2.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(MediaType::Audio),
            2 => Some(MediaType::Video),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_validated() {
        assert!(UserId::new("alice_01-x").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty));
        assert_eq!(
            UserId::new("a".repeat(33)),
            Err(IdError::TooLong { len: 33, max: 32 })
        );
        assert!(UserId::new("a".repeat(32)).is_ok());
        assert_eq!(
            UserId::new("bob smith"),
            Err(IdError::InvalidChar { ch: ' ', at: 3 })
        );
        assert_eq!(
            UserId::new("é"),
            Err(IdError::InvalidChar { ch: 'é', at: 0 })
        );
    }

    #[test]
    fn join_tickets_read_back_their_text_form() {
        let ticket = JoinTicket {
            host: UserId::new("alice").unwrap(),
            secret: JoinSecret::new("s3cr3t").unwrap(),
        };
        let text = ticket.to_string();
        assert_eq!(text, "alice:s3cr3t");
        assert_eq!(text.parse::<JoinTicket>().unwrap(), ticket);
        assert!("no-colon".parse::<JoinTicket>().is_err());
        assert!(":secret".parse::<JoinTicket>().is_err());
        assert!("alice:".parse::<JoinTicket>().is_err());
        assert!("al ice:secret".parse::<JoinTicket>().is_err());
    }

    #[test]
    fn ids_compare_with_strings() {
        let alice = UserId::new("alice").unwrap();
        assert!(alice == "alice");
        assert!(alice != "bob");
        assert!(alice == *"alice");
    }

    #[test]
    fn ids_reject_bad_json() {
        assert!(serde_json::from_str::<UserId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<RoomId>("0").is_err());
        assert!(serde_json::from_str::<RoomId>("2147483648").is_err());
        assert_eq!(
            serde_json::from_str::<RoomId>("2147483647").unwrap().get(),
            RoomId::MAX
        );
    }

    #[test]
    fn media_type_codes() {
        assert_eq!(
            MediaType::from_code(MediaType::Audio.code()),
            Some(MediaType::Audio)
        );
        assert_eq!(MediaType::from_code(2), Some(MediaType::Video));
        assert_eq!(MediaType::from_code(3), None);
    }
}
