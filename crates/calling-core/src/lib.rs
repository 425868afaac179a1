//! Sans-IO call state machine (work in progress).
