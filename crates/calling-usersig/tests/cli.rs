//! The `usersig` binary: output shapes and exit codes.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_usersig");
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const PY_PLAIN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFEzNPXFmekgGwyjTAPy0l2y3BNL01KDMwPynUorUjwizV29jb1CUhyzfAMsjYNNvMvCjH1tlWoBGhAzGw__";

/// The binary with none of the variables it reads.
fn bin() -> Command {
    let mut cmd = Command::new(BIN);
    for var in ["CALLING_SECRET_KEY", "CALLING_SDK_APP_ID", "USERSIG_KEY"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn verify_official_token_prints_claims_and_exits_0() {
    let out = run(&[
        "verify",
        "--sdk-app-id",
        "1400000000",
        "--key",
        KEY,
        "--user",
        "xiaojun",
        "--now",
        "1600000001",
        PY_PLAIN,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .starts_with(br#"{"valid":true,"identifier":"xiaojun""#)
    );
    let v = stdout_json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["identifier"], "xiaojun");
    assert_eq!(v["sdk_app_id"], 1_400_000_000u64);
    assert_eq!(v["issued_at"], 1_600_000_000u64);
    assert_eq!(v["expires_at"], 1_615_552_000u64);
    assert_eq!(v["userbuf"], Value::Null);
}

#[test]
fn verify_failure_prints_kind_and_exits_1() {
    let out = run(&[
        "verify",
        "--sdk-app-id",
        "1400000000",
        "--key",
        KEY,
        "--user",
        "xiaojun",
        "--now",
        "1700000000",
        PY_PLAIN,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout
            .starts_with(br#"{"valid":false,"error":"expired""#)
    );
    let v = stdout_json(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"], "expired");
    assert!(v["message"].as_str().unwrap().contains("1615552000"));

    let out = run(&[
        "verify",
        "--sdk-app-id",
        "1400000000",
        "--key",
        KEY,
        "--user",
        "xiaojun",
        "garbage!",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["error"], "not_base64");
}

#[test]
fn gen_prints_one_line_that_verifies() {
    let out = run(&[
        "gen",
        "--sdk-app-id",
        "7",
        "--key",
        "k",
        "--user",
        "alice",
        "--expire",
        "60",
        "--userbuf",
        "room-9",
        "--now",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let sig = text.trim_end();
    let claims =
        calling_usersig::verify_with_userbuf(7, "k", "alice", sig, b"room-9", 1060).unwrap();
    assert_eq!(claims.expire_secs, 60);

    let out = run(&[
        "verify",
        "--sdk-app-id",
        "7",
        "--key",
        "k",
        "--user",
        "alice",
        "--now",
        "1000",
        "--userbuf",
        "room-9",
        sig,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out)["userbuf_text"], "room-9");
}

#[test]
fn gen_defaults_to_180_days() {
    let out = run(&[
        "gen",
        "--sdk-app-id",
        "7",
        "--key",
        "k",
        "--user",
        "a",
        "--now",
        "5",
    ]);
    let sig = String::from_utf8(out.stdout).unwrap();
    let claims = calling_usersig::decode_unverified(sig.trim()).unwrap();
    assert_eq!(claims.expire_secs, calling_usersig::DEFAULT_EXPIRE_SECS);
}

#[test]
fn key_can_come_from_the_environment_and_sig_from_stdin() {
    let out = bin()
        .args(["gen", "--sdk-app-id", "7", "--user", "bob", "--now", "10"])
        .env("CALLING_SECRET_KEY", "env-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The current name draws no warning.
    assert!(out.stderr.is_empty(), "{out:?}");
    let sig = String::from_utf8(out.stdout).unwrap();
    calling_usersig::verify(7, "env-secret", "bob", sig.trim(), 10).unwrap();

    let mut child = bin()
        .args(["verify", "--user", "bob", "--now", "10", "-"])
        .env("CALLING_SDK_APP_ID", "7")
        .env("CALLING_SECRET_KEY", "env-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sig.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out)["identifier"], "bob");
}

#[test]
fn the_old_key_variable_still_works_with_one_deprecation_warning() {
    let out = bin()
        .args(["gen", "--sdk-app-id", "7", "--user", "bob", "--now", "10"])
        .env("USERSIG_KEY", "old-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sig = String::from_utf8(out.stdout).unwrap();
    calling_usersig::verify(7, "old-secret", "bob", sig.trim(), 10).unwrap();
    let warning = String::from_utf8(out.stderr).unwrap();
    assert_eq!(warning.lines().count(), 1, "{warning:?}");
    for needle in ["USERSIG_KEY", "deprecated", "CALLING_SECRET_KEY"] {
        assert!(warning.contains(needle), "missing {needle} in {warning:?}");
    }

    // The new name wins, silently, when both are set.
    let out = bin()
        .args(["gen", "--sdk-app-id", "7", "--user", "bob", "--now", "10"])
        .env("USERSIG_KEY", "old-secret")
        .env("CALLING_SECRET_KEY", "new-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let sig = String::from_utf8(out.stdout).unwrap();
    calling_usersig::verify(7, "new-secret", "bob", sig.trim(), 10).unwrap();
}

#[test]
fn privmap_output_is_decoded_by_verify() {
    let out = run(&[
        "privmap",
        "--sdk-app-id",
        "7",
        "--key",
        "k",
        "--user",
        "carol",
        "--room-name",
        "lobby",
        "--privileges",
        "42",
        "--expire",
        "300",
        "--now",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sig = String::from_utf8(out.stdout).unwrap();
    let out = run(&[
        "verify",
        "--sdk-app-id",
        "7",
        "--key",
        "k",
        "--user",
        "carol",
        "--now",
        "100",
        sig.trim(),
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["private_map_key"]["room"], "lobby");
    assert_eq!(v["private_map_key"]["privileges"], 42);
    assert_eq!(v["private_map_key"]["expires_at"], 400);
    assert!(v.get("userbuf_text").is_none(), "{v}");
}

#[test]
fn usage_errors_exit_2() {
    // Missing key (no flag, no environment variable): a usage error that
    // names both ways to give it.
    let out = run(&["gen", "--sdk-app-id", "7", "--user", "a"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--key") && err.contains("CALLING_SECRET_KEY"),
        "{err}"
    );
    // Not a number.
    let out = run(&["gen", "--sdk-app-id", "seven", "--key", "k", "--user", "a"]);
    assert_eq!(out.status.code(), Some(2));
    // Missing SIG.
    let out = run(&["verify", "--sdk-app-id", "7", "--key", "k", "--user", "a"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // Out-of-range PrivateMapKey app id.
    let out = run(&[
        "privmap",
        "--sdk-app-id",
        "99999999999",
        "--key",
        "k",
        "--user",
        "a",
        "--room-id",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_explains_the_flags() {
    let out = run(&["verify", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--sdk-app-id",
        "--key",
        "CALLING_SECRET_KEY",
        "CALLING_SDK_APP_ID",
        "--user",
        "--now",
        "<SIG>",
    ] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
    let out = run(&["gen", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["--expire", "--userbuf"] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
}
