//! CIDR networks (`10.0.0.0/8`, `2001:db8::/32`, or a single address) for the address lists and
//! trusted proxies. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack listener
//! reports) match IPv4 networks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv4 address inside an IPv4-mapped IPv6 address, else the address itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses a list from config `key`; the error names the key and the bad entry.
pub fn parse_list(key: &str, items: &[String]) -> Result<Vec<IpNet>, (String, String)> {
    items.iter().map(|s| s.parse().map_err(|e| (key.to_owned(), e))).collect()
}

pub fn any_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!net.contains(ip("2001:db8::1")));
        let one: IpNet = "127.0.0.2".parse().unwrap();
        assert!(one.contains(ip("127.0.0.2")) && !one.contains(ip("127.0.0.3")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains(ip("::1")) && !all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn bad_networks_say_why() {
        assert_eq!("10.0.0.0/33".parse::<IpNet>(), Err("\"10.0.0.0/33\": the prefix length must be 0 to 32".into()));
        assert_eq!("nope".parse::<IpNet>(), Err("\"nope\" is not an IP address or CIDR network".into()));
        assert_eq!("::1/x".parse::<IpNet>(), Err("\"::1/x\": the prefix length must be 0 to 128".into()));
        let err = parse_list("access.client.deny", &["10.0.0.1".into(), "300.0.0.1".into()]).unwrap_err();
        assert_eq!(err.0, "access.client.deny");
    }
}
