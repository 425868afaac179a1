//! Builds the C programs (tests/c/ and examples/c/) against the freshly built
//! `libcalling_ffi` with `-Wall -Wextra -Werror` under AddressSanitizer and
//! UBSan, then runs them against an in-process signaling server on
//! 127.0.0.1:0 and checks their exit code and output.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use calling_server::{Config, RunningServer, Server};

const APP: u64 = 1_400_000_001;
const KEY: &str = "ffi-test-secret";
/// Longest a C program may run before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put the `libcalling_ffi.so` of this very build: beside the
/// test binary in `<target>/<profile>/deps/`. (`cargo test` does not copy it
/// up to `<target>/<profile>/`, where a copy from an older `cargo build`
/// may linger.)
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(
        dir.join("libcalling_ffi.so").exists(),
        "libcalling_ffi.so not found in {}",
        dir.display()
    );
    dir
}

/// Compiles one C file into an executable, failing the test on any warning.
fn compile(source: &Path, name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib = lib_dir();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args([
            "-std=c11",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
        ])
        .arg("-I")
        .arg(workspace().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lcalling_ffi", "-lpthread", "-ldl", "-lm"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "compiling {} failed", source.display());
    out
}

/// Runs a program with a time limit and returns its output.
fn run(exe: &Path, args: &[String]) -> Output {
    let child = Command::new(exe)
        .args(args)
        // cargo's own LD_LIBRARY_PATH lists `<target>/<profile>/` first,
        // where a stale copy of the library may sit: load this build's.
        .env("LD_LIBRARY_PATH", lib_dir())
        // Leak checking stays on: strings and events the C side forgets to
        // free would show up here.
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=86",
        )
        .env("LSAN_OPTIONS", "exitcode=87")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{} ran longer than {RUN_LIMIT:?}", exe.display());
        }
    }
}

/// A signaling server on 127.0.0.1:0, served by its own runtime.
fn server() -> (tokio::runtime::Runtime, RunningServer, String) {
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
    let url = format!("ws://{}/ws", server.local_addr());
    (rt, server, url)
}

fn check(out: &Output, expected_lines: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture: what the C program printed.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for line in expected_lines {
        assert!(
            stdout.lines().any(|l| l.contains(line)),
            "no line with {line:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
}

#[test]
fn c_api_contract_under_sanitizers() {
    let exe = compile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/api_test.c"),
        "api_test",
    );
    let (_rt, _server, url) = server();
    let out = run(&exe, &[url, APP.to_string(), KEY.to_owned()]);
    check(
        &out,
        &[
            "static ok",
            "usersig ok",
            "config ok",
            "null arguments ok",
            "invalid input ok",
            "lifecycle ok",
            "no events after free ok",
            "kicked out ok",
            "expired login ok",
            "all ok",
        ],
    );
}

#[test]
fn c_example_places_a_call_under_sanitizers() {
    let exe = compile(&workspace().join("examples/c/call.c"), "call_example");
    let (_rt, _server, url) = server();
    let out = run(&exe, &[url, APP.to_string(), KEY.to_owned()]);
    check(
        &out,
        &[
            "[bob] INVITED",
            "[alice] USER_ENTER bob",
            "[bob] USER_ENTER alice",
            "frames from bob: video",
            "frames from alice: video",
            "stats for bob: connected=1",
            "[alice] CALL_END",
            "[bob] CALL_END",
            "done",
        ],
    );
}

#[test]
fn c_raw_media_example_pushes_and_decodes_under_sanitizers() {
    let exe = compile(
        &workspace().join("examples/c/raw_media.c"),
        "raw_media_example",
    );
    let (_rt, _server, url) = server();
    let out = run(&exe, &[url, APP.to_string(), KEY.to_owned()]);
    check(
        &out,
        &[
            "push errors ok",
            "[bob] decoded",
            "pictures from alice",
            "audio chunks from alice",
            "inside a decoded callback refused: yes",
            "done",
        ],
    );
}
