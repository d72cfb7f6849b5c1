//! A long-poll request without I/O: a connect (POST body, or `cf_connect` on GET) or a poll
//! (`session` and `seq` query parameters, on GET or POST).

use herald_proto::{Command, ConnectRequest};

use crate::transport::stream::request::{HttpMethod, Refused, StreamHead};

/// What a long-poll request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PollRequest {
    /// Open a session: the connect command (id 1).
    Connect(Vec<Command>),
    /// Take the items of `session` from number `seq` on.
    Poll { session: String, seq: u64 },
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused { status, message: message.into() }
}

/// Reads a request that is not a preflight. `body` is the POST body (already bounded by
/// `limit`), empty for GET.
pub fn parse(head: &StreamHead, body: &[u8], limit: usize) -> Result<PollRequest, Refused> {
    if !matches!(head.method, HttpMethod::Get | HttpMethod::Post) {
        return Err(refused(405, "method not allowed (allowed: GET, POST, OPTIONS)"));
    }
    if let Some(session) = head.query_param("session") {
        let session = session
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused(400, "malformed session parameter"))?;
        let seq = match head.query_param("seq") {
            None => return Err(refused(400, "missing seq parameter (the number of items received so far)")),
            Some(v) => v
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| refused(400, "malformed seq parameter (a non-negative integer)"))?,
        };
        return Ok(PollRequest::Poll { session, seq });
    }
    let data = match head.method {
        HttpMethod::Post if body.is_empty() => return Err(refused(400, "missing request body (a connect request)")),
        HttpMethod::Post => body.to_vec(),
        _ => match head.query_param("cf_connect") {
            None => return Err(refused(400, "missing cf_connect or session query parameter")),
            Some(Err(())) => return Err(refused(400, "cf_connect is not valid percent-encoding")),
            Some(Ok(v)) if v.len() > limit => return Err(refused(413, "cf_connect too large")),
            Some(Ok(v)) => v,
        },
    };
    let req: ConnectRequest =
        serde_json::from_slice(&data).map_err(|e| refused(400, format!("malformed connect request: {e}")))?;
    Ok(PollRequest::Connect(vec![Command { id: 1, connect: Some(req), ..Default::default() }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str) -> StreamHead {
        StreamHead::new(method, path, std::iter::empty()).unwrap()
    }

    #[test]
    fn polls_and_connects() {
        assert_eq!(
            parse(&head("GET", "/lp?session=abc&seq=7"), b"", 1024),
            Ok(PollRequest::Poll { session: "abc".into(), seq: 7 })
        );
        let connect = parse(&head("POST", "/lp"), br#"{"token":"t"}"#, 1024).unwrap();
        let PollRequest::Connect(cmds) = connect else { panic!("not a connect") };
        assert_eq!(cmds[0].connect.as_ref().map(|c| c.token.as_str()), Some("t"));
        let by_query = parse(&head("GET", "/lp?cf_connect=%7B%22token%22%3A%22t%22%7D"), b"", 1024);
        assert!(matches!(by_query, Ok(PollRequest::Connect(_))));
    }

    #[test]
    fn bad_requests_are_named() {
        let status = |m: &str, p: &str, b: &[u8]| parse(&head(m, p), b, 16).unwrap_err();
        assert_eq!(status("GET", "/lp?session=abc", b"").status, 400);
        assert!(status("GET", "/lp?session=abc&seq=-1", b"").message.contains("seq"));
        assert!(status("GET", "/lp?session=&seq=1", b"").message.contains("session"));
        assert_eq!(status("GET", "/lp", b"").status, 400);
        assert_eq!(status("POST", "/lp", b"").status, 400);
        assert!(status("POST", "/lp", b"{").message.starts_with("malformed connect request"));
        assert_eq!(status("GET", "/lp?cf_connect=%7B%22token%22%3A%22tttttttttttttt%22%7D", b"").status, 413);
        assert_eq!(status("PUT", "/lp", b"").status, 405);
    }
}
