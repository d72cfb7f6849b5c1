//! Reading Herald's Prometheus counters (`GET /metrics`): what the server itself says about a
//! run, e.g. how many clients it disconnected and with which code (a stalled client never sees
//! its close frame, so only the server can count it).

use std::collections::BTreeMap;

use crate::http::HttpConn;
use crate::util::BaseUrl;

/// The disconnect counter Herald keeps, labelled by disconnect code.
pub const DISCONNECTS: &str = "herald_client_disconnects_total";

/// Values of `name{code="…"}` in a Prometheus text exposition, by code.
pub fn by_code(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some(labels) = rest.strip_prefix('{') else { continue };
        let Some((labels, value)) = labels.split_once('}') else { continue };
        let Some(code) = labels.split(',').find_map(|l| l.trim().strip_prefix("code=\"")?.strip_suffix('"')) else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(code.to_owned()).or_default() += v;
        }
    }
    out
}

/// `after - before` per code, leaving out codes that did not move.
pub fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)).max(0.0).round() as u64))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Disconnects by code summed over the servers; `None` when one cannot be read.
pub async fn disconnects(urls: &[BaseUrl]) -> Option<BTreeMap<String, f64>> {
    let mut total = BTreeMap::new();
    for u in urls {
        let mut c = HttpConn::new(u.addr, &u.host, None);
        let r = c.get(&format!("{}/metrics", u.prefix)).await.ok().filter(|r| r.status == 200)?;
        for (k, v) in by_code(&String::from_utf8_lossy(&r.body), DISCONNECTS) {
            *total.entry(k).or_default() += v;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_by_code() {
        let text = "# TYPE herald_client_disconnects_total counter\n\
                    herald_client_disconnects_total{code=\"3008\"} 98\n\
                    herald_client_disconnects_total{code=\"3012\"} 2\n\
                    herald_client_disconnects_total_other{code=\"1\"} 5\n\
                    herald_client_errors_total{code=\"3008\"} 7\n";
        let m = by_code(text, DISCONNECTS);
        assert_eq!(m.len(), 2);
        assert_eq!(m["3008"], 98.0);
        let before = BTreeMap::from([("3008".to_owned(), 90.0), ("3012".to_owned(), 2.0)]);
        assert_eq!(delta(&before, &m), BTreeMap::from([("3008".to_owned(), 8)]));
    }
}
