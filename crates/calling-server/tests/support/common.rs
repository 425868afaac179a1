//! What the test support of every crate shares: the loud banner of a
//! test whose prerequisites are missing, and the log of a child process.
//! Included by path (`#[path]`) where it is needed.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// What a test does when something it needs is not installed: under CI
/// (`CI` set) it fails, so CI cannot pass without having run it;
/// elsewhere it prints a loud SKIPPED banner straight to stderr (libtest
/// captures `eprintln!` of passing tests) and returns `Err` for the test to
/// return early. `kind` names the family ("browser test"), `what` the
/// missing pieces, `install` the words after "Run scripts/setup.sh".
pub fn missing(kind: &str, test: &str, what: &str, install: &str) -> Result<(), ()> {
    if std::env::var_os("CI").is_some() {
        panic!("{kind} {test} cannot run under CI: missing {what}; scripts/setup.sh installs it");
    }
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED {kind} {test}: missing {what}.\n\
         !!! Run scripts/setup.sh {install}. This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    Err(())
}

/// Reads `from` (a child's piped stdout or stderr) on a thread of its own,
/// line by line, into the string returned (for failure messages and
/// checks of what the child logged).
pub fn collect_log(from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}
