//! [`Records`]: the TLS 1.3 record layer of a WebSocket served natively over TLS, I/O-free.
//!
//! rustls runs the handshake; then its traffic keys are taken out of the connection
//! (`ServerConnection::dangerous_extract_secrets`, as kTLS does) and this type seals and opens
//! application-data records itself (RFC 8446 §5.2). The reason is idle memory: a rustls
//! connection keeps a 4 KiB receive buffer and its state for the connection's life, while this
//! keeps two AEAD keys and three buffers that are empty (no allocation) whenever the connection
//! is idle (docs/architecture.md, "TLS: the record layer in the link").
//!
//! What it does not do: key updates. The traffic secrets stay inside rustls, so a client's
//! KeyUpdate cannot be followed; it ends the connection ([`RecordError::KeyUpdate`]). Clients
//! update keys near the cipher's confidentiality limit (millions of records), and a connection
//! that reaches the limit on our side is closed too ([`RecordError::Exhausted`]).

use std::fmt;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

const HEADER: usize = 5;
const TAG: usize = 16;
/// Most plaintext in one record (RFC 8446 §5.1).
const MAX_PLAIN: usize = 16 * 1024;
/// Most ciphertext in one record (RFC 8446 §5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The handshake message type of KeyUpdate.
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;

/// Why a connection's records cannot go on; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// A record that does not authenticate: tampered, or not ours.
    Decrypt,
    /// A record longer than TLS allows.
    TooLarge,
    /// A record type other than encrypted application data, or an inner type not expected now.
    Unexpected(u8),
    /// The peer sent an alert other than close_notify (its description).
    Alert(u8),
    /// The client updated its traffic keys (not supported here; it reconnects).
    KeyUpdate,
    /// The cipher's confidentiality limit was reached.
    Exhausted,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Decrypt => write!(f, "a TLS record did not decrypt"),
            RecordError::TooLarge => write!(f, "a TLS record is longer than allowed"),
            RecordError::Unexpected(t) => write!(f, "unexpected TLS record content type {t}"),
            RecordError::Alert(d) => write!(f, "TLS alert {d} from the peer"),
            RecordError::KeyUpdate => write!(f, "the client updated its TLS keys (not supported: it reconnects)"),
            RecordError::Exhausted => write!(f, "the TLS cipher's confidentiality limit was reached"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One direction's key, static IV and record sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Option<Direction> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return None,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, key.as_ref()).ok()?);
        Some(Direction { key, iv: iv.as_ref().try_into().ok()?, seq })
    }

    /// The per-record nonce: the static IV XOR the sequence number (RFC 8446 §5.3).
    fn nonce(&mut self, limit: u64) -> Result<Nonce, RecordError> {
        if self.seq >= limit {
            return Err(RecordError::Exhausted);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The record layer of one TLS 1.3 connection after its handshake.
pub struct Records {
    tx: Direction,
    rx: Direction,
    /// Records per direction before the keys must not be used any more.
    limit: u64,
    /// Received bytes that are not a whole record yet.
    partial: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet.
    plain: Vec<u8>,
    /// Sealed bytes the socket did not take yet.
    pub(crate) unsent: Vec<u8>,
    /// close_notify received: the client sends nothing more.
    peer_closed: bool,
}

impl Records {
    /// The record layer from a TLS 1.3 connection's extracted secrets; `limit` is the suite's
    /// confidentiality limit. `None` for a cipher this layer does not know.
    pub fn new(secrets: ExtractedSecrets, limit: u64) -> Option<Records> {
        Some(Records {
            tx: Direction::new(secrets.tx)?,
            rx: Direction::new(secrets.rx)?,
            limit,
            partial: Vec::new(),
            plain: Vec::new(),
            unsent: Vec::new(),
            peer_closed: false,
        })
    }

    /// Seals the bytes of `parts`, in order, as application-data records appended to `out`
    /// (full records of 16 KiB, then one for the rest).
    pub fn seal<'p>(
        &mut self,
        parts: impl IntoIterator<Item = &'p [u8]>,
        out: &mut Vec<u8>,
    ) -> Result<usize, RecordError> {
        let mut total = 0;
        let mut open: Option<usize> = None;
        for mut part in parts {
            while !part.is_empty() {
                let start = *open.get_or_insert_with(|| {
                    let start = out.len();
                    out.extend_from_slice(&[0; HEADER]);
                    start
                });
                let room = MAX_PLAIN - (out.len() - start - HEADER);
                let take = room.min(part.len());
                out.extend_from_slice(&part[..take]);
                part = &part[take..];
                total += take;
                if take == room {
                    self.finish(out, start, APPLICATION_DATA)?;
                    open = None;
                }
            }
        }
        if let Some(start) = open {
            self.finish(out, start, APPLICATION_DATA)?;
        }
        Ok(total)
    }

    /// Appends a close_notify alert to `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.extend_from_slice(&[1, CLOSE_NOTIFY]);
        self.finish(out, start, ALERT)
    }

    /// Seals the record whose header starts `out` at `start` and whose plaintext follows it.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize, inner_type: u8) -> Result<(), RecordError> {
        out.push(inner_type);
        let len = out.len() - start - HEADER + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out[start..start + HEADER].copy_from_slice(&header);
        let nonce = self.tx.nonce(self.limit)?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| RecordError::Exhausted)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Takes bytes read from the socket: opens every whole record (with any partial one kept
    /// from before) and keeps a trailing partial one. Decrypted bytes go to `dst` while they
    /// fit, the rest is kept for [`Records::take_plain`]; returns what went to `dst`.
    pub fn receive(&mut self, input: &mut [u8], dst: &mut [u8]) -> Result<usize, RecordError> {
        let mut written = 0;
        if self.partial.is_empty() {
            let used = self.open_records(input, dst, &mut written)?;
            if used < input.len() && !self.peer_closed {
                self.partial.extend_from_slice(&input[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let used = self.open_records(&mut buf, dst, &mut written)?;
            if used < buf.len() && !self.peer_closed {
                buf.drain(..used);
                self.partial = buf;
            }
        }
        Ok(written)
    }

    /// Opens the whole records at the start of `buf` in place; returns the bytes used.
    fn open_records(&mut self, buf: &mut [u8], dst: &mut [u8], written: &mut usize) -> Result<usize, RecordError> {
        let mut at = 0;
        while buf.len() - at >= HEADER && !self.peer_closed {
            let header: [u8; HEADER] = buf[at..at + HEADER].try_into().expect("HEADER bytes");
            if header[0] != APPLICATION_DATA {
                return Err(RecordError::Unexpected(header[0]));
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len > MAX_CIPHER {
                return Err(RecordError::TooLarge);
            }
            if buf.len() - at < HEADER + len {
                break;
            }
            let nonce = self.rx.nonce(self.limit)?;
            let body = &mut buf[at + HEADER..at + HEADER + len];
            let opened = self.rx.key.open_in_place(nonce, Aad::from(header), body).map_err(|_| RecordError::Decrypt)?;
            at += HEADER + len;
            // The inner content type is the last non-zero byte; zeros after it are padding.
            let end = opened.iter().rposition(|&b| b != 0).ok_or(RecordError::Unexpected(0))?;
            let data = &opened[..end];
            match opened[end] {
                APPLICATION_DATA => {
                    let fits = data.len().min(dst.len() - *written);
                    dst[*written..*written + fits].copy_from_slice(&data[..fits]);
                    *written += fits;
                    self.plain.extend_from_slice(&data[fits..]);
                }
                ALERT if data.len() == 2 && data[1] == CLOSE_NOTIFY => self.peer_closed = true,
                ALERT if data.len() == 2 => return Err(RecordError::Alert(data[1])),
                HANDSHAKE if data.first() == Some(&KEY_UPDATE) => return Err(RecordError::KeyUpdate),
                other => return Err(RecordError::Unexpected(other)),
            }
        }
        Ok(at)
    }

    /// Moves kept decrypted bytes into `dst`; returns how many.
    pub fn take_plain(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.plain.len());
        dst[..n].copy_from_slice(&self.plain[..n]);
        if n == self.plain.len() {
            // An idle connection keeps no buffer.
            self.plain = Vec::new();
        } else {
            self.plain.drain(..n);
        }
        n
    }

    /// Decrypted bytes wait for [`Records::take_plain`].
    pub fn has_plain(&self) -> bool {
        !self.plain.is_empty()
    }

    /// close_notify received and every decrypted byte taken: the client's stream ended.
    pub fn finished(&self) -> bool {
        self.peer_closed && self.plain.is_empty()
    }

    /// Drops the first `n` unsent bytes (the socket took them); frees the buffer once empty.
    pub fn sent(&mut self, n: usize) {
        if n >= self.unsent.len() {
            self.unsent = Vec::new();
        } else {
            self.unsent.drain(..n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

    use super::*;

    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A rustls client and server over memory, handshake done; the server's secrets taken out.
    fn connected(suite: Option<rustls::SupportedCipherSuite>) -> (ClientConnection, Records) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        let mut client_provider = (*provider()).clone();
        if let Some(suite) = suite {
            client_provider.cipher_suites = vec![suite];
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert.der().to_vec())).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap()).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                break;
            }
        }
        let limit = match s.negotiated_cipher_suite().unwrap() {
            rustls::SupportedCipherSuite::Tls13(t) => t.common.confidentiality_limit,
            _ => unreachable!("TLS 1.3 only"),
        };
        (c, Records::new(s.dangerous_extract_secrets().unwrap(), limit).unwrap())
    }

    /// What the client sends for `data`, as bytes on the wire.
    fn client_sends(c: &mut ClientConnection, data: &[u8]) -> Vec<u8> {
        c.writer().write_all(data).unwrap();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// What the client reads from `wire`.
    fn client_reads(c: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
        let mut input = wire;
        while !input.is_empty() {
            c.read_tls(&mut input).unwrap();
            c.process_new_packets().unwrap();
        }
        let mut got = Vec::new();
        let _ = c.reader().read_to_end(&mut got);
        got
    }

    #[test]
    fn both_directions_with_every_suite() {
        #[allow(deprecated)]
        use rustls::crypto::ring::cipher_suite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256] {
            let (mut c, mut r) = connected(Some(suite));
            // Client to server: records split anywhere across reads; a small destination keeps
            // the rest for take_plain.
            let mut wire = client_sends(&mut c, b"hello ");
            wire.extend(client_sends(&mut c, &vec![7u8; 40_000]));
            let mut got = Vec::new();
            for piece in wire.chunks_mut(999) {
                let mut dst = [0u8; 100];
                let n = r.receive(piece, &mut dst).unwrap();
                got.extend_from_slice(&dst[..n]);
                while r.has_plain() {
                    let n = r.take_plain(&mut dst);
                    got.extend_from_slice(&dst[..n]);
                }
            }
            let mut expected = b"hello ".to_vec();
            expected.extend(vec![7u8; 40_000]);
            assert_eq!(got, expected, "{suite:?}");
            assert!(r.partial.capacity() == 0 || r.partial.is_empty());
            // Server to client: several parts, more than one record.
            let mut out = Vec::new();
            let big = vec![9u8; 20_000];
            assert_eq!(r.seal([&b"ab"[..], &big, b"cd"], &mut out).unwrap(), 20_004);
            let mut expected = b"ab".to_vec();
            expected.extend(&big);
            expected.extend(b"cd");
            assert_eq!(client_reads(&mut c, &out), expected, "{suite:?}");
            // Then close_notify each way.
            let mut out = Vec::new();
            r.close_notify(&mut out).unwrap();
            c.read_tls(&mut &out[..]).unwrap();
            assert!(c.process_new_packets().unwrap().peer_has_closed());
            c.send_close_notify();
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            assert_eq!(r.receive(&mut wire, &mut [0u8; 10]).unwrap(), 0);
            assert!(r.finished());
        }
    }

    #[test]
    fn tampered_records_and_key_updates_end_the_connection() {
        let (mut c, mut r) = connected(None);
        let mut wire = client_sends(&mut c, b"x");
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(r.receive(&mut wire, &mut [0u8; 10]), Err(RecordError::Decrypt));

        let (mut c, mut r) = connected(None);
        c.refresh_traffic_keys().unwrap();
        let mut wire = client_sends(&mut c, b"x");
        assert_eq!(r.receive(&mut wire, &mut [0u8; 10]), Err(RecordError::KeyUpdate));

        let (_, mut r) = connected(None);
        let mut plain_record = vec![22, 3, 3, 0, 1, 0];
        assert_eq!(r.receive(&mut plain_record, &mut [0u8; 10]), Err(RecordError::Unexpected(22)));
        let mut huge = vec![23, 3, 3, 0xff, 0xff];
        assert_eq!(r.receive(&mut huge, &mut [0u8; 10]), Err(RecordError::TooLarge));
    }

    #[test]
    fn the_confidentiality_limit_closes() {
        let (_, mut r) = connected(None);
        r.limit = r.tx.seq + 1;
        let mut out = Vec::new();
        r.seal([&b"one"[..]], &mut out).unwrap();
        assert_eq!(r.seal([&b"two"[..]], &mut out), Err(RecordError::Exhausted));
    }

    #[test]
    fn idle_state_is_small() {
        let (_, r) = connected(None);
        // Printed for docs/architecture.md; the buffers hold no allocation when idle.
        println!("Records: {} bytes", std::mem::size_of::<Records>());
        assert_eq!((r.partial.capacity(), r.plain.capacity(), r.unsent.capacity()), (0, 0, 0));
    }
}
