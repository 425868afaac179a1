//! Log set-up shared by the softphone and the examples (included with
//! `#[path]`; the quickstart, in the calling crate, has the same few lines).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sends logs to stderr (stdout is the program's own output), filtered by
/// `RUST_LOG` or else [`calling::DEFAULT_LOG_FILTER`], with colour codes
/// only on a terminal and never with `NO_COLOR` set.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(calling::DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}

/// Whether to colour what goes to `stream`: on a terminal, unless
/// `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
pub fn colour(stream: &impl IsTerminal) -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
}
