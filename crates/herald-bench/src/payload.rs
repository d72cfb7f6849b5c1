//! The publication payload `{"s":<seq>,"t":<send time ns>,"p":"xxx…"}` and a byte scanner that
//! finds `s` and `t` in a received frame without parsing it.
//!
//! The payload is embedded byte for byte in every encoding the bench reads: inside Herald's JSON
//! push (`"data":{...}`), inside the Protobuf `bytes data` field, and as the whole Nchan message.

/// Writes the payload for `seq` sent at `t_ns`, padded with `x` to `size` bytes (or the natural
/// size when `size` is smaller).
pub fn write(out: &mut Vec<u8>, seq: u64, t_ns: u64, size: usize) {
    use std::io::Write as _;
    let start = out.len();
    let _ = write!(out, "{{\"s\":{seq},\"t\":{t_ns},\"p\":\"");
    let used = out.len() - start + 2;
    if size > used {
        out.resize(out.len() + (size - used), b'x');
    }
    out.extend_from_slice(b"\"}");
}

const NEEDLE: &[u8] = b"{\"s\":";
const T_KEY: &[u8] = b",\"t\":";

/// Calls `found(seq, t_ns)` for every payload in `frame`, in order; returns how many it found.
pub fn scan(frame: &[u8], mut found: impl FnMut(u64, u64)) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while let Some(i) = find(&frame[pos..], NEEDLE) {
        let mut at = pos + i + NEEDLE.len();
        pos = at;
        let Some((seq, used)) = digits(&frame[at..]) else { continue };
        at += used;
        if !frame[at..].starts_with(T_KEY) {
            continue;
        }
        at += T_KEY.len();
        let Some((t, used)) = digits(&frame[at..]) else { continue };
        pos = at + used;
        found(seq, t);
        n += 1;
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().take(20) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_size_and_scans_back() {
        let mut p = Vec::new();
        write(&mut p, 42, 1_700_000_000_123_456_789, 100);
        assert_eq!(p.len(), 100);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["s"], 42);
        let mut got = Vec::new();
        assert_eq!(scan(&p, |s, t| got.push((s, t))), 1);
        assert_eq!(got, vec![(42, 1_700_000_000_123_456_789)]);

        let mut small = Vec::new();
        write(&mut small, 1, 2, 10);
        assert_eq!(small, b"{\"s\":1,\"t\":2,\"p\":\"\"}");
    }

    #[test]
    fn finds_payloads_inside_pushes() {
        let mut p = Vec::new();
        write(&mut p, 7, 99, 60);
        let mut frame = b"{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":".to_vec();
        frame.extend_from_slice(&p);
        frame.extend_from_slice(b",\"offset\":3}}}\n{\"push\":{\"pub\":{\"data\":");
        let mut p2 = Vec::new();
        write(&mut p2, 8, 100, 0);
        frame.extend_from_slice(&p2);
        frame.extend_from_slice(b"}}}");
        let mut got = Vec::new();
        scan(&frame, |s, t| got.push((s, t)));
        assert_eq!(got, vec![(7, 99), (8, 100)]);
        assert_eq!(scan(b"{}", |_, _| {}), 0);
        assert_eq!(scan(b"{\"s\":x,\"t\":1}{\"s\":3", |_, _| {}), 0);
    }
}
