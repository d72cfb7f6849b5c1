//! Histograms (HdrHistogram in microseconds) and how they travel between processes.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};

/// Highest latency recorded: 10 minutes, in microseconds (larger values saturate).
const MAX_US: u64 = 600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// HdrHistogram V2 serialization, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).expect("serialize into a Vec");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("histogram base64: {e}"))?;
    let h: Histogram<u64> =
        Deserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("histogram: {e:?}"))?;
    Ok(h)
}

/// Adds `other` into `into` (same bounds by construction).
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    let _ = into.add(other);
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// `{count, min_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms}` (null values when empty).
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "min_ms": null, "p50_ms": null, "p90_ms": null, "p99_ms": null,
                      "p999_ms": null, "max_ms": null, "mean_ms": null});
    }
    json!({
        "count": h.len(),
        "min_ms": ms(h.min()),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

/// One-line human form of a [`summary`].
pub fn human(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    format!(
        "n={} p50={}ms p99={}ms p99.9={}ms max={}ms",
        v["count"].as_u64().unwrap_or(0),
        f("p50_ms"),
        f("p99_ms"),
        f("p999_ms"),
        f("max_ms")
    )
}

/// Per-publication delivery aggregate (publish → receive, microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PubAgg {
    pub min_us: u64,
    pub max_us: u64,
    pub count: u64,
}

impl PubAgg {
    pub fn add(&mut self, us: u64) {
        if self.count == 0 || us < self.min_us {
            self.min_us = us;
        }
        self.max_us = self.max_us.max(us);
        self.count += 1;
    }

    pub fn merge(&mut self, o: &PubAgg) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 || o.min_us < self.min_us {
            self.min_us = o.min_us;
        }
        self.max_us = self.max_us.max(o.max_us);
        self.count += o.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_and_merge() {
        let mut a = new_hist();
        for v in 1..=1000 {
            record(&mut a, v);
        }
        let b = decode(&encode(&a)).unwrap();
        assert_eq!(b.len(), 1000);
        let mut c = new_hist();
        merge(&mut c, &b);
        merge(&mut c, &a);
        assert_eq!(c.len(), 2000);
        let s = summary(&c);
        assert_eq!(s["count"], 2000);
        assert!((s["p50_ms"].as_f64().unwrap() - 0.5).abs() < 0.01);
        record(&mut c, u64::MAX);
        assert_eq!(c.max(), c.highest_equivalent(MAX_US));
    }

    #[test]
    fn pub_aggregates() {
        let mut p = PubAgg::default();
        p.add(5);
        p.add(3);
        p.add(9);
        assert_eq!(p, PubAgg { min_us: 3, max_us: 9, count: 3 });
        let mut q = PubAgg::default();
        q.merge(&p);
        q.merge(&PubAgg { min_us: 1, max_us: 2, count: 1 });
        assert_eq!(q, PubAgg { min_us: 1, max_us: 9, count: 4 });
    }
}
