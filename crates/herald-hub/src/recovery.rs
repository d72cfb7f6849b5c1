//! Deciding whether a subscriber's position can be recovered (protocol reference §5.3).
//!
//! Recovery is all or nothing: either every publication after the client's offset up to the
//! stream top is returned (`recovered: true`) or none is.

use herald_proto::{Publication, StreamPosition};

/// Outcome of a recovery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub recovered: bool,
    pub publications: Vec<Publication>,
}

/// Stream-mode recovery. `after` holds the retained publications with offset > `offset` (at most
/// `max + 1` of them, oldest first) and `top` the current stream position.
pub fn stream(offset: u64, epoch: &str, after: Vec<Publication>, top: &StreamPosition, max: usize) -> Recovery {
    let epoch_ok = epoch.is_empty() || epoch == top.epoch;
    let recovered = epoch_ok
        && match (after.first(), after.last()) {
            (None, _) | (_, None) => top.offset == offset,
            (Some(first), Some(last)) => first.offset == offset + 1 && last.offset == top.offset && after.len() <= max,
        };
    Recovery { recovered, publications: if recovered { after } else { Vec::new() } }
}

/// Cache-mode recovery: only the latest publication matters. `latest` is the newest retained
/// publication, if any.
pub fn cache(offset: u64, epoch: &str, latest: Option<Publication>, top: &StreamPosition) -> Recovery {
    let same_epoch = epoch.is_empty() || epoch == top.epoch;
    if same_epoch && offset >= top.offset {
        return Recovery { recovered: true, publications: Vec::new() };
    }
    match latest {
        Some(p) => Recovery { recovered: p.offset == top.offset, publications: vec![p] },
        None => Recovery { recovered: false, publications: Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubs(range: std::ops::RangeInclusive<u64>) -> Vec<Publication> {
        range.map(|offset| Publication { offset, ..Default::default() }).collect()
    }

    fn top(offset: u64) -> StreamPosition {
        StreamPosition { offset, epoch: "ep".into() }
    }

    #[test]
    fn recovers_contiguous_tail() {
        let r = stream(2, "ep", pubs(3..=5), &top(5), 300);
        assert!(r.recovered);
        assert_eq!(r.publications.len(), 3);
    }

    #[test]
    fn at_top_is_recovered_with_nothing() {
        let r = stream(5, "ep", vec![], &top(5), 300);
        assert!(r.recovered);
        assert!(r.publications.is_empty());
        // Empty epoch in the request is a wildcard.
        assert!(stream(5, "", vec![], &top(5), 300).recovered);
    }

    #[test]
    fn epoch_change_is_unrecoverable() {
        let r = stream(2, "old", pubs(3..=5), &top(5), 300);
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
        // The SDK's "_" sentinel forces failure.
        assert!(!stream(5, "_", vec![], &top(5), 300).recovered);
    }

    #[test]
    fn offset_ahead_of_top_is_unrecoverable() {
        assert!(!stream(9, "ep", vec![], &top(5), 300).recovered);
    }

    #[test]
    fn trimmed_history_is_unrecoverable() {
        // Client at 1, history kept only 4..=5.
        let r = stream(1, "ep", pubs(4..=5), &top(5), 300);
        assert!(!r.recovered);
        assert!(r.publications.is_empty());
    }

    #[test]
    fn too_many_missed_is_unrecoverable() {
        assert!(!stream(0, "ep", pubs(1..=4), &top(4), 3).recovered);
        assert!(stream(0, "ep", pubs(1..=3), &top(3), 3).recovered);
    }

    #[test]
    fn cache_mode_returns_latest_only() {
        let latest = Some(Publication { offset: 9, ..Default::default() });
        let r = cache(3, "ep", latest.clone(), &top(9));
        assert!(r.recovered);
        assert_eq!(r.publications.len(), 1);
        let r = cache(9, "ep", latest, &top(9));
        assert!(r.recovered && r.publications.is_empty());
        assert!(!cache(3, "ep", None, &top(9)).recovered);
    }
}
