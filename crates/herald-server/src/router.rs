//! Routing: the one place that turns a request head into a [`Route`].
//!
//! The connection entry ([`crate::entry`]) routes a connection's first request from its raw head
//! (a transport may take the socket over from there) and every request hyper serves after it.
//! A new endpoint is one variant here and one match arm in the entry.

use crate::config::Config;
use crate::transport::stream::StreamKind;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A WebSocket upgrade on the WebSocket path: the WebSocket transport takes the socket.
    WebSocket,
    /// A WebSocket upgrade on the test-only echo path
    /// (`websocket.echo_endpoint_for_conformance_tests`): the echo transport takes the socket.
    WebSocketEcho,
    /// The WebSocket path without an upgrade, or with one that was not the connection's first
    /// request (hyper owns the connection by then): 400.
    WebSocketNotFirst,
    /// A WebSocket upgrade on `uni_websocket.handler_prefix` (when enabled).
    UniWebSocket,
    /// An SSE or HTTP-streaming endpoint (when enabled): the streaming transport takes the
    /// socket (from hyper too, when it is not the connection's first request).
    Stream(StreamKind),
    /// `uni_long_poll.handler_prefix` (when enabled): served on the raw socket, request after
    /// request (`transport::long_poll::raw`).
    LongPoll,
    /// `emulation.handler_prefix` (when `sse` or `http_stream` is enabled).
    Emulation,
    /// `GET /health` (any HTTP method).
    Health,
    /// The Prometheus text exposition (any HTTP method).
    Metrics,
    /// `/api/<method>`: the server API, with the method name as written in the path.
    Api(&'a str),
    /// Under a `gateway.routes` prefix: the route's index (longest prefix).
    Gateway(usize),
    /// Under `admin.handler_prefix` (when the console is on): the path after the prefix.
    Admin(&'a str),
    NotFound,
}

/// Routes a request by its path (without the query) and whether it asks for an upgrade.
///
/// `upgrade` is only honoured for a connection's first request: later requests on a
/// keep-alive connection are routed with `false`.
pub fn route<'a>(config: &Config, path: &'a str, upgrade: bool) -> Route<'a> {
    route_with(config, &|p| crate::edge::gateway::match_route(&config.gateway.routes, p), path, upgrade)
}

/// [`route`] with the gateway routes in force (a reload may have replaced those of `config`):
/// a `Route::Gateway` index is one of `gateway`'s.
pub fn route_live<'a>(
    config: &Config,
    gateway: &crate::edge::gateway::Gateway,
    path: &'a str,
    upgrade: bool,
) -> Route<'a> {
    route_with(config, &|p| gateway.matching(p), path, upgrade)
}

fn route_with<'a>(config: &Config, gateway: &dyn Fn(&str) -> Option<usize>, path: &'a str, upgrade: bool) -> Route<'a> {
    let ws = &config.websocket;
    let on_ws_path = !ws.disabled && path == ws.handler_prefix;
    // Checked before the other paths, as the raw-socket transports see the request first.
    if on_ws_path && upgrade {
        return Route::WebSocket;
    }
    let uni_ws = &config.uni_websocket;
    let on_uni_ws_path = uni_ws.enabled && path == uni_ws.handler_prefix;
    if on_uni_ws_path && upgrade {
        return Route::UniWebSocket;
    }
    let echo = &ws.echo_endpoint_for_conformance_tests;
    if upgrade && !echo.is_empty() && path == echo {
        return Route::WebSocketEcho;
    }
    if config.health.enabled && path == config.health.handler_prefix {
        return Route::Health;
    }
    if config.prometheus.enabled && path == config.prometheus.handler_prefix {
        return Route::Metrics;
    }
    if on_ws_path || on_uni_ws_path {
        return Route::WebSocketNotFirst;
    }
    if let Some(kind) = StreamKind::ALL.into_iter().find(|k| k.config(config).enabled && path == k.path(config)) {
        return Route::Stream(kind);
    }
    if config.uni_long_poll.enabled && path == config.uni_long_poll.handler_prefix {
        return Route::LongPoll;
    }
    if (config.sse.enabled || config.http_stream.enabled) && path == config.emulation.handler_prefix {
        return Route::Emulation;
    }
    let api = &config.http_api;
    if !api.disabled
        && let Some(method) =
            path.strip_prefix(api.handler_prefix.trim_end_matches('/')).and_then(|m| m.strip_prefix('/'))
    {
        return Route::Api(method);
    }
    // Start-up refuses a route prefix that could take one of the paths above.
    if let Some(index) = gateway(path) {
        return Route::Gateway(index);
    }
    // Last: with the default empty prefix the console owns every path nothing else took.
    if let Some(rest) = crate::admin::subpath(config, path) {
        return Route::Admin(rest);
    }
    Route::NotFound
}

/// The listening socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `http_server.port`.
    Public,
    /// `http_server.internal_port`.
    Internal,
}

/// `route` as seen from `listener`: with an internal port configured, the server API, metrics,
/// health and admin endpoints answer only there, and client endpoints only on the public port
/// (Centrifugo v6); the other side answers 404. Without one, the public port serves everything.
pub fn on_listener<'a>(config: &Config, route: Route<'a>, listener: Listener) -> Route<'a> {
    use crate::edge::Class;
    let internal = matches!(crate::edge::class(&route), Class::Api | Class::Admin);
    let split = config.http_server.internal_port.is_some();
    match listener {
        Listener::Public if split && internal => Route::NotFound,
        Listener::Internal if !internal => Route::NotFound,
        _ => route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_port_splits_the_endpoints() {
        let mut config = Config::default();
        let ws = config.websocket.handler_prefix.clone();
        fn both<'a>(config: &Config, path: &'a str, upgrade: bool) -> (Route<'a>, Route<'a>) {
            let routed = route(config, path, upgrade);
            (on_listener(config, routed, Listener::Public), on_listener(config, routed, Listener::Internal))
        }
        assert_eq!(both(&config, "/api/info", false).0, Route::Api("info"), "no internal port: all public");
        config.http_server.internal_port = Some(9001);
        assert_eq!(both(&config, "/api/info", false), (Route::NotFound, Route::Api("info")));
        assert_eq!(both(&config, "/metrics", false), (Route::NotFound, Route::Metrics));
        assert_eq!(both(&config, "/health", false), (Route::NotFound, Route::Health));
        assert_eq!(both(&config, &ws, true), (Route::WebSocket, Route::NotFound));
        assert_eq!(both(&config, "/nowhere", false), (Route::NotFound, Route::NotFound));
    }

    #[test]
    fn routes_each_endpoint() {
        let config = Config::default();
        let ws = config.websocket.handler_prefix.as_str();
        assert_eq!(route(&config, ws, true), Route::WebSocket);
        assert_eq!(route(&config, ws, false), Route::WebSocketNotFirst);
        assert_eq!(route(&config, &config.health.handler_prefix, false), Route::Health);
        assert_eq!(route(&config, "/api/publish", false), Route::Api("publish"));
        assert_eq!(route(&config, "/api/", true), Route::Api(""));
        assert_eq!(route(&config, "/api", false), Route::NotFound);
        assert_eq!(route(&config, "/elsewhere", true), Route::NotFound);
        assert_eq!(route(&config, "", true), Route::NotFound, "the echo endpoint is off by default");
    }

    #[test]
    fn echo_endpoint_only_when_set_and_upgrading() {
        let mut config = Config::default();
        config.websocket.echo_endpoint_for_conformance_tests = "/debug/ws-echo".into();
        assert_eq!(route(&config, "/debug/ws-echo", true), Route::WebSocketEcho);
        assert_eq!(route(&config, "/debug/ws-echo", false), Route::NotFound);
        assert_eq!(route(&config, &config.websocket.handler_prefix.clone(), true), Route::WebSocket);
    }

    #[test]
    fn streaming_endpoints_only_when_enabled() {
        let mut config = Config::default();
        for path in ["/connection/sse", "/connection/http_stream", "/emulation", "/connection/uni_sse"] {
            assert_eq!(route(&config, path, false), Route::NotFound, "{path} is off by default");
        }
        assert_eq!(route(&config, "/connection/uni_websocket", true), Route::NotFound);
        config.sse.enabled = true;
        config.uni_http_stream.enabled = true;
        config.uni_http_stream.handler_prefix = "/uni".into();
        config.uni_websocket.enabled = true;
        assert_eq!(route(&config, "/connection/sse", false), Route::Stream(StreamKind::Sse));
        assert_eq!(route(&config, "/emulation", false), Route::Emulation);
        assert_eq!(route(&config, "/uni", false), Route::Stream(StreamKind::UniHttpStream));
        assert_eq!(route(&config, "/connection/uni_http_stream", false), Route::NotFound);
        assert_eq!(route(&config, "/connection/http_stream", false), Route::NotFound);
        assert_eq!(route(&config, "/connection/uni_websocket", true), Route::UniWebSocket);
        assert_eq!(route(&config, "/connection/uni_websocket", false), Route::WebSocketNotFirst);
    }

    #[test]
    fn gateway_routes_come_after_herald_endpoints() {
        let mut config = Config::default();
        let route = |prefix: &str| crate::edge::gateway::RouteConfig { prefix: prefix.into(), ..Default::default() };
        config.gateway.routes = vec![route("/app"), route("/app/orders")];
        assert_eq!(route_of(&config, "/app/x"), Route::Gateway(0));
        assert_eq!(route_of(&config, "/app/orders/1"), Route::Gateway(1));
        assert_eq!(route_of(&config, "/apple"), Route::NotFound);
        assert_eq!(route_of(&config, "/api/publish"), Route::Api("publish"));
    }

    fn route_of<'a>(config: &Config, path: &'a str) -> Route<'a> {
        route(config, path, false)
    }

    #[test]
    fn disabled_endpoints_are_not_found() {
        let mut config = Config::default();
        config.websocket.disabled = true;
        config.http_api.disabled = true;
        let ws = config.websocket.handler_prefix.clone();
        assert_eq!(route(&config, &ws, true), Route::NotFound);
        assert_eq!(route(&config, "/api/publish", false), Route::NotFound);
    }
}
