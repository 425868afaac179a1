//! A refused login reaches C with the server's reason: a result code per
//! reason, and the reason's text in `calling_client_last_error`. Driven
//! through the extern functions against a calling-server on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use calling_ffi::*;
use calling_server::{Config, RunningServer, Server};

const APP: u64 = 1_400_000_003;
const KEY: &str = "login-refusals-secret";

/// A signaling server on 127.0.0.1:0, served by its own runtime (the
/// extern functions block, so the test itself runs outside any runtime).
fn server() -> (tokio::runtime::Runtime, RunningServer, CString) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let mut config = Config::new(APP, KEY);
        config.listen = "127.0.0.1:0".parse().unwrap();
        Server::bind(config).await.unwrap()
    });
    let url = CString::new(format!("ws://{}/ws", server.local_addr())).unwrap();
    (rt, server, url)
}

/// A client handle, freed on drop.
struct Client(*mut calling_client);

// SAFETY: the C API allows a client to be used from any thread.
unsafe impl Send for Client {}
// SAFETY: as above; every function takes the client by shared pointer.
unsafe impl Sync for Client {}

impl Client {
    /// The handle (a method, so that closures capture the whole `Client`).
    fn ptr(&self) -> *mut calling_client {
        self.0
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: from calling_client_new, freed once.
        unsafe { calling_client_free(self.0) };
    }
}

fn client(url: &CStr, app: u64) -> Client {
    let mut config = ptr::null_mut();
    let mut client = ptr::null_mut();
    // SAFETY: valid pointers; the config is freed once the client has it.
    unsafe {
        assert_eq!(
            calling_config_new(&mut config),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_server_url(config, url.as_ptr()),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_sdk_app_id(config, app),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_config_set_video_source(config, 0),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_client_new(config, &mut client),
            calling_result::CALLING_RESULT_OK
        );
        calling_config_free(config);
    }
    Client(client)
}

fn login(c: &Client, user: &str, sig: &str) -> calling_result {
    let user = CString::new(user).unwrap();
    let sig = CString::new(sig).unwrap();
    // SAFETY: a live client and NUL-terminated strings.
    unsafe { calling_client_login(c.0, user.as_ptr(), sig.as_ptr()) }
}

fn last_error(c: &Client) -> String {
    let mut out: *mut c_char = ptr::null_mut();
    // SAFETY: a live client and a valid out-pointer.
    let r = unsafe { calling_client_last_error(c.0, &mut out) };
    assert_eq!(r, calling_result::CALLING_RESULT_OK);
    assert!(!out.is_null());
    // SAFETY: a string from the library, freed right after the copy.
    let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_owned();
    // SAFETY: as above.
    unsafe { calling_string_free(out) };
    text
}

fn sig(app: u64, key: &str, user: &str, issued_at: u64) -> String {
    calling::usersig::generate(app, key, user, 3600, issued_at)
}

#[test]
fn each_refusal_has_its_code_and_the_servers_reason() {
    let (_rt, _server, url) = server();
    let now = calling::usersig::now_unix();
    let alice = client(&url, APP);
    assert_eq!(last_error(&alice), "", "nothing failed yet");

    // Signed two hours ago for one hour.
    let expired = sig(APP, KEY, "alice", now - 7200);
    assert_eq!(
        login(&alice, "alice", &expired),
        calling_result::CALLING_RESULT_LOGIN_SIG_EXPIRED
    );
    let e = last_error(&alice);
    assert!(
        e.starts_with("calling_client_login: transport: login refused: sig_expired: "),
        "{e}"
    );

    // Signed with another key.
    let forged = sig(APP, "not-the-key", "alice", now);
    assert_eq!(
        login(&alice, "alice", &forged),
        calling_result::CALLING_RESULT_LOGIN_BAD_SIGNATURE
    );
    let e = last_error(&alice);
    assert!(
        e.starts_with("calling_client_login: transport: login refused: bad_signature: "),
        "{e}"
    );
    // Issued for another user.
    assert_eq!(
        login(&alice, "alice", &sig(APP, KEY, "bob", now)),
        calling_result::CALLING_RESULT_LOGIN_BAD_SIGNATURE
    );

    // A client configured for an app this server does not serve.
    let other = client(&url, APP + 1);
    assert_eq!(
        login(&other, "alice", &sig(APP + 1, KEY, "alice", now)),
        calling_result::CALLING_RESULT_LOGIN_WRONG_APP
    );
    let e = last_error(&other);
    assert!(
        e.starts_with("calling_client_login: transport: login refused: wrong_app: "),
        "{e}"
    );
    // Each client keeps its own.
    assert!(last_error(&alice).contains("bad_signature"));

    // The right UserSig logs in; the success leaves the last error alone.
    assert_eq!(
        login(&alice, "alice", &sig(APP, KEY, "alice", now)),
        calling_result::CALLING_RESULT_OK
    );
    assert!(last_error(&alice).contains("bad_signature"));

    // An id the server would refuse never reaches it.
    let carol = client(&url, APP);
    assert_eq!(
        login(&carol, "not an id", &sig(APP, KEY, "carol", now)),
        calling_result::CALLING_RESULT_INVALID_ARGUMENT
    );
    assert!(
        last_error(&carol).starts_with("calling_client_login: invalid id: "),
        "{}",
        last_error(&carol)
    );
}

#[test]
fn the_last_error_names_the_function_and_the_argument() {
    let (_rt, _server, url) = server();
    let c = client(&url, APP);
    let mut out: *mut c_char = ptr::null_mut();
    // SAFETY: a live client; NULL where the test says so.
    unsafe {
        assert_eq!(
            calling_client_call(c.0, ptr::null(), 1, 30, &mut out),
            calling_result::CALLING_RESULT_NULL_PARAMETER
        );
        assert_eq!(
            last_error(&c),
            "calling_client_call: `user`: a required pointer argument was NULL"
        );
        assert_eq!(
            calling_client_call(c.0, c"bob".as_ptr(), 7, 30, &mut out),
            calling_result::CALLING_RESULT_INVALID_ARGUMENT
        );
        assert_eq!(
            last_error(&c),
            "calling_client_call: `media_type`: 7 is not a calling_media_type"
        );
        assert_eq!(
            calling_client_hangup(c.0),
            calling_result::CALLING_RESULT_NOT_LOGGED_IN
        );
        assert_eq!(last_error(&c), "calling_client_hangup: not logged in");
        // An empty queue is not a failure.
        let mut ev = ptr::null_mut();
        assert_eq!(
            calling_client_poll_event(c.0, &mut ev),
            calling_result::CALLING_RESULT_NO_EVENT
        );
        assert_eq!(last_error(&c), "calling_client_hangup: not logged in");
        // Nor do the last error's own misuses change it.
        assert_eq!(
            calling_client_last_error(c.0, ptr::null_mut()),
            calling_result::CALLING_RESULT_NULL_PARAMETER
        );
        assert_eq!(
            calling_client_last_error(ptr::null(), &mut out),
            calling_result::CALLING_RESULT_NULL_PARAMETER
        );
        assert_eq!(last_error(&c), "calling_client_hangup: not logged in");
    }
    assert!(out.is_null(), "no out-parameter written on failure");
}

/// Threads that fail operations and read the last error at once: each read
/// is a whole text of one of the failures, never a torn one.
#[test]
fn the_last_error_is_safe_to_read_while_other_threads_fail() {
    let (_rt, _server, url) = server();
    let c = client(&url, APP);
    let texts = [
        "calling_client_hangup: not logged in",
        "calling_client_set_video_quality: `quality`: 9 is not a calling_video_quality",
    ];
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..500 {
                // SAFETY: a live client.
                let r = unsafe { calling_client_hangup(c.ptr()) };
                assert_eq!(r, calling_result::CALLING_RESULT_NOT_LOGGED_IN);
            }
        });
        s.spawn(|| {
            for _ in 0..500 {
                // SAFETY: a live client.
                let r = unsafe { calling_client_set_video_quality(c.ptr(), 9) };
                assert_eq!(r, calling_result::CALLING_RESULT_INVALID_ARGUMENT);
            }
        });
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..500 {
                    let e = last_error(&c);
                    assert!(e.is_empty() || texts.contains(&e.as_str()), "{e}");
                }
            });
        }
    });
    assert!(texts.contains(&last_error(&c).as_str()));
}
