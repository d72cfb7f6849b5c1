//! `herald reload`: asks a running node to load its configuration again, through its server
//! API method `reload` (plain HTTP/1.1 over TCP; the answer's JSON is printed). The address and
//! the API key come from the same configuration the node was started with (file, `HERALD_*`
//! variables), or from `--url` and `--api-key`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// How long the node may take to connect, and to answer (it reads its file and rebuilds the
/// token keys and channel rules).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// `http://HOST:PORT/api/reload` for a node running `config` (the internal port when it has one).
pub fn url_of(config: &Config) -> Result<String, String> {
    if config.http_server.tls.enabled {
        return Err("the node serves its API over TLS, which `herald reload` does not speak: send SIGHUP, \
                    or POST to its /api/reload with an HTTPS client"
            .into());
    }
    let s = &config.http_server;
    let (address, port) = match s.internal_port {
        Some(port) if port != 0 => (if s.internal_address.is_empty() { &s.address } else { &s.internal_address }, port),
        _ => (&s.address, s.port),
    };
    let host = match address.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        a if a.contains(':') => format!("[{a}]"),
        a => a.to_owned(),
    };
    Ok(format!("http://{host}:{port}{}/reload", config.http_api.handler_prefix.trim_end_matches('/')))
}

/// Sends the call; the answer's `result`, or what went wrong.
pub fn request(url: &str, api_key: &str) -> Result<Value, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("--url {url:?}: only http:// URLs are supported"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = if path.trim_matches('/').is_empty() { "/api/reload".to_owned() } else { format!("/{path}") };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("--url {url:?}: {e} (write HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: the host has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nX-API-Key: {api_key}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).map_err(|e| format!("{addr}: no answer: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{url}: HTTP {status}: {}", body.trim()));
    }
    let json: Value = serde_json::from_str(body.trim()).map_err(|e| format!("{url}: the answer is not JSON: {e}"))?;
    if let Some(error) = json.get("error") {
        return Err(format!("{url}: {error}"));
    }
    json.get("result").cloned().ok_or_else(|| format!("{url}: the answer has no result: {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_follows_the_ports_and_the_prefix() {
        let mut c = Config::default();
        assert_eq!(url_of(&c).unwrap(), format!("http://127.0.0.1:{}/api/reload", c.http_server.port));
        c.http_server.address = "127.0.0.2".into();
        c.http_server.internal_port = Some(9100);
        c.http_api.handler_prefix = "/ops/".into();
        assert_eq!(url_of(&c).unwrap(), "http://127.0.0.2:9100/ops/reload");
        c.http_server.internal_address = "::1".into();
        assert_eq!(url_of(&c).unwrap(), "http://[::1]:9100/ops/reload");
        c.http_server.tls.enabled = true;
        assert!(url_of(&c).unwrap_err().contains("TLS"));
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        assert!(request("https://127.0.0.1:1/api/reload", "k").unwrap_err().contains("only http://"));
    }
}
