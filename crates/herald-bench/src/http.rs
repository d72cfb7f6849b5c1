//! Keep-alive HTTP/1.1 clients on a raw `TcpStream`, for publishing: [`HttpConn`] sends one
//! request at a time (closed loop, like `wrk`); [`Pipeline`] sends on schedule without waiting
//! (open loop). Both read `Content-Length` or chunked responses and reconnect when the server
//! closes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use crate::wsclient::{tcp_connect, write_all};

const MAX_RESPONSE: usize = 1 << 20;

pub struct HttpConn {
    addr: SocketAddr,
    source: Option<IpAddr>,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    req: Vec<u8>,
    /// Connections opened (1 + reconnects).
    pub connects: u64,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl HttpConn {
    pub fn new(addr: SocketAddr, host: &str, source: Option<IpAddr>) -> Self {
        HttpConn {
            addr,
            source,
            host: host.to_owned(),
            stream: None,
            buf: Vec::with_capacity(1024),
            req: Vec::with_capacity(1024),
            connects: 0,
        }
    }

    pub async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let s = tcp_connect(self.addr, self.source, false).await.map_err(|e| other(e.to_string()))?;
            self.stream = Some(s);
            self.buf.clear();
            self.connects += 1;
        }
        Ok(())
    }

    /// Sends `POST path` with `body` and waits for the whole response. `headers` are extra
    /// header lines, each ending in `\r\n`.
    pub async fn post(&mut self, path: &str, headers: &str, body: &[u8]) -> io::Result<Response> {
        self.req.clear();
        put_request(&mut self.req, &self.host, path, headers, body);
        // A kept-alive connection the server has since closed fails on write or on the first
        // read: retry once on a fresh connection.
        let reused = self.stream.is_some();
        match self.round_trip().await {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.round_trip().await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `GET path` and waits for the whole response.
    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.req.clear();
        for part in ["GET ", path, " HTTP/1.1\r\nHost: ", &self.host, "\r\n\r\n"] {
            self.req.extend_from_slice(part.as_bytes());
        }
        self.round_trip().await
    }

    async fn round_trip(&mut self) -> io::Result<Response> {
        self.connect().await?;
        let result = self.exchange().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self) -> io::Result<Response> {
        let stream = self.stream.as_ref().expect("connected");
        write_all(stream, &self.req).await?;
        self.buf.clear();
        loop {
            if self.buf.len() >= MAX_RESPONSE {
                return Err(other("response too large"));
            }
            self.buf.reserve(4096);
            stream.readable().await?;
            match stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(other("connection closed before the response")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            if let Some((resp, keep_alive, _)) = parse_response(&self.buf)? {
                if !keep_alive {
                    self.stream = None;
                }
                return Ok(resp);
            }
        }
    }
}

/// Called with each request's tag and its response (`None`: the connection failed first).
pub type OnResponse<T> = Rc<dyn Fn(T, Option<Response>)>;

struct PipeShared<T> {
    /// Tags of the requests sent and not yet answered, in order.
    queue: RefCell<VecDeque<T>>,
    progress: Notify,
    broken: Cell<bool>,
}

impl<T> PipeShared<T> {
    fn fail_all(&self, on: &OnResponse<T>) {
        self.broken.set(true);
        loop {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(tag) => on(tag, None),
                None => break,
            }
        }
        self.progress.notify_one();
    }
}

/// A keep-alive HTTP/1.1 connection that sends requests without waiting for earlier answers
/// (pipelining): a publisher keeps its schedule however slowly the server answers, the order of
/// requests is kept (one connection), and answers are matched to requests in order by a reader
/// task. At most `max_inflight` requests wait for an answer. Needs a `LocalSet`.
pub struct Pipeline<T: 'static> {
    addr: SocketAddr,
    host: String,
    write: Option<OwnedWriteHalf>,
    shared: Rc<PipeShared<T>>,
    on: OnResponse<T>,
    max_inflight: usize,
    req: Vec<u8>,
    /// Connections opened (1 + reconnects).
    pub connects: u64,
}

impl<T: 'static> Pipeline<T> {
    pub fn new(addr: SocketAddr, host: &str, max_inflight: usize, on: OnResponse<T>) -> Self {
        Pipeline {
            addr,
            host: host.to_owned(),
            write: None,
            shared: Rc::new(PipeShared {
                queue: RefCell::new(VecDeque::new()),
                progress: Notify::new(),
                broken: Cell::new(false),
            }),
            on,
            max_inflight: max_inflight.max(1),
            req: Vec::with_capacity(1024),
            connects: 0,
        }
    }

    /// Requests sent and not answered yet.
    pub fn inflight(&self) -> usize {
        self.shared.queue.borrow().len()
    }

    async fn connect(&mut self) -> io::Result<()> {
        if self.write.is_some() && !self.shared.broken.get() {
            return Ok(());
        }
        self.write = None;
        let stream = tcp_connect(self.addr, None, false).await.map_err(|e| other(e.to_string()))?;
        let (read, write) = stream.into_split();
        // A fresh state: answers still owed on a broken connection are failed by its own reader.
        self.shared = Rc::new(PipeShared {
            queue: RefCell::new(VecDeque::new()),
            progress: Notify::new(),
            broken: Cell::new(false),
        });
        tokio::task::spawn_local(pipe_reader(read, self.shared.clone(), self.on.clone()));
        self.write = Some(write);
        self.connects += 1;
        Ok(())
    }

    /// Sends `POST path` with `body`; `tag` comes back with the answer through the callback.
    pub async fn send(&mut self, path: &str, headers: &str, body: &[u8], tag: T) {
        if let Err(e) = self.connect().await {
            eprintln!("publish connection to {} failed: {e}", self.addr);
            (self.on)(tag, None);
            return;
        }
        loop {
            let wake = self.shared.progress.notified();
            if self.inflight() < self.max_inflight || self.shared.broken.get() {
                break;
            }
            wake.await;
        }
        self.req.clear();
        put_request(&mut self.req, &self.host, path, headers, body);
        self.shared.queue.borrow_mut().push_back(tag);
        let write = self.write.as_mut().expect("connected");
        if write.write_all(&self.req).await.is_err() {
            // The reader fails this request and the other unanswered ones.
            self.shared.broken.set(true);
            self.write = None;
        }
    }

    /// Waits (until `deadline`) for every request sent to be answered.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        loop {
            let wake = self.shared.progress.notified();
            if self.inflight() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, wake).await.is_err() {
                return;
            }
        }
    }
}

async fn pipe_reader<T>(mut read: OwnedReadHalf, shared: Rc<PipeShared<T>>, on: OnResponse<T>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        loop {
            match parse_response(&buf) {
                Ok(Some((resp, keep_alive, used))) => {
                    buf.drain(..used);
                    let tag = shared.queue.borrow_mut().pop_front();
                    if let Some(tag) = tag {
                        on(tag, Some(resp));
                    }
                    shared.progress.notify_one();
                    if !keep_alive {
                        return shared.fail_all(&on);
                    }
                }
                Ok(None) => break,
                Err(_) => return shared.fail_all(&on),
            }
        }
        if buf.len() >= MAX_RESPONSE {
            return shared.fail_all(&on);
        }
        buf.reserve(8192);
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return shared.fail_all(&on),
            Ok(_) => {}
        }
    }
}

fn put_request(req: &mut Vec<u8>, host: &str, path: &str, headers: &str, body: &[u8]) {
    req.extend_from_slice(b"POST ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    req.extend_from_slice(body.len().to_string().as_bytes());
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(headers.as_bytes());
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
}

/// Parses a complete response from the start of `buf`: the response, whether the connection
/// stays open, and the bytes it took. `None` while incomplete.
fn parse_response(buf: &[u8]) -> io::Result<Option<(Response, bool, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(other(format!("malformed response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive = !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let rest = &buf[head_len..];
    if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let Some(eol) = rest[pos..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
            let line = std::str::from_utf8(&rest[pos..pos + eol]).map_err(|_| other("bad chunk size"))?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| other("bad chunk size"))?;
            let start = pos + eol + 2;
            if rest.len() < start + size + 2 {
                return Ok(None);
            }
            if size == 0 {
                // No trailers: the last chunk is followed by an empty line.
                return Ok(Some((Response { status, body }, keep_alive, head_len + start + 2)));
            }
            body.extend_from_slice(&rest[start..start + size]);
            pos = start + size + 2;
        }
    }
    let len = match length {
        Some(l) => l,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err(other("response without Content-Length")),
    };
    if rest.len() < len {
        return Ok(None);
    }
    Ok(Some((Response { status, body: rest[..len].to_vec() }, keep_alive, head_len + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (resp, ka, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((resp.status, &resp.body[..], ka, used), (200, &b"hello"[..], true, r.len()));
        assert!(parse_response(&r[..r.len() - 1]).unwrap().is_none());
        let c = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (resp, ka, used) = parse_response(c).unwrap().unwrap();
        assert_eq!((resp.status, &resp.body[..], ka, used), (201, &b"abcde"[..], false, c.len()));
        assert!(parse_response(&c[..c.len() - 3]).unwrap().is_none());
    }
}
