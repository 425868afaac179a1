//! PrivateMapKey: the userbuf that grants one user rights in one room.
//!
//! A PrivateMapKey is an ordinary UserSig whose `TLS.userbuf` holds a small
//! big-endian binary record. The layout mirrors `genUserBuf` in the official
//! Go library (`tencentyun/TLSSigAPI.go`, used by `GenPrivateMapKey` and
//! `GenPrivateMapKeyWithStringRoomID`) and `_genUserbuf` in the official
//! Node package `tls-sig-api-v2`:
//!
//! | bytes | field                                                      |
//! |-------|------------------------------------------------------------|
//! | 1     | version: 0 = numeric room only, 1 = a string room follows  |
//! | 2     | user id length *n*                                         |
//! | *n*   | user id                                                    |
//! | 4     | sdk app id                                                 |
//! | 4     | numeric room id (`dwAuthID`; 0 when a string room is used) |
//! | 4     | absolute expiry, unix seconds (issue time + expire)        |
//! | 4     | privilege bits                                             |
//! | 4     | account type (always 0 in the official generators)        |
//! | 2     | string room length *m* (version 1 only)                    |
//! | *m*   | string room id (version 1 only)                            |

use std::fmt;
use std::ops::BitOr;

/// Room rights carried by a PrivateMapKey, one bit per right, with the bit
/// values of the official libraries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Privileges(u32);

impl Privileges {
    /// No right at all.
    pub const NONE: Privileges = Privileges(0);
    /// May create the room.
    pub const CREATE_ROOM: Privileges = Privileges(1);
    /// May enter the room.
    pub const ENTER_ROOM: Privileges = Privileges(2);
    /// May send audio.
    pub const SEND_AUDIO: Privileges = Privileges(4);
    /// May receive audio.
    pub const RECV_AUDIO: Privileges = Privileges(8);
    /// May send video.
    pub const SEND_VIDEO: Privileges = Privileges(16);
    /// May receive video.
    pub const RECV_VIDEO: Privileges = Privileges(32);
    /// May send the secondary (screen sharing) video stream.
    pub const SEND_SUB_VIDEO: Privileges = Privileges(64);
    /// May receive the secondary (screen sharing) video stream.
    pub const RECV_SUB_VIDEO: Privileges = Privileges(128);
    /// Every right (255), what the official examples issue.
    pub const ALL: Privileges = Privileges(255);

    /// Wraps raw bits as found on the wire (unknown bits are kept).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Privileges {
        Privileges(bits)
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every right in `other` is granted.
    #[must_use]
    pub const fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Privileges {
    type Output = Privileges;
    fn bitor(self, rhs: Privileges) -> Privileges {
        Privileges(self.0 | rhs.0)
    }
}

impl fmt::Debug for Privileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Privileges({:#010b})", self.0)
    }
}

/// Which room a PrivateMapKey grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Room {
    /// A numeric room id (version-0 buffer).
    Id(u32),
    /// A string room id (version-1 buffer).
    Name(String),
}

/// The decoded userbuf of a PrivateMapKey.
///
/// Fields are kept exactly as on the wire so that
/// `from_userbuf(&k.to_userbuf()?)? == k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMapKey {
    /// The user the rights are granted to.
    pub user_id: String,
    /// The application (32 bits on the wire).
    pub sdk_app_id: u32,
    /// Numeric room id; 0 when `room_str` is set.
    pub room_id: u32,
    /// String room id, present in version-1 buffers only (never empty).
    pub room_str: Option<String>,
    /// Absolute expiry time, unix seconds.
    pub expires_at: u32,
    /// Granted rights.
    pub privileges: Privileges,
    /// Account type; the official generators always write 0.
    pub account_type: u32,
}

/// Why a PrivateMapKey buffer could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateMapKeyError {
    /// The buffer ends inside a field.
    #[error("PrivateMapKey buffer ends inside the {field} field")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The leading version byte is neither 0 nor 1.
    #[error("PrivateMapKey buffer version {version} is not supported (0 or 1)")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A text field is not UTF-8.
    #[error("PrivateMapKey {field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes follow the last field.
    #[error("PrivateMapKey buffer has {count} bytes after its last field")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A text field does not fit its 16-bit length prefix.
    #[error("PrivateMapKey {field} is {len} bytes long, more than 65535")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A string room id is empty (the official format cannot express it).
    #[error("PrivateMapKey string room id is empty")]
    EmptyRoomName,
    /// A number does not fit its 32-bit field.
    #[error("PrivateMapKey {field} {value} does not fit in 32 bits")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value that does not fit.
        value: u64,
    },
}

impl PrivateMapKeyError {
    /// A stable, machine-readable name for the failure kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            PrivateMapKeyError::Truncated { .. } => "truncated",
            PrivateMapKeyError::UnsupportedVersion { .. } => "unsupported_version",
            PrivateMapKeyError::NotUtf8 { .. } => "not_utf8",
            PrivateMapKeyError::TrailingBytes { .. } => "trailing_bytes",
            PrivateMapKeyError::TooLong { .. } => "too_long",
            PrivateMapKeyError::EmptyRoomName => "empty_room_name",
            PrivateMapKeyError::OutOfRange { .. } => "out_of_range",
        }
    }
}

impl PrivateMapKey {
    /// Builds the record the official generators would write for `user_id`
    /// at `now_unix` with a lifetime of `expire_secs`.
    ///
    /// Fails when the app id or the expiry time does not fit in 32 bits, or
    /// when `room` is an empty name. (The official generators silently
    /// truncate instead.)
    pub fn new(
        sdk_app_id: u64,
        user_id: &str,
        room: &Room,
        privileges: Privileges,
        expire_secs: u64,
        now_unix: u64,
    ) -> Result<PrivateMapKey, PrivateMapKeyError> {
        let sdk_app_id = u32::try_from(sdk_app_id).map_err(|_| PrivateMapKeyError::OutOfRange {
            field: "sdk app id",
            value: sdk_app_id,
        })?;
        let expires = now_unix.saturating_add(expire_secs);
        let expires_at = u32::try_from(expires).map_err(|_| PrivateMapKeyError::OutOfRange {
            field: "expiry time",
            value: expires,
        })?;
        let (room_id, room_str) = match room {
            Room::Id(id) => (*id, None),
            Room::Name(name) if name.is_empty() => return Err(PrivateMapKeyError::EmptyRoomName),
            Room::Name(name) => (0, Some(name.clone())),
        };
        Ok(PrivateMapKey {
            user_id: user_id.to_owned(),
            sdk_app_id,
            room_id,
            room_str,
            expires_at,
            privileges,
            account_type: 0,
        })
    }

    /// The room granted: the string room when there is one, else the numeric id.
    #[must_use]
    pub fn room(&self) -> Room {
        match &self.room_str {
            Some(name) => Room::Name(name.clone()),
            None => Room::Id(self.room_id),
        }
    }

    /// True when this key grants `room` (a numeric key never matches a
    /// string room, nor the other way round).
    #[must_use]
    pub fn grants_room(&self, room: &Room) -> bool {
        match (room, &self.room_str) {
            (Room::Id(id), None) => *id == self.room_id,
            (Room::Name(name), Some(own)) => name == own,
            _ => false,
        }
    }

    /// True once `now_unix` is past [`PrivateMapKey::expires_at`].
    #[must_use]
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix > u64::from(self.expires_at)
    }

    /// Serialises the record into the userbuf bytes.
    pub fn to_userbuf(&self) -> Result<Vec<u8>, PrivateMapKeyError> {
        let user = self.user_id.as_bytes();
        let user_len = u16::try_from(user.len()).map_err(|_| PrivateMapKeyError::TooLong {
            field: "user id",
            len: user.len(),
        })?;
        let room = match &self.room_str {
            None => None,
            Some(name) if name.is_empty() => return Err(PrivateMapKeyError::EmptyRoomName),
            Some(name) => {
                let len = u16::try_from(name.len()).map_err(|_| PrivateMapKeyError::TooLong {
                    field: "room name",
                    len: name.len(),
                })?;
                Some((len, name.as_bytes()))
            }
        };
        let mut buf =
            Vec::with_capacity(3 + user.len() + 20 + room.map_or(0, |(_, r)| 2 + r.len()));
        buf.push(u8::from(room.is_some()));
        buf.extend_from_slice(&user_len.to_be_bytes());
        buf.extend_from_slice(user);
        for word in [
            self.sdk_app_id,
            self.room_id,
            self.expires_at,
            self.privileges.bits(),
            self.account_type,
        ] {
            buf.extend_from_slice(&word.to_be_bytes());
        }
        if let Some((len, name)) = room {
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(name);
        }
        Ok(buf)
    }

    /// Parses userbuf bytes. Strict: the whole buffer must be consumed and
    /// text fields must be UTF-8.
    pub fn from_userbuf(buf: &[u8]) -> Result<PrivateMapKey, PrivateMapKeyError> {
        let mut r = Reader(buf);
        let version = r.u8("version")?;
        if version > 1 {
            return Err(PrivateMapKeyError::UnsupportedVersion { version });
        }
        let user_len = r.u16("user id length")?;
        let user_id = r.text(usize::from(user_len), "user id")?;
        let sdk_app_id = r.u32("sdk app id")?;
        let room_id = r.u32("room id")?;
        let expires_at = r.u32("expiry time")?;
        let privileges = Privileges::from_bits(r.u32("privilege map")?);
        let account_type = r.u32("account type")?;
        let room_str = if version == 1 {
            let len = r.u16("room name length")?;
            if len == 0 {
                return Err(PrivateMapKeyError::EmptyRoomName);
            }
            Some(r.text(usize::from(len), "room name")?)
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(PrivateMapKeyError::TrailingBytes { count: r.0.len() });
        }
        Ok(PrivateMapKey {
            user_id,
            sdk_app_id,
            room_id,
            room_str,
            expires_at,
            privileges,
            account_type,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], PrivateMapKeyError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(PrivateMapKeyError::Truncated { field })?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], PrivateMapKeyError> {
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| PrivateMapKeyError::Truncated { field })
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PrivateMapKeyError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, PrivateMapKeyError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PrivateMapKeyError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn text(&mut self, n: usize, field: &'static str) -> Result<String, PrivateMapKeyError> {
        let bytes = self.take(n, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| PrivateMapKeyError::NotUtf8 { field })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numeric_room_layout_is_byte_exact() {
        let key = PrivateMapKey::new(
            0x0102_0304,
            "ab",
            &Room::Id(0x0A0B_0C0D),
            Privileges::ALL,
            100,
            1000,
        )
        .unwrap();
        let buf = key.to_userbuf().unwrap();
        let expected: Vec<u8> = [
            &[0u8][..],
            &[0, 2],
            b"ab",
            &[1, 2, 3, 4],
            &[0x0A, 0x0B, 0x0C, 0x0D],
            &1100u32.to_be_bytes(),
            &[0, 0, 0, 255],
            &[0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(buf, expected);
        assert_eq!(PrivateMapKey::from_userbuf(&buf).unwrap(), key);
    }

    #[test]
    fn string_room_layout_is_byte_exact() {
        let key = PrivateMapKey::new(
            7,
            "u",
            &Room::Name("r1".into()),
            Privileges::ENTER_ROOM | Privileges::RECV_AUDIO,
            5,
            10,
        )
        .unwrap();
        let buf = key.to_userbuf().unwrap();
        let expected: Vec<u8> = [
            &[1u8][..],
            &[0, 1],
            b"u",
            &[0, 0, 0, 7],
            &[0, 0, 0, 0],
            &[0, 0, 0, 15],
            &[0, 0, 0, 10],
            &[0, 0, 0, 0],
            &[0, 2],
            b"r1",
        ]
        .concat();
        assert_eq!(buf, expected);
        let back = PrivateMapKey::from_userbuf(&buf).unwrap();
        assert_eq!(back, key);
        assert!(back.grants_room(&Room::Name("r1".into())));
        assert!(!back.grants_room(&Room::Name("r2".into())));
        assert!(!back.grants_room(&Room::Id(0)));
        assert!(back.privileges.contains(Privileges::ENTER_ROOM));
        assert!(!back.privileges.contains(Privileges::SEND_AUDIO));
    }

    #[test]
    fn parse_errors_are_typed() {
        let good = PrivateMapKey::new(1, "user", &Room::Name("room".into()), Privileges::ALL, 1, 1)
            .unwrap()
            .to_userbuf()
            .unwrap();
        for cut in 0..good.len() {
            let err = PrivateMapKey::from_userbuf(&good[..cut]).unwrap_err();
            assert_eq!(err.kind(), "truncated", "cut at {cut}: {err}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            PrivateMapKey::from_userbuf(&long).unwrap_err(),
            PrivateMapKeyError::TrailingBytes { count: 1 }
        );
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(
            PrivateMapKey::from_userbuf(&v2).unwrap_err(),
            PrivateMapKeyError::UnsupportedVersion { version: 2 }
        );
        let mut bad_utf8 = good;
        bad_utf8[3] = 0xFF;
        assert_eq!(
            PrivateMapKey::from_userbuf(&bad_utf8).unwrap_err(),
            PrivateMapKeyError::NotUtf8 { field: "user id" }
        );
    }

    #[test]
    fn build_errors_are_typed() {
        assert_eq!(
            PrivateMapKey::new(1 << 32, "u", &Room::Id(1), Privileges::ALL, 1, 1).unwrap_err(),
            PrivateMapKeyError::OutOfRange {
                field: "sdk app id",
                value: 1 << 32
            }
        );
        assert_eq!(
            PrivateMapKey::new(
                1,
                "u",
                &Room::Id(1),
                Privileges::ALL,
                1,
                u64::from(u32::MAX)
            )
            .unwrap_err()
            .kind(),
            "out_of_range"
        );
        assert_eq!(
            PrivateMapKey::new(1, "u", &Room::Name(String::new()), Privileges::ALL, 1, 1)
                .unwrap_err(),
            PrivateMapKeyError::EmptyRoomName
        );
        let long_user = "x".repeat(70_000);
        let key = PrivateMapKey::new(1, &long_user, &Room::Id(1), Privileges::ALL, 1, 1).unwrap();
        assert_eq!(key.to_userbuf().unwrap_err().kind(), "too_long");
    }

    #[test]
    fn expiry_is_inclusive() {
        let key = PrivateMapKey::new(1, "u", &Room::Id(1), Privileges::ALL, 10, 100).unwrap();
        assert!(!key.is_expired(110));
        assert!(key.is_expired(111));
    }
}
