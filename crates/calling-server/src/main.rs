//! The calling signaling server (work in progress).

fn main() {}
