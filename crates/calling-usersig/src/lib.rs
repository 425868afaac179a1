//! TLS-Sig-API v2 compatible UserSig (work in progress).
