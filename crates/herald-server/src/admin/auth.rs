//! The console's login without I/O: session cookies and CSRF tokens signed with
//! `admin.secret`, the password check, and the per-address limit on failed logins.
//!
//! A session is stateless: the cookie holds its expiry and a random nonce, signed with
//! HMAC-SHA256. The CSRF token is a second HMAC of the nonce, so it is bound to the session
//! and needs no server-side store. Logging out clears the cookie; a copied cookie stays valid
//! until it expires (keep `admin.session_ttl` short where that matters).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The session cookie's name.
pub const COOKIE: &str = "herald_admin_session";

/// Signs and checks sessions.
pub struct Keys {
    key: hmac::Key,
    password: String,
}

/// A valid session: its nonce (for the CSRF token) and when it expires (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub nonce: String,
    pub expires_ms: i64,
}

impl Keys {
    /// `secret`: `admin.secret` (with `admin.insecure` and no secret, random bytes).
    pub fn new(secret: &[u8], password: &str) -> Self {
        Keys { key: hmac::Key::new(hmac::HMAC_SHA256, secret), password: password.to_owned() }
    }

    fn sign(&self, parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, parts.join("|").as_bytes()).as_ref())
    }

    /// Whether `given` is the password, without an early exit on the first differing byte.
    pub fn password_matches(&self, given: &str) -> bool {
        // Both sides through the HMAC: equal lengths, and the comparison leaks nothing useful.
        let a = hmac::sign(&self.key, given.as_bytes());
        let b = hmac::sign(&self.key, self.password.as_bytes());
        !self.password.is_empty() && constant_eq(a.as_ref(), b.as_ref())
    }

    /// A new session cookie value expiring at `expires_ms`, with a random `nonce`.
    pub fn issue(&self, nonce: &str, expires_ms: i64) -> String {
        let exp = expires_ms.to_string();
        format!("{exp}.{nonce}.{}", self.sign(&["session", &exp, nonce]))
    }

    /// The session a cookie value stands for at `now_ms`, or why it does not.
    pub fn verify(&self, cookie: &str, now_ms: i64) -> Result<Session, &'static str> {
        let mut parts = cookie.splitn(3, '.');
        let (Some(exp), Some(nonce), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("malformed session cookie");
        };
        if !constant_eq(self.sign(&["session", exp, nonce]).as_bytes(), sig.as_bytes()) {
            return Err("invalid session cookie");
        }
        let expires_ms: i64 = exp.parse().map_err(|_| "malformed session cookie")?;
        if expires_ms <= now_ms {
            return Err("session expired: log in again");
        }
        Ok(Session { nonce: nonce.to_owned(), expires_ms })
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &Session) -> String {
        self.sign(&["csrf", &session.nonce])
    }

    /// Whether `token` is the CSRF token of `session`.
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        constant_eq(self.csrf(session).as_bytes(), token.as_bytes())
    }
}

/// Compares without an early exit.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Most addresses remembered by [`Failures`]: past it, the oldest windows are forgotten first.
const MAX_ADDRESSES: usize = 10_000;
const WINDOW_MS: i64 = 60_000;

/// Failed logins per client address in a one-minute window.
#[derive(Default)]
pub struct Failures {
    by_address: HashMap<IpAddr, (i64, u32)>,
}

impl Failures {
    /// Whether `ip` may try to log in at `now_ms` (under `limit` failures this minute).
    pub fn allowed(&self, ip: IpAddr, limit: u32, now_ms: i64) -> bool {
        match self.by_address.get(&ip) {
            Some((start, count)) if now_ms - start < WINDOW_MS => *count < limit,
            _ => true,
        }
    }

    /// Counts a failed login of `ip` at `now_ms`.
    pub fn failed(&mut self, ip: IpAddr, now_ms: i64) {
        if self.by_address.len() >= MAX_ADDRESSES && !self.by_address.contains_key(&ip) {
            self.by_address.retain(|_, (start, _)| now_ms - *start < WINDOW_MS);
            if self.by_address.len() >= MAX_ADDRESSES {
                // Still full of live windows: forget the oldest one.
                if let Some(oldest) = self.by_address.iter().min_by_key(|(_, (s, _))| *s).map(|(ip, _)| *ip) {
                    self.by_address.remove(&oldest);
                }
            }
        }
        let entry = self.by_address.entry(ip).or_insert((now_ms, 0));
        if now_ms - entry.0 >= WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
    }

    /// A successful login clears the address's failures.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.by_address.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_verify_expire_and_refuse_tampering() {
        let keys = Keys::new(b"secret", "pw");
        let cookie = keys.issue("abc", 10_000);
        let session = keys.verify(&cookie, 9_999).unwrap();
        assert_eq!(session, Session { nonce: "abc".into(), expires_ms: 10_000 });
        assert_eq!(keys.verify(&cookie, 10_000), Err("session expired: log in again"));
        let longer = cookie.replacen("10000", "99999", 1);
        assert_eq!(keys.verify(&longer, 0), Err("invalid session cookie"), "the expiry is signed");
        assert_eq!(keys.verify("garbage", 0), Err("malformed session cookie"));
        let other = Keys::new(b"other", "pw");
        assert_eq!(other.verify(&cookie, 0), Err("invalid session cookie"));
    }

    #[test]
    fn csrf_token_is_bound_to_the_session() {
        let keys = Keys::new(b"secret", "pw");
        let a = keys.verify(&keys.issue("a", 10), 0).unwrap();
        let b = keys.verify(&keys.issue("b", 10), 0).unwrap();
        assert!(keys.csrf_matches(&a, &keys.csrf(&a)));
        assert!(!keys.csrf_matches(&a, &keys.csrf(&b)));
        assert!(!keys.csrf_matches(&a, ""));
    }

    #[test]
    fn password_check() {
        let keys = Keys::new(b"secret", "correct horse");
        assert!(keys.password_matches("correct horse"));
        assert!(!keys.password_matches("correct hors"));
        assert!(!Keys::new(b"s", "").password_matches(""), "an empty password never matches");
    }

    #[test]
    fn cookie_header_parsing() {
        assert_eq!(cookie("a=1; herald_admin_session=x.y.z; b=2", COOKIE), Some("x.y.z"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }

    #[test]
    fn failures_are_limited_per_address_and_minute() {
        let mut f = Failures::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.allowed(ip, 3, 0));
            f.failed(ip, 0);
        }
        assert!(!f.allowed(ip, 3, 59_999));
        assert!(f.allowed(other, 3, 0));
        assert!(f.allowed(ip, 3, 60_000), "a new minute");
        f.failed(ip, 60_000);
        f.succeeded(ip);
        assert!(f.allowed(ip, 1, 60_001));
    }

    #[test]
    fn failure_table_is_bounded() {
        let mut f = Failures::default();
        for i in 0..(MAX_ADDRESSES as u32 + 5) {
            f.failed(IpAddr::from(i.to_be_bytes()), i as i64);
        }
        assert!(f.by_address.len() <= MAX_ADDRESSES);
    }
}
