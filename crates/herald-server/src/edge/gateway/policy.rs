//! The policies of a gateway route that look at the request itself: who the caller is
//! (`auth`), and the parameter rules (`methods`, `required_query`, `max_body`,
//! `required_json`). Each refusal is a status and a message naming what is wrong; the caller
//! answers it as JSON `{"error": message}`.

use bytes::Bytes;
use herald_auth::TokenError;
use http::{HeaderMap, Method, StatusCode, header};

use super::{Auth, Route};

/// A refusal: status and message.
pub type Refusal = (StatusCode, String);

/// Who is calling, once authenticated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's user (`None`: anonymous, or a route without JWT auth).
    pub user: Option<String>,
    /// The token's `info` claim (raw JSON), when present.
    pub info: Bytes,
}

/// The JWT of a request: `Authorization: Bearer`, else the route's cookie, else its query
/// parameter.
pub fn token<'a>(route: &Route, headers: &'a HeaderMap, query: &'a str) -> Option<&'a str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once(' '))
        .find(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let cookie = || {
        let name = route.cfg.token_cookie.as_str();
        if name.is_empty() {
            return None;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
    };
    let param = || {
        let name = route.cfg.token_query.as_str();
        if name.is_empty() {
            return None;
        }
        query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    };
    bearer.or_else(cookie).or_else(param).filter(|t| !t.is_empty())
}

/// Verifies the caller of a route with `auth = "jwt"`.
pub fn verify_jwt(
    route: &Route,
    tokens: &herald_auth::TokenVerifier,
    reject_anonymous: bool,
    headers: &HeaderMap,
    query: &str,
    now_unix: i64,
) -> Result<Caller, Refusal> {
    let Some(token) = token(route, headers, query) else {
        let mut places = vec!["Authorization: Bearer <token>".to_owned()];
        if !route.cfg.token_cookie.is_empty() {
            places.push(format!("the {} cookie", route.cfg.token_cookie));
        }
        if !route.cfg.token_query.is_empty() {
            places.push(format!("?{}=", route.cfg.token_query));
        }
        return Err((StatusCode::UNAUTHORIZED, format!("unauthorized: no token (send it in {})", places.join(" or "))));
    };
    match tokens.verify_connect(token, now_unix) {
        Ok(claims) if claims.user.is_empty() && reject_anonymous => Err((
            StatusCode::UNAUTHORIZED,
            "unauthorized: a token without a user (client.disallow_anonymous_connection_tokens)".into(),
        )),
        Ok(claims) => Ok(Caller { user: Some(claims.user).filter(|u| !u.is_empty()), info: claims.info }),
        Err(TokenError::Expired) => Err((StatusCode::UNAUTHORIZED, "unauthorized: token expired".into())),
        Err(TokenError::NotYetValid) => Err((StatusCode::UNAUTHORIZED, "unauthorized: token not yet valid".into())),
        Err(TokenError::Invalid(why)) => Err((StatusCode::UNAUTHORIZED, format!("unauthorized: invalid token: {why}"))),
    }
}

/// `methods`: 405 for another method (the caller adds `Allow`).
pub fn check_method(route: &Route, method: &Method) -> Result<(), Refusal> {
    if route.methods.is_empty() || route.methods.contains(method) {
        return Ok(());
    }
    Err((StatusCode::METHOD_NOT_ALLOWED, format!("method {method} not allowed here: use {}", allowed(route))))
}

/// The `Allow` header value of a route with `methods`.
pub fn allowed(route: &Route) -> String {
    route.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
}

/// `required_query`: 400 naming the first parameter missing.
pub fn check_query(route: &Route, query: &str) -> Result<(), Refusal> {
    for name in &route.cfg.required_query {
        let present = query.split('&').any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == name);
        if !present {
            return Err((StatusCode::BAD_REQUEST, format!("missing query parameter {name:?}")));
        }
    }
    Ok(())
}

/// `max_body` against a declared `Content-Length` (a body without one is counted as it streams).
pub fn check_length(route: &Route, headers: &HeaderMap) -> Result<(), Refusal> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > route.cfg.max_body as u64 => Err(too_large(route)),
        _ => Ok(()),
    }
}

pub fn too_large(route: &Route) -> Refusal {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("request body too large (the limit is {} bytes)", route.cfg.max_body))
}

/// `required_json`: the body is a JSON object with every field; 400 naming what is wrong.
pub fn check_json(route: &Route, body: &[u8]) -> Result<(), Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("the body must be a JSON object: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err((StatusCode::BAD_REQUEST, "the body must be a JSON object".into()));
    };
    match route.cfg.required_json.iter().find(|f| !object.contains_key(f.as_str())) {
        Some(missing) => Err((StatusCode::BAD_REQUEST, format!("missing JSON field {missing:?}"))),
        None => Ok(()),
    }
}

/// Whether the route authenticates with the server API key.
pub fn uses_api_key(route: &Route) -> bool {
    route.auth == Auth::ApiKey
}
