//! What crossing the C boundary costs: a call that only checks its
//! arguments, a poll on an empty queue, a blocking SDK operation (one round
//! trip into the client's runtime and back), and UserSig generation.
//!
//! `cargo bench -p calling-ffi --bench ffi`

#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::hint::black_box;
use std::ptr;

use calling_ffi::*;
use calling_server::{Config, Server};
use criterion::{Criterion, criterion_group, criterion_main};

const APP: u64 = 1_400_000_002;
const KEY: &str = "bench-secret";

fn bench(c: &mut Criterion) {
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
    let key = CString::new(KEY).unwrap();
    let user = CString::new("alice").unwrap();

    let mut config = ptr::null_mut();
    // SAFETY: valid pointers throughout; the config is freed once the
    // client is made, the client at the end.
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
            calling_config_set_sdk_app_id(config, APP),
            calling_result::CALLING_RESULT_OK
        );
    }
    let mut client = ptr::null_mut();
    let mut sig = ptr::null_mut();
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            calling_client_new(config, &mut client),
            calling_result::CALLING_RESULT_OK
        );
        calling_config_free(config);
        assert_eq!(
            calling_usersig_generate(APP, key.as_ptr(), user.as_ptr(), 3600, &mut sig),
            calling_result::CALLING_RESULT_OK
        );
        assert_eq!(
            calling_client_login(client, user.as_ptr(), sig),
            calling_result::CALLING_RESULT_OK
        );
    }

    c.bench_function("null check only (hangup on NULL)", |b| {
        // SAFETY: NULL is a documented input.
        b.iter(|| unsafe { black_box(calling_client_hangup(black_box(ptr::null_mut()))) })
    });
    c.bench_function("poll_event on an empty queue", |b| {
        let mut ev = ptr::null_mut();
        // SAFETY: live client, valid out-pointer.
        b.iter(|| unsafe { black_box(calling_client_poll_event(client, &mut ev)) })
    });
    c.bench_function("set_hands_free (blocking round trip)", |b| {
        // SAFETY: live client.
        b.iter(|| unsafe { black_box(calling_client_set_hands_free(client, false)) })
    });
    c.bench_function("usersig_generate", |b| {
        b.iter(|| {
            let mut out = ptr::null_mut();
            // SAFETY: valid strings and out-pointer; freed right after.
            unsafe {
                calling_usersig_generate(APP, key.as_ptr(), user.as_ptr(), 3600, &mut out);
                calling_string_free(out);
            }
        })
    });

    // SAFETY: from this library, freed once.
    unsafe {
        calling_string_free(sig);
        calling_client_free(client);
    }
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
