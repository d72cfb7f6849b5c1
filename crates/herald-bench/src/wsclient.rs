//! A minimal WebSocket client (RFC 6455) on a raw tokio `TcpStream`, built to be cheap:
//! the opening handshake is written by hand, reads go into one buffer shared by every connection
//! of the worker (only an incomplete frame is kept per connection), server frames are parsed in
//! place, and the few frames a client sends (commands, pongs, close) are masked into a small
//! temporary buffer and written with `try_write`.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;

use base64::Engine as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Largest server frame accepted (a bench payload is far smaller).
pub const MAX_FRAME: usize = 4 << 20;
/// Read size offered to the kernel, and the least the shared buffer holds.
const READ_CHUNK: usize = 16 * 1024;
const SCRATCH_MIN: usize = 64 * 1024;
/// Largest HTTP response head accepted for the opening handshake.
const MAX_HEAD: usize = 8192;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Why a connection failed or ended; `kind` is a short label for error tallies.
#[derive(Debug, Clone)]
pub struct WsError {
    pub kind: String,
    pub detail: String,
}

impl WsError {
    pub fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        WsError { kind: kind.into(), detail: detail.into() }
    }

    pub fn io(stage: &str, e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => "refused".to_owned(),
            io::ErrorKind::ConnectionReset => "reset".to_owned(),
            io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "no_ports".to_owned(),
            io::ErrorKind::TimedOut => "timeout".to_owned(),
            _ => match e.raw_os_error() {
                Some(libc::EMFILE) | Some(libc::ENFILE) => "fd_limit".to_owned(),
                _ => format!("{stage}_io"),
            },
        };
        WsError::new(kind, format!("{stage}: {e}"))
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.kind, self.detail)
    }
}

/// Opens a TCP connection, optionally from a given local address.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>, zero_linger: bool) -> Result<TcpStream, WsError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| WsError::io("socket", &e))?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| WsError::io("bind", &e))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| WsError::io("connect", &e))?;
    let _ = stream.set_nodelay(true);
    if zero_linger {
        // Close with RST: no TIME_WAIT on either side, so churn does not run out of ports.
        let _ = stream.set_zero_linger();
    }
    Ok(stream)
}

/// A connected WebSocket: the stream plus the bytes of a frame that has not fully arrived.
pub struct WsStream {
    pub stream: TcpStream,
    /// Incomplete frame carried between reads; empty (no allocation) most of the time.
    partial: Vec<u8>,
    /// A fragmented message being assembled (rare: servers here send whole frames).
    frag: Option<Box<(u8, Vec<u8>)>>,
    mask_state: u32,
}

/// What [`WsStream::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// The connection is open.
    Open,
    /// The server closed (close frame with this code, or EOF = `None`).
    Closed(Option<u16>),
}

/// Performs the opening handshake on `stream`.
pub async fn handshake(
    stream: TcpStream,
    host: &str,
    path: &str,
    protocol: Option<&str>,
    seed: u32,
) -> Result<WsStream, WsError> {
    let mut key_bytes = [0u8; 16];
    let mut s = seed | 1;
    for b in &mut key_bytes {
        s = xorshift(s);
        *b = s as u8;
    }
    let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
    let mut req = Vec::with_capacity(256);
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
    );
    req.extend_from_slice(key.as_bytes());
    if let Some(p) = protocol {
        req.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        req.extend_from_slice(p.as_bytes());
    }
    req.extend_from_slice(b"\r\n\r\n");
    write_all(&stream, &req).await.map_err(|e| WsError::io("upgrade_write", &e))?;

    let mut buf = Vec::with_capacity(512);
    let head_len = loop {
        stream.readable().await.map_err(|e| WsError::io("upgrade_read", &e))?;
        if buf.len() >= MAX_HEAD {
            return Err(WsError::new("upgrade_bad", "response head too large"));
        }
        buf.reserve(512);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Err(WsError::new("upgrade_eof", "closed during the opening handshake")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(WsError::io("upgrade_read", &e)),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if code != 101 {
                    return Err(WsError::new(format!("http_{code}"), format!("upgrade answered {code}")));
                }
                let accept = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
                let expected = herald_proto::ws::accept_key(key.as_bytes());
                if accept.map(|h| h.value) != Some(expected.as_bytes()) {
                    return Err(WsError::new("upgrade_bad", "wrong Sec-WebSocket-Accept"));
                }
                break n;
            }
            Err(e) => return Err(WsError::new("upgrade_bad", format!("malformed response: {e}"))),
        }
    };
    let partial = buf[head_len..].to_vec();
    Ok(WsStream { stream, partial, frag: None, mask_state: seed | 1 })
}

fn xorshift(mut x: u32) -> u32 {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

/// Writes all of `data`, waiting for writability when the socket buffer is full.
pub async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends a masked, final client frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    herald_proto::ws::put_client_frame(out, true, opcode, payload, Some(mask));
}

/// One parsed server frame header.
struct Head {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err(WsError::new("ws_protocol", "masked server frame"));
    }
    let (len, ext) = match b1 & 0x7F {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 2),
        127 if buf.len() < 10 => return Ok(None),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX), 8)
        }
        n => (n as usize, 0),
    };
    if len > MAX_FRAME {
        return Err(WsError::new("ws_protocol", format!("frame of {len} bytes")));
    }
    Ok(Some(Head { fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, header_len: 2 + ext, payload_len: len }))
}

impl WsStream {
    /// Wraps a plain TCP stream that carries newline-terminated messages instead of WebSocket
    /// frames (the `floor` measurement): read with [`WsStream::read`], split with
    /// [`WsStream::lines`].
    pub fn raw(stream: TcpStream) -> WsStream {
        WsStream { stream, partial: Vec::new(), frag: None, mask_state: 1 }
    }

    /// Calls `on_message` for every newline-terminated message in `data` (what
    /// [`WsStream::read`] left in the shared buffer), without the newline; an incomplete last
    /// message is kept for the next read.
    pub fn lines(&mut self, data: &[u8], mut on_message: impl FnMut(&[u8])) -> Result<(), WsError> {
        let mut pos = 0;
        while let Some(i) = data[pos..].iter().position(|&b| b == b'\n') {
            on_message(&data[pos..pos + i]);
            pos += i + 1;
        }
        if data.len() - pos > MAX_FRAME {
            return Err(WsError::new("line_too_long", format!("{} bytes without a newline", data.len() - pos)));
        }
        if pos < data.len() {
            self.partial = data[pos..].to_vec();
        }
        Ok(())
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.mask_state = xorshift(self.mask_state);
        self.mask_state.to_ne_bytes()
    }

    /// Masks `payload` into a frame and writes it (waiting if the socket is full).
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        let mask = self.next_mask();
        put_frame(&mut out, opcode, payload, mask);
        write_all(&self.stream, &out).await
    }

    /// Waits until the server sent something and reads it into `scratch`, after the bytes of
    /// an incomplete frame kept from the previous read. Returns how many bytes of `scratch` are
    /// valid and how many of them are new; `Ok(None)` at end of stream.
    ///
    /// The first read goes through `AsyncRead::poll_read`, which tells tokio the socket is
    /// drained when a read comes back short, so the next wait needs no extra `read` that would
    /// only return `WouldBlock` (one syscall per delivery instead of two). The shared buffer is
    /// borrowed only inside each poll, never across a suspension.
    pub async fn read(
        &mut self,
        scratch: &RefCell<Vec<u8>>,
        max_reads: usize,
    ) -> Result<Option<(usize, usize)>, WsError> {
        let partial = &self.partial;
        let stream = &mut self.stream;
        let first = std::future::poll_fn(|cx| {
            let mut buf = scratch.borrow_mut();
            let start = partial.len();
            let want = (start + READ_CHUNK).max(SCRATCH_MIN);
            if buf.len() < want {
                buf.resize(want, 0);
            }
            buf[..start].copy_from_slice(partial);
            let mut rb = ReadBuf::new(&mut buf[start..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok((start, rb.filled().len()))),
            }
        })
        .await;
        let (start, n) = first.map_err(|e| WsError::io("read", &e))?;
        self.partial = Vec::new();
        if n == 0 {
            return Ok(None);
        }
        let mut len = start + n;
        let mut buf = scratch.borrow_mut();
        // A full buffer may mean more is waiting: read on (bounded), growing the buffer.
        for _ in 1..max_reads {
            if len < buf.len() {
                break;
            }
            let grown = buf.len() + READ_CHUNK;
            buf.resize(grown, 0);
            match self.stream.try_read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(WsError::io("read", &e)),
            }
        }
        Ok(Some((len, len - start)))
    }

    /// Parses the frames in `data` (what [`WsStream::read`] left in the shared buffer) and calls
    /// `on_message(opcode, payload, replies)` for every complete text/binary message. Server
    /// pings are answered with pongs and a close frame is echoed; `on_message` may queue
    /// `(opcode, payload)` replies (protocol-level pongs). An incomplete last frame is kept for
    /// the next read.
    pub fn parse(
        &mut self,
        data: &[u8],
        mut on_message: impl FnMut(u8, &[u8], &mut Vec<(u8, &'static [u8])>),
    ) -> Result<Pump, WsError> {
        let mut replies: Vec<(u8, &'static [u8])> = Vec::new();
        let mut control_out: Vec<u8> = Vec::new();
        let mut pos = 0;
        let mut closed = None;
        while let Some(head) = parse_head(&data[pos..])? {
            let total = head.header_len + head.payload_len;
            if data.len() - pos < total {
                break;
            }
            let payload = &data[pos + head.header_len..pos + total];
            pos += total;
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin && self.frag.is_none() => {
                    on_message(head.opcode, payload, &mut replies)
                }
                OP_TEXT | OP_BINARY if self.frag.is_none() => {
                    self.frag = Some(Box::new((head.opcode, payload.to_vec())));
                }
                OP_CONT if self.frag.is_some() => {
                    let frag = self.frag.as_mut().expect("checked");
                    if frag.1.len() + payload.len() > MAX_FRAME {
                        return Err(WsError::new("ws_protocol", "message too big"));
                    }
                    frag.1.extend_from_slice(payload);
                    if head.fin {
                        let frag = self.frag.take().expect("checked");
                        on_message(frag.0, &frag.1, &mut replies);
                    }
                }
                OP_PING => {
                    let mask = self.next_mask();
                    put_frame(&mut control_out, OP_PONG, payload, mask);
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let mask = self.next_mask();
                    put_frame(&mut control_out, OP_CLOSE, &payload[..payload.len().min(2)], mask);
                    closed = Some(code);
                    break;
                }
                other => return Err(WsError::new("ws_protocol", format!("unexpected opcode {other}"))),
            }
        }
        for (op, payload) in replies {
            let mask = self.next_mask();
            put_frame(&mut control_out, op, payload, mask);
        }
        if !control_out.is_empty() {
            // Small frames into an almost empty socket buffer: a short write is not expected;
            // if it happens the rest is dropped and reported.
            match self.stream.try_write(&control_out) {
                Ok(n) if n == control_out.len() => {}
                Ok(_) | Err(_) if closed.is_some() => {}
                Ok(_) => return Err(WsError::new("write_blocked", "short write of a control frame")),
                Err(e) => return Err(WsError::io("write", &e)),
            }
        }
        if let Some(code) = closed {
            return Ok(Pump::Closed(code));
        }
        if pos < data.len() {
            self.partial = data[pos..].to_vec();
        }
        Ok(Pump::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_and_server_frames_parse() {
        let mut out = Vec::new();
        put_frame(&mut out, OP_TEXT, b"{}", [1, 2, 3, 4]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x82);
        let mut p = out[6..].to_vec();
        herald_proto::ws::unmask(&mut p, [1, 2, 3, 4]);
        assert_eq!(p, b"{}");

        let f = herald_proto::ws::frame(herald_proto::ws::Opcode::Binary, &[7; 300]);
        let h = parse_head(&f).unwrap().unwrap();
        assert_eq!((h.opcode, h.fin, h.header_len, h.payload_len), (OP_BINARY, true, 4, 300));
        assert!(parse_head(&f[..3]).unwrap().is_none());
        assert!(parse_head(&out).is_err(), "masked frames from a server are refused");
    }

    #[test]
    fn raw_lines_keep_an_incomplete_tail() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let mut ws = WsStream::raw(stream);
            let mut got = Vec::new();
            ws.lines(b"a\nbc\nde", |m| got.push(m.to_vec())).unwrap();
            assert_eq!(got, vec![b"a".to_vec(), b"bc".to_vec()]);
            assert_eq!(ws.partial, b"de");
            got.clear();
            ws.lines(b"def\n", |m| got.push(m.to_vec())).unwrap();
            assert_eq!(got, vec![b"def".to_vec()]);
        });
    }
}
