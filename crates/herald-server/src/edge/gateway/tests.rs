use super::*;

fn route(prefix: &str) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        upstreams: vec!["http://127.0.0.1:9".into()],
        auth: "none".into(),
        ..Default::default()
    }
}

fn config(routes: Vec<RouteConfig>) -> Config {
    let mut c = Config::default();
    c.gateway.routes = routes;
    c
}

fn refused(c: &Config) -> (String, String) {
    Gateway::new(c).err().expect("refused")
}

#[test]
fn the_longest_prefix_wins_and_segments_are_whole() {
    let routes = vec![route("/app"), route("/app/orders/"), route("/other")];
    assert_eq!(match_route(&routes, "/app"), Some(0));
    assert_eq!(match_route(&routes, "/app/"), Some(0));
    assert_eq!(match_route(&routes, "/app/users/1"), Some(0));
    assert_eq!(match_route(&routes, "/app/orders"), Some(1));
    assert_eq!(match_route(&routes, "/app/orders/7"), Some(1));
    assert_eq!(match_route(&routes, "/app/ordersx"), Some(0));
    assert_eq!(match_route(&routes, "/apple"), None);
    assert_eq!(match_route(&routes, "/other/x"), Some(2));
    assert_eq!(match_route(&routes, "/"), None);
    assert_eq!(match_route(&[], "/app"), None);
    // The compiled routes (what requests are matched on since routes reload) agree.
    let gateway = Gateway::new(&config(routes.clone())).expect("valid");
    for path in
        ["/app", "/app/", "/app/users/1", "/app/orders", "/app/orders/7", "/app/ordersx", "/apple", "/other/x", "/"]
    {
        assert_eq!(gateway.matching(path), match_route(&routes, path), "{path}");
    }
}

#[test]
fn routes_compile_with_their_upstreams() {
    let mut r = route("/app/");
    r.upstreams = vec!["http://127.0.0.1:9001".into(), "http://backend:80/base/".into()];
    r.methods = vec!["get".into(), "POST".into()];
    let g = Gateway::new(&config(vec![r])).expect("valid");
    let compiled = &g.routes[0];
    assert_eq!((compiled.prefix.as_str(), compiled.label.as_str()), ("/app", "/app"));
    assert_eq!(compiled.upstreams[1].authority.as_str(), "backend:80");
    assert_eq!(compiled.upstreams[1].base, "/base");
    assert_eq!(compiled.upstreams[0].base, "");
    assert_eq!(compiled.methods, [Method::GET, Method::POST]);
}

#[test]
fn prefixes_that_shadow_herald_endpoints_are_refused() {
    for (prefix, names) in [
        ("/", "shadow every"),
        ("/connection", "/connection/websocket"),
        ("/connection/websocket/x", "/connection/websocket"),
        ("/api", "server API"),
        ("/api/custom", "server API"),
        ("/health", "/health"),
        ("/metrics", "/metrics"),
        ("app", "must start with '/'"),
    ] {
        let (key, problem) = refused(&config(vec![route(prefix)]));
        assert_eq!(key, "gateway.routes[0].prefix", "{prefix}");
        assert!(problem.contains(names), "{prefix}: {problem}");
    }
    // Endpoints that are off do not collide; the streaming ones do once enabled.
    let mut c = config(vec![route("/connection/sse")]);
    assert!(Gateway::new(&c).is_ok());
    c.sse.enabled = true;
    assert!(refused(&c).1.contains("sse.handler_prefix"));
    let mut c = config(vec![route("/api")]);
    c.http_api.disabled = true;
    assert!(Gateway::new(&c).is_ok(), "the API is off");
    assert!(Gateway::new(&config(vec![route("/apix")])).is_ok(), "a sibling of /api is fine");
}

#[test]
fn bad_route_settings_name_their_key() {
    type Change = Box<dyn Fn(&mut RouteConfig)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (Box::new(|r| r.upstreams.clear()), "upstreams", "at least one"),
        (Box::new(|r| r.upstreams = vec!["ftp://x:1".into()]), "upstreams[0]", "http[s]://host:port"),
        (Box::new(|r| r.upstreams = vec!["x:1".into()]), "upstreams[0]", "http[s]://host:port"),
        (Box::new(|r| r.tls.enabled = true), "tls.enabled", "needs https:// upstreams"),
        (
            Box::new(|r| {
                r.upstreams = vec!["https://x:1".into()];
                r.tls = ClientTlsOptions { enabled: true, cert_pem: "/no/such.pem".into(), ..Default::default() };
            }),
            "tls.key_pem",
            "needed with cert_pem",
        ),
        (Box::new(|r| r.upstreams = vec!["http://x:1/?a=1".into()]), "upstreams[0]", "no query"),
        (Box::new(|r| r.upstreams = vec!["http://x:1".into(), "http://x:1".into()]), "upstreams", "twice"),
        (Box::new(|r| r.balance = "random".into()), "balance", "round_robin, user_hash"),
        (Box::new(|r| r.auth = "basic".into()), "auth", "none, jwt, api_key"),
        (Box::new(|r| r.methods = vec!["GE T".into()]), "methods", "not an HTTP method"),
        (Box::new(|r| r.timeout = Duration::ZERO), "timeout", "longer than 0s"),
        (Box::new(|r| r.max_body = 0), "max_body", "at least 1"),
        (Box::new(|r| r.required_json = vec![String::new()]), "required_json", "empty"),
        (Box::new(|r| r.health_check.path = "health".into()), "health_check.path", "start with '/'"),
        (
            Box::new(|r| {
                r.health_check.path = "/h".into();
                r.health_check.healthy_threshold = 0;
            }),
            "health_check.healthy_threshold",
            "at least 1",
        ),
        (Box::new(|r| r.auth = "jwt".into()), "auth", "client.token keys"),
        (Box::new(|r| r.auth = "api_key".into()), "auth", "http_api.key"),
    ];
    for (change, field, says) in cases {
        let mut r = route("/app");
        change(&mut r);
        let (key, problem) = refused(&config(vec![r]));
        assert_eq!(key, format!("gateway.routes[0].{field}"), "{problem}");
        assert!(problem.contains(says), "{field}: {problem}");
    }
    let mut https = route("/app");
    https.upstreams = vec!["https://x:1".into(), "http://y:1".into()];
    assert!(Gateway::new(&config(vec![https])).is_ok(), "https:// upstreams are accepted");
    let (key, problem) = refused(&config(vec![route("/a"), route("/a/")]));
    assert_eq!(key, "gateway.routes[1].prefix");
    assert!(problem.contains("already the prefix"), "{problem}");
    let named = |p: &str| RouteConfig { name: "same".into(), ..route(p) };
    assert_eq!(refused(&config(vec![named("/a"), named("/b")])).0, "gateway.routes[1].name");
}

#[test]
fn routes_load_from_toml_and_the_environment() {
    use crate::config_error::FileFormat;
    use crate::loader::{Overrides, load_text};
    let toml = r#"
[http_api]
key = "k"
[[gateway.routes]]
prefix = "/app"
upstreams = ["http://127.0.0.1:9001"]
auth = "api_key"
methods = ["GET"]
[gateway.routes.rate_limit]
user_rate = 5
[gateway.routes.health_check]
path = "/health"
interval = "2s"
"#;
    let loaded =
        load_text(std::path::Path::new("c.toml"), FileFormat::Toml, toml, vec![], &Overrides::default()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let r = &loaded.config.gateway.routes[0];
    assert_eq!((r.rate_limit.user_rate, r.health_check.interval), (5, Duration::from_secs(2)));
    assert_eq!(r.timeout, Duration::from_secs(10), "defaults fill the rest");
    crate::loader::validate(&loaded.config).expect("valid");

    let typo = toml.replace("upstreams =", "upstream =");
    let loaded =
        load_text(std::path::Path::new("c.toml"), FileFormat::Toml, &typo, vec![], &Overrides::default()).unwrap();
    assert!(loaded.warnings.iter().any(|w| w.contains("gateway.routes[0].upstream")), "{:?}", loaded.warnings);

    let env = vec![(
        "HERALD_GATEWAY_ROUTES".to_owned(),
        r#"[{"prefix":"/x","upstreams":["http://127.0.0.1:1"],"auth":"none"}]"#.to_owned(),
    )];
    let loaded = crate::loader::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(loaded.config.gateway.routes[0].prefix, "/x");
    assert_eq!(loaded.config.gateway.routes[0].auth, "none");
}

/// The README's example is a valid configuration that means what the README says.
#[test]
fn the_readme_example_is_valid() {
    use crate::config_error::FileFormat;
    use crate::loader::{Overrides, load_text};
    let readme = include_str!("../../../../../README.md");
    let start = readme.find("```toml\n[client.token]\nhmac_secret_key = \"change-me\"").expect("the example") + 8;
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let loaded = load_text(std::path::Path::new("readme.toml"), FileFormat::Toml, text, vec![], &Overrides::default())
        .expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    crate::loader::validate(&loaded.config).expect("valid");
    let g = Gateway::new(&loaded.config).unwrap();
    let r = &g.routes[0];
    assert_eq!((r.label.as_str(), r.balance, r.auth), ("orders", Balance::UserHash, Auth::Jwt));
    assert_eq!(r.upstreams[1].base, "/v2");
    assert_eq!((r.user_rate.rate, r.address_rate.rate, r.thresholds.active), (20, 50, true));
    assert_eq!(loaded.config.access.gateway.deny, ["192.0.2.0/24"]);
}
