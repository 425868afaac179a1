//! Builds the C programs (tests/c/ and examples/c/) against the freshly built
//! `libcalling_ffi` with `-Wall -Wextra -Werror` under AddressSanitizer and
//! UBSan, then runs them against an in-process signaling server on
//! 127.0.0.1:0 and checks their exit code and output. The documented
//! build-and-link lines (README.md, docs/C-API.md, the crate README) are run
//! exactly as printed, without `LD_LIBRARY_PATH`.

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

/// The fenced `sh` block between `<!-- c-link-line:begin -->` and
/// `<!-- c-link-line:end -->` in a document of the workspace.
fn documented_link_lines(doc: &str) -> String {
    let path = workspace().join(doc);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let begin = text
        .find("<!-- c-link-line:begin -->")
        .unwrap_or_else(|| panic!("{doc} has no <!-- c-link-line:begin -->"));
    let end = text[begin..]
        .find("<!-- c-link-line:end -->")
        .unwrap_or_else(|| panic!("{doc} has no <!-- c-link-line:end -->"));
    let marked = &text[begin..begin + end];
    let body = marked
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("{doc}: no ```sh block between the markers"))
        .1;
    body.rsplit_once("```")
        .unwrap_or_else(|| panic!("{doc}: the ```sh block is not closed"))
        .0
        .to_owned()
}

/// The first fenced `c` block of a document of the workspace.
fn documented_c_program(doc: &str) -> String {
    let text = std::fs::read_to_string(workspace().join(doc)).unwrap();
    let body = text.split_once("```c\n").expect("a ```c block").1;
    body.split_once("```")
        .expect("a closed ```c block")
        .0
        .to_owned()
}

/// The README, docs/C-API.md and the crate README give one command to build,
/// link and run a C program. It is run here exactly as printed, from a
/// directory laid out like the repository root (`include/` and
/// `target/release/` link to the header and to this build's library), on
/// the crate README's `app.c`, with no `LD_LIBRARY_PATH`: a program that
/// cannot find `libcalling_ffi.so` at run time fails the test.
#[cfg(unix)]
#[test]
fn c_documented_link_line_runs_without_ld_library_path() {
    let lines = documented_link_lines("docs/C-API.md");
    for doc in ["README.md", "crates/calling-ffi/README.md"] {
        assert_eq!(
            documented_link_lines(doc),
            lines,
            "{doc} and docs/C-API.md document different C build lines"
        );
    }
    assert!(
        !lines.contains("LD_LIBRARY_PATH"),
        "the documented lines must work without LD_LIBRARY_PATH:\n{lines}"
    );
    let mut lines = lines.lines();
    // This test's own build stands in for the release build: it made the
    // library that target/release/ links to below.
    assert_eq!(lines.next(), Some("cargo build --release -p calling-ffi"));
    let commands: Vec<&str> = lines.collect();
    assert!(
        commands.iter().any(|l| l.starts_with("cc app.c ")) && commands.last() == Some(&"./app"),
        "expected a `cc app.c ...` line and then `./app`: {commands:?}"
    );

    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("documented-link-line");
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(root.join("target")).unwrap();
    std::os::unix::fs::symlink(workspace().join("include"), root.join("include")).unwrap();
    std::os::unix::fs::symlink(lib_dir(), root.join("target/release")).unwrap();
    std::fs::write(
        root.join("app.c"),
        documented_c_program("crates/calling-ffi/README.md"),
    )
    .unwrap();

    let mut last = None;
    for command in commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&root)
            // The shell sets $PWD to the directory it runs in.
            .env_remove("PWD")
            // cargo runs tests with the library's directories on the
            // loader path; a user's shell has none of them.
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last = Some(out);
    }
    let stdout = String::from_utf8(last.unwrap().stdout).unwrap();
    assert_eq!(stdout.trim(), format!("{}: ok", env!("CARGO_PKG_VERSION")));
}
