//! Small helpers: durations, wall-clock time, dates, address parsing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME; the same clock in every process here).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Parses `20s`, `500ms`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (use e.g. 20s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `127.0.0.2-127.0.0.9`, `127.0.0.2,127.0.0.3` or a mix of both.
pub fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("invalid address {a:?}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("invalid address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 1024 {
                return Err(format!("invalid address range {part:?}"));
            }
            out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            out.push(part.parse().map_err(|_| format!("invalid address {part:?}"))?);
        }
    }
    Ok(out)
}

/// The parts of an `http://host:port[/prefix]` URL the bench needs.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    /// Value of the `Host` header (`host:port`).
    pub host: String,
    pub addr: SocketAddr,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

pub fn parse_url(url: &str) -> Result<BaseUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("unsupported URL {url:?} (http://host:port)"))?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let hostport = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {hostport}"))?;
    Ok(BaseUrl { host: hostport, addr, prefix: prefix.to_owned() })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds (UTC).
pub fn utc_datetime(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn ip_lists() {
        let ips = parse_ip_list("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[3], "127.0.0.9".parse::<IpAddr>().unwrap());
        assert!(parse_ip_list("127.0.0.5-127.0.0.2").is_err());
    }

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8000").unwrap();
        assert_eq!(u.host, "127.0.0.1:8000");
        assert_eq!(u.addr.port(), 8000);
        assert_eq!(u.prefix, "");
        let u = parse_url("http://127.0.0.1:8081/x/").unwrap();
        assert_eq!(u.prefix, "/x");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_datetime(1_795_245_000), "2026-11-21T07:10:00Z");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29T00:00:00Z");
    }
}
