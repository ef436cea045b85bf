//! Unit tests of `cleaner/pass.rs`.

use super::group_segments;

#[test]
fn segments_are_grouped_up_to_the_size_limit_and_the_offset_range() {
    let segs = [
        (0, 10, 400),
        (10, 20, 500),
        (20, 30, 200),
        (30, 40, 900),
        (40, (1 << 31) + 29, 1),
        ((1 << 31) + 29, (1 << 31) + 30, 1),
    ];
    let g: Vec<(i64, i64, usize)> = group_segments(&segs, 1000)
        .iter()
        .map(|g| (g.base, g.end, g.sources.len()))
        .collect();
    assert_eq!(
        g,
        vec![
            (0, 20, 2),
            (20, 30, 1),
            (30, (1 << 31) + 29, 2),
            ((1 << 31) + 29, (1 << 31) + 30, 1)
        ]
    );
}
