//! Events as C sees them: one flat struct whose pointers live as long as the
//! event.

use std::ffi::{CString, c_char};
use std::ptr;

use calling::{CallEvent, EndReason, Event, MediaState, MediaType, NoAnswer};

/// Which event a [`calling_event`] is; the fields it fills are listed per
/// kind.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_event_kind {
    /// An event this version of the C API does not know (a newer library
    /// under an older header never sends it; kept for forward compatibility).
    CALLING_EVENT_UNKNOWN = 0,
    /// The local user is invited: `call_id`, `invite_id`, `user` (the
    /// sponsor), `inviter`, `users` (other invitees still ringing),
    /// `members` (already connected), `is_from_group`, `group_id` (or NULL),
    /// `media_type`, `room_id`, `user_data` (or NULL), `timeout_secs`.
    /// Answer with `calling_client_accept` / `_reject` / `_ignore`.
    CALLING_EVENT_INVITED = 1,
    /// An invitee declined: `call_id`, `user`.
    CALLING_EVENT_REJECTED = 2,
    /// Invitees did not answer: `call_id`, `users`, `no_answer_reason`.
    CALLING_EVENT_NO_RESPONSE = 3,
    /// An invitee is in another call: `call_id`, `user`.
    CALLING_EVENT_LINE_BUSY = 4,
    /// The invite the local user was ringing for was withdrawn: `call_id`,
    /// `invite_id`, `user` (who cancelled).
    CALLING_EVENT_CALLING_CANCEL = 5,
    /// The local user's ringing timed out: `call_id`, `invite_id`.
    CALLING_EVENT_CALLING_TIMEOUT = 6,
    /// A party is now connected: `call_id`, `user`.
    CALLING_EVENT_USER_ENTER = 7,
    /// A connected party left: `call_id`, `user`.
    CALLING_EVENT_USER_LEAVE = 8,
    /// The call is over for the local party: `call_id`, `end_reason`,
    /// `duration_ms`.
    CALLING_EVENT_CALL_END = 9,
    /// The same user logged in elsewhere; the client is logged out.
    CALLING_EVENT_KICKED_OUT = 10,
    /// The UserSig expired or was refused on reconnect; log in again.
    CALLING_EVENT_LOGIN_EXPIRED = 11,
    /// The signaling connection dropped; the SDK is reconnecting.
    CALLING_EVENT_DISCONNECTED = 12,
    /// The SDK reconnected and logged in again.
    CALLING_EVENT_RECONNECTED = 13,
    /// A party turned its camera on or off: `call_id`, `user`, `available`.
    CALLING_EVENT_USER_VIDEO_AVAILABLE = 14,
    /// A party muted or unmuted: `call_id`, `user`, `available`.
    CALLING_EVENT_USER_AUDIO_AVAILABLE = 15,
    /// A party's voice volume: `user`, `volume` (0 to 100).
    CALLING_EVENT_USER_VOICE_VOLUME = 16,
    /// Something failed: `code`, `message`.
    CALLING_EVENT_ERROR = 17,
    /// The call's media type changed: `call_id`, `user`, `from_media_type`,
    /// `media_type` (the new one).
    CALLING_EVENT_MEDIA_TYPE_CHANGED = 18,
    /// A party asks to switch the media type: `call_id`, `user`,
    /// `request_id`, `media_type` (asked for). Answer with
    /// `calling_client_answer_media_switch`.
    CALLING_EVENT_MEDIA_TYPE_SWITCH_REQUESTED = 19,
    /// A switch the local user asked for was refused: `call_id`, `users`.
    CALLING_EVENT_MEDIA_TYPE_SWITCH_REFUSED = 20,
    /// The invitees still ringing changed: `call_id`, `users`.
    CALLING_EVENT_INVITEE_LIST_UPDATED = 21,
    /// Both sides called each other at once: `abandoned_call_id` (the local
    /// user's own call, over without a CALL_END) and `call_id` (the call
    /// that goes on, already accepted).
    CALLING_EVENT_GLARE_RESOLVED = 22,
    /// The media connection with a party changed: `call_id`, `user`,
    /// `media_state` (a `calling_media_state`). `CALLING_EVENT_USER_ENTER`
    /// means signaling connected; this says when audio and video can flow.
    CALLING_EVENT_MEDIA_STATE = 23,
}

/// The media connection with one party (`CALLING_EVENT_MEDIA_STATE`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_media_state {
    /// Not applicable to this event.
    CALLING_MEDIA_STATE_NONE = 0,
    /// Offer, answer and connectivity checks are under way.
    CALLING_MEDIA_STATE_CONNECTING = 1,
    /// Audio and video can flow.
    CALLING_MEDIA_STATE_CONNECTED = 2,
    /// Connectivity was lost; ICE restarts try to bring it back within the
    /// media restore bound.
    CALLING_MEDIA_STATE_DISCONNECTED = 3,
    /// Media flows again after DISCONNECTED, on the same connection.
    CALLING_MEDIA_STATE_RESTORED = 4,
    /// Media with this party was not restored in time: none flows. When
    /// media failed with every connected party (always in a 1v1 call), the
    /// call ends with CALLING_END_REASON_MEDIA_FAILED; otherwise it goes on.
    CALLING_MEDIA_STATE_FAILED = 5,
}

/// A call's media type, numbered as in TRTCCalling.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_media_type {
    /// Not applicable to this event.
    CALLING_MEDIA_TYPE_NONE = 0,
    /// Audio only.
    CALLING_MEDIA_TYPE_AUDIO = 1,
    /// Audio and video.
    CALLING_MEDIA_TYPE_VIDEO = 2,
}

/// Why a call ended (`CALLING_EVENT_CALL_END`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_end_reason {
    /// Not applicable to this event, or a reason this header does not know.
    CALLING_END_REASON_NONE = 0,
    /// Someone hung up.
    CALLING_END_REASON_HANGUP = 1,
    /// The local user rejected, or every invitee rejected.
    CALLING_END_REASON_REJECTED = 2,
    /// The invitees did not answer in time.
    CALLING_END_REASON_NO_RESPONSE = 3,
    /// The invitees were offline.
    CALLING_END_REASON_OFFLINE = 4,
    /// The invitees were in other calls.
    CALLING_END_REASON_LINE_BUSY = 5,
    /// Cancelled before it was answered.
    CALLING_END_REASON_CANCELLED = 6,
    /// The local user's ringing timed out.
    CALLING_END_REASON_TIMED_OUT = 7,
    /// The local user ignored the invite.
    CALLING_END_REASON_IGNORED = 8,
    /// The same user logged in elsewhere.
    CALLING_END_REASON_KICKED_OUT = 9,
    /// The local user logged out.
    CALLING_END_REASON_LOGGED_OUT = 10,
    /// A join by id found no call.
    CALLING_END_REASON_NOT_FOUND = 11,
    // 12 was CALLING_END_REASON_ERROR, never sent.
    /// Media with every other party broke and was not restored within the
    /// media restore bound: the local user left the call (the others see a
    /// hangup). Preceded by CALLING_EVENT_MEDIA_STATE with
    /// CALLING_MEDIA_STATE_FAILED.
    CALLING_END_REASON_MEDIA_FAILED = 13,
}

/// Why invitees did not answer (`CALLING_EVENT_NO_RESPONSE`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_no_answer {
    /// Not applicable to this event.
    CALLING_NO_ANSWER_NONE = 0,
    /// The ringing timed out.
    CALLING_NO_ANSWER_TIMEOUT = 1,
    /// The users were offline.
    CALLING_NO_ANSWER_OFFLINE = 2,
}

/// One event. Every pointer in it (strings and string arrays) is valid only
/// as long as the event: during the callback, or until
/// `calling_event_free` for an event from the poll functions. Fields an
/// event kind does not use are NULL, zero or false.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct calling_event {
    /// What happened.
    pub kind: calling_event_kind,
    /// The call, or NULL.
    pub call_id: *const c_char,
    /// The invite, or NULL.
    pub invite_id: *const c_char,
    /// The user the event is about (the sponsor for INVITED), or NULL.
    pub user: *const c_char,
    /// Who sent the invite (INVITED), or NULL.
    pub inviter: *const c_char,
    /// A list of users (see the kind), `users_len` entries.
    pub users: *const *const c_char,
    /// Entries in `users`.
    pub users_len: usize,
    /// Users already connected (INVITED), `members_len` entries.
    pub members: *const *const c_char,
    /// Entries in `members`.
    pub members_len: usize,
    /// The application group (INVITED), or NULL.
    pub group_id: *const c_char,
    /// The caller's application data (INVITED), or NULL.
    pub user_data: *const c_char,
    /// The error text (ERROR), or NULL.
    pub message: *const c_char,
    /// The dropped call (GLARE_RESOLVED), or NULL.
    pub abandoned_call_id: *const c_char,
    /// A `calling_media_type`: the call's type, the new or the asked type.
    pub media_type: u32,
    /// A `calling_media_type`: the old type (MEDIA_TYPE_CHANGED).
    pub from_media_type: u32,
    /// A `calling_end_reason` (CALL_END).
    pub end_reason: u32,
    /// A `calling_no_answer` (NO_RESPONSE).
    pub no_answer_reason: u32,
    /// Time connected, in milliseconds (CALL_END).
    pub duration_ms: u64,
    /// The media room (INVITED).
    pub room_id: u32,
    /// Ringing time in seconds, 0 for none (INVITED).
    pub timeout_secs: u32,
    /// A stable error code (ERROR).
    pub code: u32,
    /// The switch request to answer (MEDIA_TYPE_SWITCH_REQUESTED).
    pub request_id: u32,
    /// Voice volume, 0 to 100 (USER_VOICE_VOLUME).
    pub volume: u8,
    /// Whether audio or video is on (USER_*_AVAILABLE).
    pub available: bool,
    /// Whether the call is a group call (INVITED).
    pub is_from_group: bool,
    /// A `calling_media_state` (MEDIA_STATE). New fields are only ever
    /// added at the end of this struct.
    pub media_state: u32,
}

/// An event and the memory its pointers point into. The `CString` and
/// `Vec` buffers live on the heap, so moving an `OwnedEvent` (or boxing it)
/// leaves the pointers in `raw` valid.
#[derive(Debug)]
pub(crate) struct OwnedEvent {
    pub(crate) raw: calling_event,
    _strings: Vec<CString>,
    _arrays: Vec<Vec<*const c_char>>,
}

// SAFETY: the raw pointers point only into the heap buffers this struct
// owns, which nothing else aliases or mutates.
unsafe impl Send for OwnedEvent {}

/// Builds the C view of one event.
struct Builder {
    strings: Vec<CString>,
    arrays: Vec<Vec<*const c_char>>,
}

impl Builder {
    fn string(&mut self, s: &str) -> *const c_char {
        // Ids are checked ASCII; only free text (user data, messages) could
        // hold a NUL, and it is cut there rather than lost.
        let c = crate::result::c_text(s);
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    fn opt_string(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.string(s))
    }

    fn list<'a>(
        &mut self,
        items: impl IntoIterator<Item = &'a str>,
    ) -> (*const *const c_char, usize) {
        let ptrs: Vec<*const c_char> = items.into_iter().map(|s| self.string(s)).collect();
        if ptrs.is_empty() {
            return (ptr::null(), 0);
        }
        let out = (ptrs.as_ptr(), ptrs.len());
        self.arrays.push(ptrs);
        out
    }
}

fn media_code(m: MediaType) -> u32 {
    u32::from(m.code())
}

fn end_code(r: EndReason) -> calling_end_reason {
    use calling_end_reason::*;
    match r {
        EndReason::Hangup => CALLING_END_REASON_HANGUP,
        EndReason::Rejected => CALLING_END_REASON_REJECTED,
        EndReason::NoResponse => CALLING_END_REASON_NO_RESPONSE,
        EndReason::Offline => CALLING_END_REASON_OFFLINE,
        EndReason::LineBusy => CALLING_END_REASON_LINE_BUSY,
        EndReason::Cancelled => CALLING_END_REASON_CANCELLED,
        EndReason::TimedOut => CALLING_END_REASON_TIMED_OUT,
        EndReason::Ignored => CALLING_END_REASON_IGNORED,
        EndReason::KickedOut => CALLING_END_REASON_KICKED_OUT,
        EndReason::LoggedOut => CALLING_END_REASON_LOGGED_OUT,
        EndReason::NotFound => CALLING_END_REASON_NOT_FOUND,
        EndReason::MediaFailed => CALLING_END_REASON_MEDIA_FAILED,
    }
}

fn media_state_code(state: MediaState) -> calling_media_state {
    use calling_media_state::*;
    match state {
        MediaState::Connecting => CALLING_MEDIA_STATE_CONNECTING,
        MediaState::Connected => CALLING_MEDIA_STATE_CONNECTED,
        MediaState::Disconnected => CALLING_MEDIA_STATE_DISCONNECTED,
        MediaState::Restored => CALLING_MEDIA_STATE_RESTORED,
        MediaState::Failed => CALLING_MEDIA_STATE_FAILED,
    }
}

impl OwnedEvent {
    pub(crate) fn new(event: &Event) -> OwnedEvent {
        use calling_event_kind::*;
        let mut b = Builder {
            strings: Vec::new(),
            arrays: Vec::new(),
        };
        let mut raw = calling_event {
            kind: CALLING_EVENT_UNKNOWN,
            call_id: ptr::null(),
            invite_id: ptr::null(),
            user: ptr::null(),
            inviter: ptr::null(),
            users: ptr::null(),
            users_len: 0,
            members: ptr::null(),
            members_len: 0,
            group_id: ptr::null(),
            user_data: ptr::null(),
            message: ptr::null(),
            abandoned_call_id: ptr::null(),
            media_type: 0,
            from_media_type: 0,
            end_reason: 0,
            no_answer_reason: 0,
            duration_ms: 0,
            room_id: 0,
            timeout_secs: 0,
            code: 0,
            request_id: 0,
            volume: 0,
            available: false,
            is_from_group: false,
            media_state: 0,
        };
        match event {
            Event::Call(call) => b.call_event(&mut raw, call),
            Event::Media {
                call_id,
                user,
                state,
            } => {
                raw.kind = CALLING_EVENT_MEDIA_STATE;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
                raw.media_state = media_state_code(*state) as u32;
            }
            Event::KickedOut => raw.kind = CALLING_EVENT_KICKED_OUT,
            Event::LoginExpired => raw.kind = CALLING_EVENT_LOGIN_EXPIRED,
            Event::Disconnected => raw.kind = CALLING_EVENT_DISCONNECTED,
            Event::Reconnected => raw.kind = CALLING_EVENT_RECONNECTED,
            Event::UserVoiceVolume { user, volume } => {
                raw.kind = CALLING_EVENT_USER_VOICE_VOLUME;
                raw.user = b.string(user.as_str());
                raw.volume = *volume;
            }
            Event::Error { code, message } => {
                raw.kind = CALLING_EVENT_ERROR;
                raw.code = code.code();
                raw.message = b.string(message);
            }
        }
        OwnedEvent {
            raw,
            _strings: b.strings,
            _arrays: b.arrays,
        }
    }
}

impl Builder {
    /// Fills `raw` for a call event.
    fn call_event(&mut self, raw: &mut calling_event, event: &CallEvent) {
        use calling_event_kind::*;
        let b = self;
        match event {
            CallEvent::Invited {
                call_id,
                invite_id,
                sponsor,
                inviter,
                other_invitees,
                members,
                is_from_group,
                group_id,
                media_type,
                room_id,
                user_data,
                timeout,
            } => {
                raw.kind = CALLING_EVENT_INVITED;
                raw.call_id = b.string(call_id.as_str());
                raw.invite_id = b.string(invite_id.as_str());
                raw.user = b.string(sponsor.as_str());
                raw.inviter = b.string(inviter.as_str());
                (raw.users, raw.users_len) = b.list(other_invitees.iter().map(|u| u.as_str()));
                (raw.members, raw.members_len) = b.list(members.iter().map(|u| u.as_str()));
                raw.is_from_group = *is_from_group;
                raw.group_id = b.opt_string(group_id.as_ref().map(|g| g.as_str()));
                raw.media_type = media_code(*media_type);
                raw.room_id = room_id.get();
                raw.user_data = b.opt_string(user_data.as_deref());
                raw.timeout_secs = *timeout;
            }
            CallEvent::Rejected { call_id, user } => {
                raw.kind = CALLING_EVENT_REJECTED;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
            }
            CallEvent::NoResponse {
                call_id,
                users,
                reason,
            } => {
                raw.kind = CALLING_EVENT_NO_RESPONSE;
                raw.call_id = b.string(call_id.as_str());
                (raw.users, raw.users_len) = b.list(users.iter().map(|u| u.as_str()));
                raw.no_answer_reason = match reason {
                    NoAnswer::Timeout => calling_no_answer::CALLING_NO_ANSWER_TIMEOUT,
                    NoAnswer::Offline => calling_no_answer::CALLING_NO_ANSWER_OFFLINE,
                } as u32;
            }
            CallEvent::LineBusy { call_id, user } => {
                raw.kind = CALLING_EVENT_LINE_BUSY;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
            }
            CallEvent::CallingCancel {
                call_id,
                invite_id,
                user,
            } => {
                raw.kind = CALLING_EVENT_CALLING_CANCEL;
                raw.call_id = b.string(call_id.as_str());
                raw.invite_id = b.string(invite_id.as_str());
                raw.user = b.string(user.as_str());
            }
            CallEvent::CallingTimeout { call_id, invite_id } => {
                raw.kind = CALLING_EVENT_CALLING_TIMEOUT;
                raw.call_id = b.string(call_id.as_str());
                raw.invite_id = b.string(invite_id.as_str());
            }
            CallEvent::UserEnter { call_id, user } => {
                raw.kind = CALLING_EVENT_USER_ENTER;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
            }
            CallEvent::UserLeave { call_id, user } => {
                raw.kind = CALLING_EVENT_USER_LEAVE;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
            }
            CallEvent::CallEnd {
                call_id,
                reason,
                duration,
            } => {
                raw.kind = CALLING_EVENT_CALL_END;
                raw.call_id = b.string(call_id.as_str());
                raw.end_reason = end_code(*reason) as u32;
                raw.duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            }
            CallEvent::UserVideoAvailable {
                call_id,
                user,
                available,
            } => {
                raw.kind = CALLING_EVENT_USER_VIDEO_AVAILABLE;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
                raw.available = *available;
            }
            CallEvent::UserAudioAvailable {
                call_id,
                user,
                available,
            } => {
                raw.kind = CALLING_EVENT_USER_AUDIO_AVAILABLE;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
                raw.available = *available;
            }
            CallEvent::MediaTypeChanged {
                call_id,
                user,
                from,
                to,
            } => {
                raw.kind = CALLING_EVENT_MEDIA_TYPE_CHANGED;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
                raw.from_media_type = media_code(*from);
                raw.media_type = media_code(*to);
            }
            CallEvent::MediaTypeSwitchRequested {
                call_id,
                user,
                request_id,
                to,
            } => {
                raw.kind = CALLING_EVENT_MEDIA_TYPE_SWITCH_REQUESTED;
                raw.call_id = b.string(call_id.as_str());
                raw.user = b.string(user.as_str());
                raw.request_id = *request_id;
                raw.media_type = media_code(*to);
            }
            CallEvent::MediaTypeSwitchRefused { call_id, users } => {
                raw.kind = CALLING_EVENT_MEDIA_TYPE_SWITCH_REFUSED;
                raw.call_id = b.string(call_id.as_str());
                (raw.users, raw.users_len) = b.list(users.iter().map(|u| u.as_str()));
            }
            CallEvent::InviteeListUpdated { call_id, invitees } => {
                raw.kind = CALLING_EVENT_INVITEE_LIST_UPDATED;
                raw.call_id = b.string(call_id.as_str());
                (raw.users, raw.users_len) = b.list(invitees.iter().map(|u| u.as_str()));
            }
            CallEvent::GlareResolved { abandoned, call_id } => {
                raw.kind = CALLING_EVENT_GLARE_RESOLVED;
                raw.abandoned_call_id = b.string(abandoned.as_str());
                raw.call_id = b.string(call_id.as_str());
            }
        }
    }
}

/// Frees an event returned by `calling_client_poll_event` or
/// `calling_client_wait_event`. NULL is accepted and ignored. Never pass an
/// event received in a callback: the library owns those.
///
/// # Safety
///
/// `event` is NULL or an event from the poll functions not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_event_free(event: *mut calling_event) {
    crate::result::guard_void(|| {
        if event.is_null() {
            return;
        }
        // SAFETY: `calling_event` is the first field of the boxed,
        // `#[repr(C)]` `PolledEvent` handed out by the poll functions.
        drop(unsafe { Box::from_raw(event.cast::<PolledEvent>()) });
    });
}

/// What the poll functions hand out: the C view first, so that a pointer to
/// the box is a pointer to the `calling_event`.
#[repr(C)]
pub(crate) struct PolledEvent {
    raw: calling_event,
    owner: OwnedEvent,
}

impl PolledEvent {
    /// Boxes an event for C; free with [`calling_event_free`].
    pub(crate) fn into_raw(owner: OwnedEvent) -> *mut calling_event {
        let raw = owner.raw;
        Box::into_raw(Box::new(PolledEvent { raw, owner })).cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calling::{CallId, UserId};
    use std::ffi::CStr;
    use std::time::Duration;

    fn text(p: *const c_char) -> &'static str {
        assert!(!p.is_null());
        // SAFETY: test-only; the event outlives every use below.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    }

    #[test]
    fn call_end_maps_every_field() {
        let e = OwnedEvent::new(&Event::Call(CallEvent::CallEnd {
            call_id: CallId::new("c-1").unwrap(),
            reason: EndReason::LineBusy,
            duration: Duration::from_millis(1500),
        }));
        assert_eq!(e.raw.kind, calling_event_kind::CALLING_EVENT_CALL_END);
        assert_eq!(text(e.raw.call_id), "c-1");
        assert_eq!(
            e.raw.end_reason,
            calling_end_reason::CALLING_END_REASON_LINE_BUSY as u32
        );
        assert_eq!(e.raw.duration_ms, 1500);
        assert!(e.raw.user.is_null());
    }

    #[test]
    fn lists_survive_a_move_into_a_box() {
        let e = OwnedEvent::new(&Event::Call(CallEvent::NoResponse {
            call_id: CallId::new("c").unwrap(),
            users: vec![UserId::new("bob").unwrap(), UserId::new("carol").unwrap()],
            reason: NoAnswer::Offline,
        }));
        let p = PolledEvent::into_raw(e);
        // SAFETY: just created, freed below.
        let ev = unsafe { &*p };
        assert_eq!(ev.users_len, 2);
        // SAFETY: `users_len` entries.
        let users = unsafe { std::slice::from_raw_parts(ev.users, ev.users_len) };
        assert_eq!(text(users[0]), "bob");
        assert_eq!(text(users[1]), "carol");
        assert_eq!(
            ev.no_answer_reason,
            calling_no_answer::CALLING_NO_ANSWER_OFFLINE as u32
        );
        // SAFETY: from `into_raw`.
        unsafe { calling_event_free(p) };
    }

    fn list(p: *const *const c_char, len: usize) -> Vec<&'static str> {
        if len == 0 {
            assert!(p.is_null());
            return Vec::new();
        }
        // SAFETY: test-only; `len` entries.
        unsafe { std::slice::from_raw_parts(p, len) }
            .iter()
            .map(|&s| text(s))
            .collect()
    }

    fn opt(p: *const c_char) -> Option<&'static str> {
        (!p.is_null()).then(|| text(p))
    }

    #[test]
    fn every_event_of_the_sdk_has_its_kind_and_fields() {
        use calling::{GroupId, InviteId};
        use calling_event_kind::*;
        let call = || CallId::new("call-1").unwrap();
        let invite = || InviteId::new("inv-1").unwrap();
        let u = |s: &str| UserId::new(s).unwrap();

        let o = OwnedEvent::new(&Event::Call(CallEvent::Invited {
            call_id: call(),
            invite_id: invite(),
            sponsor: u("alice"),
            inviter: u("bob"),
            other_invitees: vec![u("carol")],
            members: vec![u("alice"), u("bob")],
            is_from_group: true,
            group_id: Some(GroupId::new("g1").unwrap()),
            media_type: MediaType::Video,
            room_id: calling::RoomId::new(42).unwrap(),
            user_data: Some("hello".into()),
            timeout: 30,
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_INVITED);
        assert_eq!(text(e.call_id), "call-1");
        assert_eq!(text(e.invite_id), "inv-1");
        assert_eq!(text(e.user), "alice");
        assert_eq!(text(e.inviter), "bob");
        assert_eq!(list(e.users, e.users_len), ["carol"]);
        assert_eq!(list(e.members, e.members_len), ["alice", "bob"]);
        assert!(e.is_from_group);
        assert_eq!(opt(e.group_id), Some("g1"));
        assert_eq!(
            e.media_type,
            calling_media_type::CALLING_MEDIA_TYPE_VIDEO as u32
        );
        assert_eq!(e.room_id, 42);
        assert_eq!(opt(e.user_data), Some("hello"));
        assert_eq!(e.timeout_secs, 30);

        let cases: Vec<(Event, calling_event_kind, Option<&str>, Option<&str>)> = vec![
            (
                Event::Call(CallEvent::Rejected {
                    call_id: call(),
                    user: u("bob"),
                }),
                CALLING_EVENT_REJECTED,
                Some("bob"),
                None,
            ),
            (
                Event::Call(CallEvent::LineBusy {
                    call_id: call(),
                    user: u("bob"),
                }),
                CALLING_EVENT_LINE_BUSY,
                Some("bob"),
                None,
            ),
            (
                Event::Call(CallEvent::CallingCancel {
                    call_id: call(),
                    invite_id: invite(),
                    user: u("al"),
                }),
                CALLING_EVENT_CALLING_CANCEL,
                Some("al"),
                Some("inv-1"),
            ),
            (
                Event::Call(CallEvent::CallingTimeout {
                    call_id: call(),
                    invite_id: invite(),
                }),
                CALLING_EVENT_CALLING_TIMEOUT,
                None,
                Some("inv-1"),
            ),
            (
                Event::Call(CallEvent::UserEnter {
                    call_id: call(),
                    user: u("x"),
                }),
                CALLING_EVENT_USER_ENTER,
                Some("x"),
                None,
            ),
            (
                Event::Call(CallEvent::UserLeave {
                    call_id: call(),
                    user: u("y"),
                }),
                CALLING_EVENT_USER_LEAVE,
                Some("y"),
                None,
            ),
            (Event::KickedOut, CALLING_EVENT_KICKED_OUT, None, None),
            (Event::LoginExpired, CALLING_EVENT_LOGIN_EXPIRED, None, None),
            (Event::Disconnected, CALLING_EVENT_DISCONNECTED, None, None),
            (Event::Reconnected, CALLING_EVENT_RECONNECTED, None, None),
            (
                Event::Call(CallEvent::UserVideoAvailable {
                    call_id: call(),
                    user: u("v"),
                    available: true,
                }),
                CALLING_EVENT_USER_VIDEO_AVAILABLE,
                Some("v"),
                None,
            ),
            (
                Event::Call(CallEvent::UserAudioAvailable {
                    call_id: call(),
                    user: u("a"),
                    available: true,
                }),
                CALLING_EVENT_USER_AUDIO_AVAILABLE,
                Some("a"),
                None,
            ),
        ];
        for (event, kind, user, invite_id) in cases {
            let o = OwnedEvent::new(&event);
            let e = o.raw;
            assert_eq!(e.kind, kind, "{event:?}");
            assert_eq!(opt(e.user), user, "{event:?}");
            assert_eq!(opt(e.invite_id), invite_id, "{event:?}");
            let has_call = !matches!(
                event,
                Event::KickedOut | Event::LoginExpired | Event::Disconnected | Event::Reconnected
            );
            assert_eq!(opt(e.call_id), has_call.then_some("call-1"), "{event:?}");
            if matches!(
                kind,
                CALLING_EVENT_USER_VIDEO_AVAILABLE | CALLING_EVENT_USER_AUDIO_AVAILABLE
            ) {
                assert!(e.available);
            }
        }

        let o = OwnedEvent::new(&Event::UserVoiceVolume {
            user: u("v"),
            volume: 73,
        });
        let e = o.raw;
        assert_eq!(
            (e.kind, e.volume, text(e.user)),
            (CALLING_EVENT_USER_VOICE_VOLUME, 73, "v")
        );

        let o = OwnedEvent::new(&Event::Call(CallEvent::MediaTypeChanged {
            call_id: call(),
            user: u("m"),
            from: MediaType::Audio,
            to: MediaType::Video,
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_MEDIA_TYPE_CHANGED);
        assert_eq!((e.from_media_type, e.media_type), (1, 2));

        let o = OwnedEvent::new(&Event::Call(CallEvent::MediaTypeSwitchRequested {
            call_id: call(),
            user: u("m"),
            request_id: 9,
            to: MediaType::Video,
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_MEDIA_TYPE_SWITCH_REQUESTED);
        assert_eq!((e.request_id, e.media_type), (9, 2));

        let o = OwnedEvent::new(&Event::Call(CallEvent::MediaTypeSwitchRefused {
            call_id: call(),
            users: vec![u("r")],
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_MEDIA_TYPE_SWITCH_REFUSED);
        assert_eq!(list(e.users, e.users_len), ["r"]);

        let o = OwnedEvent::new(&Event::Call(CallEvent::InviteeListUpdated {
            call_id: call(),
            invitees: vec![],
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_INVITEE_LIST_UPDATED);
        assert_eq!(e.users_len, 0);

        let o = OwnedEvent::new(&Event::Call(CallEvent::GlareResolved {
            abandoned: CallId::new("old").unwrap(),
            call_id: call(),
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_GLARE_RESOLVED);
        assert_eq!(
            (text(e.abandoned_call_id), text(e.call_id)),
            ("old", "call-1")
        );

        let o = OwnedEvent::new(&Event::Call(CallEvent::NoResponse {
            call_id: call(),
            users: vec![u("n")],
            reason: NoAnswer::Timeout,
        }));
        let e = o.raw;
        assert_eq!(e.kind, CALLING_EVENT_NO_RESPONSE);
        assert_eq!(
            e.no_answer_reason,
            calling_no_answer::CALLING_NO_ANSWER_TIMEOUT as u32
        );
    }

    #[test]
    fn a_nul_in_free_text_is_cut_not_lost() {
        let e = OwnedEvent::new(&Event::Error {
            code: calling::ErrorCode::AudioSource,
            message: "bad\0tail".into(),
        });
        assert_eq!(text(e.raw.message), "bad");
        assert_eq!(e.raw.code, 2002);
    }
}
