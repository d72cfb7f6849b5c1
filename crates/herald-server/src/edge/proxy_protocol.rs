//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends before the
//! client's bytes, naming the client's address. Sans-IO: [`parse`] looks at the bytes read so
//! far. Only read from peers in `access.trusted_proxies` when `access.proxy_protocol` is on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;
/// Herald reads at most this much of a version 2 header (addresses and TLVs).
pub const MAX_HEADER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Read more.
    Incomplete,
    /// A header of `len` bytes; `source` is the client's address, `None` for a health check
    /// from the proxy itself (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified family).
    Done { len: usize, source: Option<SocketAddr> },
}

/// Parses the header at the start of `buf`; the error says what is wrong with it.
pub fn parse(buf: &[u8]) -> Result<Parsed, String> {
    let sig = &V2_SIGNATURE[..buf.len().min(12)];
    if !buf.is_empty() && buf.starts_with(sig) {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    if buf.len() < v1.len() {
        return if v1.starts_with(buf) { Ok(Parsed::Incomplete) } else { Err("no PROXY protocol header".into()) };
    }
    if !buf.starts_with(v1) {
        return Err("no PROXY protocol header".into());
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, String> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 header longer than 107 bytes".into())
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| "PROXY v1 header is not ASCII".to_string())?;
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Parsed::Done { len, source: None }),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| format!("PROXY v1: bad source address {src:?}"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(format!("PROXY v1: {src} is not a {family} address"));
            }
            let port: u16 = sport.parse().map_err(|_| format!("PROXY v1: bad source port {sport:?}"))?;
            Ok(Parsed::Done { len, source: Some(SocketAddr::new(ip, port)) })
        }
        _ => Err(format!("PROXY v1: malformed header {line:?}")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, String> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(format!("PROXY v2: unsupported version {}", ver_cmd >> 4));
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Err(format!("PROXY v2: header of {len} bytes is over {MAX_HEADER}"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let addr = &buf[16..len];
    let source = match (ver_cmd & 0x0f, family >> 4) {
        (0, _) => None,
        (1, 0) => None,
        (1, 1) if addr.len() >= 12 => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([addr[8], addr[9]])))
        }
        (1, 2) if addr.len() >= 36 => {
            let octets: [u8; 16] = addr[..16].try_into().expect("16 bytes");
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([addr[32], addr[33]])))
        }
        (1, 1 | 2) => return Err("PROXY v2: address block too short".into()),
        // AF_UNIX: no IP address to use; the proxy's own address stands.
        (1, 3) => None,
        (cmd, fam) => return Err(format!("PROXY v2: unsupported command {cmd} or family {fam}")),
    };
    Ok(Parsed::Done { len, source })
}

/// A version 2 header for `source` (tests and the test tools).
pub fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source, dest) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1_whatever_the_reads() {
        let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 8000\r\nGET / HTTP/1.1\r\n";
        for cut in 0..42 {
            assert_eq!(parse(&header[..cut]), Ok(Parsed::Incomplete), "{cut} bytes");
        }
        assert_eq!(parse(header), Ok(Parsed::Done { len: 42, source: Some(addr("192.0.2.7:51000")) }));
        let v6 = b"PROXY TCP6 2001:db8::5 ::1 4000 8000\r\n";
        assert_eq!(parse(v6), Ok(Parsed::Done { len: v6.len(), source: Some(addr("[2001:db8::5]:4000")) }));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Done { len: 15, source: None }));
    }

    #[test]
    fn version_1_refusals() {
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 2001:db8::5 10.0.0.1 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 10.0.0.1 x 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse(&[b"PROXY ".as_slice(), &[b'a'; 200]].concat()).is_err(), "no CRLF within 107 bytes");
    }

    #[test]
    fn version_2_round_trip_and_local() {
        for (s, d) in [("192.0.2.9:1234", "127.0.0.1:8000"), ("[2001:db8::9]:1234", "[::1]:8000")] {
            let mut h = v2_header(addr(s), addr(d));
            let len = h.len();
            for cut in 0..len {
                assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "{cut} bytes");
            }
            h.extend_from_slice(b"GET /");
            assert_eq!(parse(&h), Ok(Parsed::Done { len, source: Some(addr(s)) }));
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Parsed::Done { len: 16, source: None }));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(parse(&bad).is_err(), "version 3");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).is_err(), "over the size bound");
    }
}
