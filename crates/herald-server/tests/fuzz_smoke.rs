//! Stable-toolchain smoke run of the herald-server fuzz targets in `/fuzz` (`api_bodies`,
//! `config`, `http_head`, `proxy_header`, `stream_request`, `long_poll_request`, `tls_records`;
//! cargo-fuzz needs nightly).
//!
//! Feeds the shared harnesses (included with `#[path]`) their committed seeds
//! (`fuzz/seeds/<target>/`), mutations of them and random bytes (`fuzz/src/smoke.rs`), from a
//! fixed seed so failures reproduce. A panic fails the test; the failing input is printed first.

use std::path::{Path, PathBuf};

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/server.rs"]
mod harness;

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/smoke.rs"]
mod smoke;

use herald_server::api::methods::parse_request;
use herald_server::config_error::FileFormat;
use herald_server::loader::{self, Overrides};
use smoke::smoke;

/// The committed seeds of `target`: at least a few.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let seeds = smoke::committed_seeds(env!("CARGO_MANIFEST_DIR"), target);
    assert!(seeds.len() >= 3, "{target}: too few seeds");
    seeds
}

#[test]
fn api_body_seeds_parse_or_fail_as_meant() {
    for (name, ok) in
        [("publish", true), ("batch", true), ("history", true), ("wrong_type", false), ("truncated", false)]
    {
        let input =
            std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/api_bodies").join(name))
                .expect("seed");
        let (method, body) = input.split_at(input.iter().position(|&b| b == b'\n').expect("a method line"));
        let parsed = parse_request(std::str::from_utf8(method).unwrap(), &body[1..]);
        assert_eq!(parsed.is_ok(), ok, "{name}: {parsed:?}");
    }
}

#[test]
fn config_seeds_load_or_fail_as_meant() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/config");
    let load = |name: &str, format| {
        let text = std::fs::read_to_string(dir.join(name)).expect("seed");
        let (text, env) = text.split_once("\n%env\n").unwrap_or((&text, ""));
        let env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (format!("HERALD_{}", k.trim_start_matches("HERALD_")), v.to_owned()));
        let text = text.split_once('\n').expect("a format line").1;
        loader::load_text(Path::new(name), format, text, env, &Overrides::default())
    };
    let toml = load("toml", FileFormat::Toml).expect("the TOML seed loads");
    loader::validate(&toml.config).expect("the TOML seed is valid");
    let yaml = load("yaml", FileFormat::Yaml).expect("the YAML seed loads");
    assert_eq!(yaml.warnings.len(), 1, "{:?}", yaml.warnings);
    assert!(load("json", FileFormat::Json).unwrap_err().to_string().contains("http_server.port"));
    assert!(load("env", FileFormat::Json).unwrap_err().to_string().contains("HERALD_"));
    // TLS without a certificate loads, and validation names the missing key.
    let tls = load("tls", FileFormat::Toml).expect("the TLS seed loads");
    assert_eq!(loader::validate(&tls.config).unwrap_err().key(), Some("http_server.tls.cert_pem"));
}

#[test]
fn api_bodies_smoke() {
    smoke("api_bodies", 0x5EED_0101, &seeds("api_bodies"), 3000, 500, &harness::api_bodies);
}

#[test]
fn config_smoke() {
    // Fewer inputs: each one loads the configuration four times and validates it.
    smoke("config", 0x5EED_0102, &seeds("config"), 700, 150, &harness::config);
}

#[test]
fn proxy_header_smoke() {
    smoke("proxy_header", 0x5EED_0105, &seeds("proxy_header"), 3000, 500, &harness::proxy_header);
}

#[test]
fn http_head_smoke() {
    smoke("http_head", 0x5EED_0103, &seeds("http_head"), 3000, 500, &harness::http_head);
}

#[test]
fn long_poll_request_smoke() {
    smoke("long_poll_request", 0x5EED_0105, &seeds("long_poll_request"), 3000, 500, &harness::long_poll_request);
}

#[test]
fn stream_request_smoke() {
    smoke("stream_request", 0x5EED_0104, &seeds("stream_request"), 3000, 500, &harness::stream_request);
}

#[test]
fn tls_records_smoke() {
    smoke("tls_records", 0x5EED_0106, &seeds("tls_records"), 3000, 500, &harness::tls_records);
}
