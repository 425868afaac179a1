//! Wire protocol and client transport (work in progress).
