//! Result codes and the panic and pointer boundary every entry point uses.

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use calling::{
    AnswerError, CallError, CallingError, JoinError, ServerErrorCode as ErrorCode, SwitchError,
    TransportError,
};

/// What every fallible function returns. `CALLING_RESULT_OK` is zero;
/// [`calling_result_text`] names each code.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_result {
    /// Success.
    CALLING_RESULT_OK = 0,
    /// A required pointer argument was NULL.
    CALLING_RESULT_NULL_PARAMETER = 1,
    /// A string argument is not valid UTF-8.
    CALLING_RESULT_INVALID_UTF8 = 2,
    /// An argument is out of range or malformed (an id with a forbidden
    /// character, an unknown media type, an empty user list, ...).
    CALLING_RESULT_INVALID_ARGUMENT = 3,
    /// The client is not logged in (never was, logged out, kicked out or
    /// its login expired).
    CALLING_RESULT_NOT_LOGGED_IN = 4,
    /// `calling_client_login` on a client that is already logged in.
    CALLING_RESULT_ALREADY_LOGGED_IN = 5,
    /// No invite with this id was ever seen.
    CALLING_RESULT_NO_SUCH_INVITE = 6,
    /// The invite exists but can no longer be answered (cancelled, timed
    /// out, already answered).
    CALLING_RESULT_STALE_INVITE = 7,
    /// Already ringing or in a call: one call at a time.
    CALLING_RESULT_BUSY = 8,
    /// The operation needs a call in progress.
    CALLING_RESULT_NOT_IN_CALL = 9,
    /// The call or invite was refused: calling oneself, a user listed twice,
    /// too many participants, user data too large.
    CALLING_RESULT_CALL_REFUSED = 10,
    /// A media type switch was refused (already that type, a request
    /// pending, unknown request id).
    CALLING_RESULT_SWITCH_REFUSED = 11,
    /// The signaling server refused the login for a reason without a code
    /// of its own (see `CALLING_RESULT_LOGIN_SIG_EXPIRED`,
    /// `_LOGIN_BAD_SIGNATURE` and `_LOGIN_WRONG_APP` for the usual ones);
    /// `calling_client_last_error` has the server's reason.
    CALLING_RESULT_LOGIN_REFUSED = 12,
    /// Connecting to or talking with the signaling server failed.
    CALLING_RESULT_IO = 13,
    /// The media engine failed (e.g. a video file could not be opened).
    CALLING_RESULT_MEDIA = 14,
    /// A UserSig did not verify: malformed, wrong app id or user, bad
    /// signature.
    CALLING_RESULT_SIGNATURE_INVALID = 15,
    /// A UserSig verified but has expired.
    CALLING_RESULT_SIGNATURE_EXPIRED = 16,
    /// No event is waiting (`calling_client_poll_event`,
    /// `calling_client_wait_event`).
    CALLING_RESULT_NO_EVENT = 17,
    /// A blocking function was called on one of the client's runtime
    /// threads, i.e. from inside an event or frame callback. Return from the
    /// callback first.
    CALLING_RESULT_WRONG_THREAD = 18,
    /// A join by call id was refused (no member to ask).
    CALLING_RESULT_JOIN_REFUSED = 19,
    /// The library panicked; the operation did not complete. The client is
    /// still safe to free.
    CALLING_RESULT_PANIC = 20,
    /// The signaling server refused the login: the UserSig has expired.
    /// Get a fresh one and log in again.
    CALLING_RESULT_LOGIN_SIG_EXPIRED = 21,
    /// The signaling server refused the login: the UserSig is malformed,
    /// forged, or was issued for another user.
    CALLING_RESULT_LOGIN_BAD_SIGNATURE = 22,
    /// The signaling server refused the login: it does not serve this
    /// `sdk_app_id` (or the UserSig was issued for another app).
    CALLING_RESULT_LOGIN_WRONG_APP = 23,
    /// A pushed picture or sample chunk was dropped: no call takes it now
    /// (none, an audio call for pictures, the camera closed, or another
    /// source configured). Harmless; push again in a call.
    CALLING_RESULT_NOT_SENDING = 24,
    /// A pushed picture or sample chunk was dropped: the encoder is behind.
    /// Push the next one.
    CALLING_RESULT_QUEUE_FULL = 25,
    /// The library was built without what this needs (e.g. the `devices`
    /// feature for audio devices).
    CALLING_RESULT_UNSUPPORTED = 26,
}

/// Every code, in order: `ALL_RESULTS[n]` is the code `n`. Codes are never
/// renumbered or reused; new ones are appended.
const ALL_RESULTS: [calling_result; 27] = [
    calling_result::CALLING_RESULT_OK,
    calling_result::CALLING_RESULT_NULL_PARAMETER,
    calling_result::CALLING_RESULT_INVALID_UTF8,
    calling_result::CALLING_RESULT_INVALID_ARGUMENT,
    calling_result::CALLING_RESULT_NOT_LOGGED_IN,
    calling_result::CALLING_RESULT_ALREADY_LOGGED_IN,
    calling_result::CALLING_RESULT_NO_SUCH_INVITE,
    calling_result::CALLING_RESULT_STALE_INVITE,
    calling_result::CALLING_RESULT_BUSY,
    calling_result::CALLING_RESULT_NOT_IN_CALL,
    calling_result::CALLING_RESULT_CALL_REFUSED,
    calling_result::CALLING_RESULT_SWITCH_REFUSED,
    calling_result::CALLING_RESULT_LOGIN_REFUSED,
    calling_result::CALLING_RESULT_IO,
    calling_result::CALLING_RESULT_MEDIA,
    calling_result::CALLING_RESULT_SIGNATURE_INVALID,
    calling_result::CALLING_RESULT_SIGNATURE_EXPIRED,
    calling_result::CALLING_RESULT_NO_EVENT,
    calling_result::CALLING_RESULT_WRONG_THREAD,
    calling_result::CALLING_RESULT_JOIN_REFUSED,
    calling_result::CALLING_RESULT_PANIC,
    calling_result::CALLING_RESULT_LOGIN_SIG_EXPIRED,
    calling_result::CALLING_RESULT_LOGIN_BAD_SIGNATURE,
    calling_result::CALLING_RESULT_LOGIN_WRONG_APP,
    calling_result::CALLING_RESULT_NOT_SENDING,
    calling_result::CALLING_RESULT_QUEUE_FULL,
    calling_result::CALLING_RESULT_UNSUPPORTED,
];

impl calling_result {
    /// The code with the number `code`, if there is one. C passes codes as
    /// plain integers: any value may arrive.
    pub(crate) fn from_code(code: u32) -> Option<calling_result> {
        usize::try_from(code)
            .ok()
            .and_then(|i| ALL_RESULTS.get(i))
            .copied()
    }

    /// The code's description as a Rust string.
    pub(crate) fn describe(self) -> &'static str {
        self.text().to_str().unwrap_or_default()
    }

    /// The code's description (exhaustive: a new code needs a text).
    pub(crate) fn text(self) -> &'static CStr {
        match self {
            CALLING_RESULT_OK => c"ok",
            CALLING_RESULT_NULL_PARAMETER => c"a required pointer argument was NULL",
            CALLING_RESULT_INVALID_UTF8 => c"a string argument is not valid UTF-8",
            CALLING_RESULT_INVALID_ARGUMENT => c"invalid argument",
            CALLING_RESULT_NOT_LOGGED_IN => c"not logged in",
            CALLING_RESULT_ALREADY_LOGGED_IN => c"already logged in",
            CALLING_RESULT_NO_SUCH_INVITE => c"no such invite",
            CALLING_RESULT_STALE_INVITE => c"the invite can no longer be answered",
            CALLING_RESULT_BUSY => c"already ringing or in a call",
            CALLING_RESULT_NOT_IN_CALL => c"not in a call",
            CALLING_RESULT_CALL_REFUSED => c"the call was refused",
            CALLING_RESULT_SWITCH_REFUSED => c"the media type switch was refused",
            CALLING_RESULT_LOGIN_REFUSED => c"the server refused the login",
            CALLING_RESULT_IO => c"signaling connection failed",
            CALLING_RESULT_MEDIA => c"media engine failed",
            CALLING_RESULT_SIGNATURE_INVALID => c"the UserSig is invalid",
            CALLING_RESULT_SIGNATURE_EXPIRED => c"the UserSig has expired",
            CALLING_RESULT_NO_EVENT => c"no event is waiting",
            CALLING_RESULT_WRONG_THREAD => c"called from a runtime thread (inside a callback)",
            CALLING_RESULT_JOIN_REFUSED => c"joining the call was refused",
            CALLING_RESULT_PANIC => c"the library panicked",
            CALLING_RESULT_LOGIN_SIG_EXPIRED => c"login refused: the UserSig has expired",
            CALLING_RESULT_LOGIN_BAD_SIGNATURE => {
                c"login refused: the UserSig is malformed, forged or for another user"
            }
            CALLING_RESULT_LOGIN_WRONG_APP => {
                c"login refused: the server does not serve this app id"
            }
            CALLING_RESULT_NOT_SENDING => c"no call takes this media now; dropped",
            CALLING_RESULT_QUEUE_FULL => c"the encoder is behind; dropped",
            CALLING_RESULT_UNSUPPORTED => c"not supported by this build of the library",
        }
    }
}

use calling_result::*;

/// A static, NUL-terminated English description of the result code
/// `result`, never NULL; `"unknown result code"` for a value that is not
/// a code (any `uint32_t` is accepted). Do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn calling_result_text(result: u32) -> *const c_char {
    result_text(result).as_ptr()
}

/// Free text (a server's message, user data) for C: a NUL inside would end
/// the C string early anyway, so the text is cut there rather than lost.
pub(crate) fn c_text(s: impl Into<Vec<u8>>) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let at = e.nul_position();
        let mut bytes = e.into_vec();
        bytes.truncate(at);
        CString::new(bytes).unwrap_or_default()
    })
}

/// The text of a code, taken as an integer so that a value outside the enum
/// coming from C is not undefined behaviour.
fn result_text(code: u32) -> &'static CStr {
    calling_result::from_code(code).map_or(c"unknown result code", calling_result::text)
}

impl From<&CallingError> for calling_result {
    fn from(e: &CallingError) -> Self {
        match e {
            CallingError::NotLoggedIn => CALLING_RESULT_NOT_LOGGED_IN,
            CallingError::InvalidId(_) => CALLING_RESULT_INVALID_ARGUMENT,
            CallingError::NotInCall => CALLING_RESULT_NOT_IN_CALL,
            CallingError::Call(e) => call_code(e),
            CallingError::Answer(AnswerError::UnknownInvite(_)) => CALLING_RESULT_NO_SUCH_INVITE,
            CallingError::Answer(AnswerError::StaleInvite { .. }) => CALLING_RESULT_STALE_INVITE,
            CallingError::Join(JoinError::Busy) => CALLING_RESULT_BUSY,
            CallingError::Join(JoinError::OwnTicket) => CALLING_RESULT_JOIN_REFUSED,
            CallingError::Switch(SwitchError::NotInCall) => CALLING_RESULT_NOT_IN_CALL,
            CallingError::Switch(
                SwitchError::AlreadyThatType(_)
                | SwitchError::RequestPending
                | SwitchError::UnknownRequest(_),
            ) => CALLING_RESULT_SWITCH_REFUSED,
            CallingError::Transport(e) => transport_code(e),
            CallingError::Media(_) => CALLING_RESULT_MEDIA,
        }
    }
}

fn call_code(e: &CallError) -> calling_result {
    match e {
        CallError::Busy => CALLING_RESULT_BUSY,
        CallError::NotInCall => CALLING_RESULT_NOT_IN_CALL,
        CallError::NoInvitees => CALLING_RESULT_INVALID_ARGUMENT,
        CallError::SelfInvite
        | CallError::DuplicateInvitee(_)
        | CallError::TooManyParticipants { .. }
        | CallError::UserDataTooLarge { .. } => CALLING_RESULT_CALL_REFUSED,
    }
}

fn transport_code(e: &TransportError) -> calling_result {
    match e {
        TransportError::LoginRefused { code, .. } => match code {
            ErrorCode::SigExpired => CALLING_RESULT_LOGIN_SIG_EXPIRED,
            ErrorCode::BadSignature => CALLING_RESULT_LOGIN_BAD_SIGNATURE,
            ErrorCode::WrongApp => CALLING_RESULT_LOGIN_WRONG_APP,
            ErrorCode::BadFrame
            | ErrorCode::UnknownType
            | ErrorCode::TooLarge
            | ErrorCode::NotLoggedIn
            | ErrorCode::AlreadyLoggedIn
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidUserId
            | ErrorCode::RateLimited
            | ErrorCode::BadRecipients
            | ErrorCode::InvalidRoom
            | ErrorCode::TooManyRooms
            | ErrorCode::RoomFull
            | ErrorCode::NotInRoom
            | ErrorCode::NotAllowed
            | ErrorCode::Unavailable
            | ErrorCode::Internal => CALLING_RESULT_LOGIN_REFUSED,
        },
        TransportError::Closed => CALLING_RESULT_NOT_LOGGED_IN,
        TransportError::NotConnected
        | TransportError::Connect(_)
        | TransportError::Refused { .. }
        | TransportError::Timeout
        | TransportError::Invalid(_)
        | TransportError::Tls { .. } => CALLING_RESULT_IO,
    }
}

/// Runs the body of an `extern "C"` function: a panic becomes
/// `CALLING_RESULT_PANIC` instead of unwinding into C (which would abort).
pub(crate) fn guard(body: impl FnOnce() -> calling_result) -> calling_result {
    catch(body).unwrap_or(CALLING_RESULT_PANIC)
}

/// Runs `body`, turning a panic into `Err` with the panic's message (also
/// logged).
pub(crate) fn catch<T>(body: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "panic caught at the C boundary");
        what
    })
}

/// [`guard`] for functions that return nothing (the `_free` functions).
pub(crate) fn guard_void(body: impl FnOnce()) {
    let _ = guard(|| {
        body();
        CALLING_RESULT_OK
    });
}

/// Returns early from the enclosing function with a result code.
macro_rules! try_ffi {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}
pub(crate) use try_ffi;

/// A required NUL-terminated UTF-8 string argument.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid for
/// `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char) -> Result<&'a str, calling_result> {
    if p.is_null() {
        return Err(CALLING_RESULT_NULL_PARAMETER);
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| CALLING_RESULT_INVALID_UTF8)
}

/// An optional string argument: NULL means none.
///
/// # Safety
///
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char) -> Result<Option<&'a str>, calling_result> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { str_arg(p) }.map(Some)
}

/// An array of `len` strings; NULL with `len == 0` is an empty list.
///
/// # Safety
///
/// `p` is NULL or points to `len` pointers, each as for [`str_arg`].
pub(crate) unsafe fn str_array_arg<'a>(
    p: *const *const c_char,
    len: usize,
) -> Result<Vec<&'a str>, calling_result> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(CALLING_RESULT_NULL_PARAMETER);
    }
    // SAFETY: non-null, and the caller promises `len` readable pointers.
    let items = unsafe { std::slice::from_raw_parts(p, len) };
    items
        .iter()
        // SAFETY: forwarded from the caller.
        .map(|&s| unsafe { str_arg(s) })
        .collect()
}

/// Checks that an out-parameter is not NULL.
pub(crate) fn out_arg<T>(p: *mut T) -> Result<(), calling_result> {
    if p.is_null() {
        Err(CALLING_RESULT_NULL_PARAMETER)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_panic_result() {
        let r = guard(|| panic!("boom"));
        assert_eq!(r, CALLING_RESULT_PANIC);
        let r = guard(|| CALLING_RESULT_BUSY);
        assert_eq!(r, CALLING_RESULT_BUSY);
    }

    #[test]
    fn every_code_has_its_own_text() {
        let texts: Vec<&CStr> = ALL_RESULTS.iter().map(|r| r.text()).collect();
        for (i, t) in texts.iter().enumerate() {
            assert_ne!(*t, c"unknown result code", "code {i}");
            assert!(!texts[..i].contains(t), "code {i} repeats a text");
        }
    }

    #[test]
    fn the_code_list_is_complete_and_in_order() {
        for (i, r) in ALL_RESULTS.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL_RESULTS[{i}]");
        }
        // Every variant of the enum is in the list.
        let src = include_str!("result.rs");
        let start = src.find("pub enum calling_result {").unwrap();
        let end = start + src[start..].find("\n}\n").unwrap();
        let variants = src[start..end]
            .lines()
            .filter(|l| l.trim_start().starts_with("CALLING_RESULT_"))
            .count();
        assert_eq!(variants, ALL_RESULTS.len());
    }

    /// Any `uint32_t` may come from C: codes get their text, everything
    /// else the same fixed one, and none of it is undefined behaviour.
    #[test]
    fn result_text_takes_any_integer() {
        let text = |code: u32| {
            let p = calling_result_text(code);
            assert!(!p.is_null());
            // SAFETY: a static NUL-terminated string from this library.
            unsafe { CStr::from_ptr(p) }
        };
        for r in ALL_RESULTS {
            assert_eq!(text(r as u32), r.text());
        }
        let last = ALL_RESULTS.len() as u32;
        let beyond = [
            last,
            last + 1,
            1000,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX - 1,
            u32::MAX,
        ];
        for code in beyond.into_iter().chain((last..last + 10_000).step_by(7)) {
            assert_eq!(text(code), c"unknown result code", "code {code}");
        }
        assert_eq!(text(0), c"ok");
    }

    #[test]
    fn each_login_refusal_has_its_code() {
        let refused = |code| {
            calling_result::from(&CallingError::Transport(TransportError::LoginRefused {
                code,
                message: "detail".to_owned(),
            }))
        };
        assert_eq!(
            refused(ErrorCode::SigExpired),
            CALLING_RESULT_LOGIN_SIG_EXPIRED
        );
        assert_eq!(
            refused(ErrorCode::BadSignature),
            CALLING_RESULT_LOGIN_BAD_SIGNATURE
        );
        assert_eq!(refused(ErrorCode::WrongApp), CALLING_RESULT_LOGIN_WRONG_APP);
        assert_eq!(
            refused(ErrorCode::InvalidUserId),
            CALLING_RESULT_LOGIN_REFUSED
        );
        assert_eq!(refused(ErrorCode::Internal), CALLING_RESULT_LOGIN_REFUSED);
    }
}

#[cfg(test)]
mod boundary {
    use super::*;

    /// Shaped like every entry point: `extern "C"`, body inside [`guard`].
    extern "C" fn entry_that_panics(p: *const c_char) -> calling_result {
        guard(|| {
            // SAFETY: test input, a valid C string.
            let s = try_ffi!(unsafe { str_arg(p) });
            let n: usize = s.parse().unwrap_or_default();
            // An out-of-bounds index: a real panic from library code.
            let v = [1u8, 2, 3];
            if v[n] == 0 {
                return CALLING_RESULT_BUSY;
            }
            CALLING_RESULT_OK
        })
    }

    #[test]
    fn a_panic_inside_an_extern_c_function_is_returned_not_aborted() {
        let f: extern "C" fn(*const c_char) -> calling_result = entry_that_panics;
        assert_eq!(f(c"1".as_ptr()), CALLING_RESULT_OK);
        assert_eq!(f(c"7".as_ptr()), CALLING_RESULT_PANIC);
        // The process goes on and the same entry works again.
        assert_eq!(f(c"2".as_ptr()), CALLING_RESULT_OK);
        assert_eq!(f(std::ptr::null()), CALLING_RESULT_NULL_PARAMETER);
    }

    /// Every exported function of the crate runs its body through `guard`
    /// or `guard_void`, directly or by delegating to one that does.
    #[test]
    fn every_exported_function_goes_through_the_guard() {
        let sources = [
            include_str!("lib.rs"),
            include_str!("client.rs"),
            include_str!("event.rs"),
            include_str!("result.rs"),
        ];
        let mut checked = 0;
        for src in sources {
            for (at, _) in src.match_indices("#[unsafe(no_mangle)]") {
                let rest = &src[at..];
                let name_at = rest.find("fn ").unwrap() + 3;
                let name: String = rest[name_at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let body_at = rest.find(") -> ").map_or(usize::MAX, |i| i);
                let body_at = body_at.min(rest.find(") {").unwrap_or(usize::MAX));
                let body = &rest[body_at..];
                let body = &body[..body.find("\n}\n").unwrap()];
                let guarded = body.contains("guard(")
                    || body.contains("guard_void(")
                    || body.contains("answer(client")
                    || body.contains("with_client(client")
                    || body.contains("with_config(config")
                    || body.contains("calling_client_wait_event(")
                    // Static text only: nothing in it can panic.
                    || name == "calling_result_text"
                    || name == "calling_version";
                assert!(guarded, "{name} does not go through the guard");
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} exported functions found");
    }
}
