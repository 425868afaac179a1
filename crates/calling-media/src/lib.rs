//! WebRTC media engine (work in progress).
