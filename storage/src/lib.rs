//! One partition's append-only log (in progress).
