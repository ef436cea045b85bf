//! Unit tests of `engine.rs`.

use super::measured_span;
use std::time::Duration;

#[test]
fn measured_span_is_the_window_part_before_the_end() {
    let s = Duration::from_secs;
    let win = (s(5), s(35));
    assert_eq!(
        measured_span(win, s(60)),
        Some(s(30)),
        "ran past the window"
    );
    assert_eq!(measured_span(win, s(8)), Some(s(3)), "stopped inside it");
    assert_eq!(measured_span(win, s(4)), None, "stopped during the warm-up");
    assert_eq!(measured_span(win, s(5)), None, "stopped as it opened");
}
