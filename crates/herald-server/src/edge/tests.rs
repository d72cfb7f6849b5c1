use super::*;

fn edge(f: impl FnOnce(&mut Config)) -> Edge {
    let mut config = Config::default();
    f(&mut config);
    Edge::new(&config).expect("valid")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
    h.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
}

#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    let e = edge(|c| c.access.trusted_proxies = vec!["127.0.0.2".into(), "10.0.0.0/8".into()]);
    let spoofed = [("X-Forwarded-For", "203.0.113.9")];
    assert_eq!(e.client_address(addr("127.0.0.3:5000"), &headers(&spoofed)), addr("127.0.0.3:5000"), "untrusted peer");
    assert_eq!(e.client_address(addr("127.0.0.2:5000"), &headers(&spoofed)), addr("203.0.113.9:5000"));
    // The client may put anything on the left; the last untrusted entry is the one the proxies saw.
    let chain = [("x-forwarded-for", "1.1.1.1, 198.51.100.4"), ("X-Forwarded-For", "10.0.0.7")];
    assert_eq!(e.client_address(addr("127.0.0.2:1"), &headers(&chain)), addr("198.51.100.4:1"));
    let real = [("X-Real-IP", "198.51.100.5")];
    assert_eq!(e.client_address(addr("127.0.0.2:1"), &headers(&real)), addr("198.51.100.5:1"));
    let junk = [("X-Forwarded-For", "not-an-address")];
    assert_eq!(e.client_address(addr("127.0.0.2:1"), &headers(&junk)), addr("127.0.0.2:1"));
    let mapped = [("X-Forwarded-For", "::ffff:192.0.2.1")];
    assert_eq!(e.client_address(addr("127.0.0.2:1"), &headers(&mapped)), addr("192.0.2.1:1"));
    let none = edge(|_| {});
    assert_eq!(none.client_address(addr("127.0.0.2:1"), &headers(&spoofed)), addr("127.0.0.2:1"), "no proxies trusted");
}

#[test]
fn lists_per_endpoint_class() {
    let e = edge(|c| {
        c.access.client.deny = vec!["127.0.0.3".into()];
        c.access.api.allow = vec!["127.0.0.1".into(), "::1".into()];
        c.access.admin.allow = vec!["10.0.0.0/8".into()];
        c.access.admin.deny = vec!["10.9.0.0/16".into()];
    });
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(e.allows(Class::ClientConnect, ip("127.0.0.3")), Err((403, "your address is not allowed here")));
    assert_eq!(e.allows(Class::ClientConnect, ip("127.0.0.2")), Ok(()));
    assert_eq!(e.allows(Class::Api, ip("127.0.0.1")), Ok(()));
    assert!(e.allows(Class::Api, ip("127.0.0.2")).is_err(), "not on the allow list");
    assert_eq!(e.allows(Class::Admin, ip("10.1.2.3")), Ok(()));
    assert!(e.allows(Class::Admin, ip("10.9.2.3")).is_err(), "deny wins over allow");
    assert_eq!(e.allows(Class::Other, ip("127.0.0.3")), Ok(()));
}

#[test]
fn connection_limit_and_rates() {
    let e = edge(|c| c.client.connection_limit = 2);
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(e.admit_connection(ip, 1), Ok(()));
    assert_eq!(e.admit_connection(ip, 2), Err((503, "connection limit reached on this node")));
    let e = edge(|c| {
        c.limits.connection_rate_per_address = 1;
        c.limits.connection_burst_per_address = 2;
    });
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(e.admit_connection(ip, 0), Ok(()));
    assert_eq!(e.admit_connection(ip, 0), Ok(()));
    assert_eq!(e.admit_connection(ip, 0), Err((429, "too many new connections from your address")));
    assert_eq!(e.admit_connection(other, 0), Ok(()));
    let e = edge(|c| c.limits.api_rate = 1);
    assert_eq!(e.admit_api(), Ok(()));
    assert_eq!(e.admit_api(), Err((429, "too many server API requests")));
}

#[test]
fn bad_networks_name_their_key() {
    let mut config = Config::default();
    config.access.api.deny = vec!["10.0.0.0/40".into()];
    let err = Edge::new(&config).err().expect("refused");
    assert_eq!(err.0, "access.api.deny");
}

#[test]
fn ipv6_addresses_are_limited_by_their_64() {
    let e = edge(|c| c.limits.connection_rate_per_address = 1);
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(e.admit_connection(a, 0), Ok(()));
    assert!(e.admit_connection(b, 0).is_err(), "same /64");
    assert_eq!(e.admit_connection(other, 0), Ok(()));
    assert_eq!(rate_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
}
