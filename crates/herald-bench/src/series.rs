//! A server's memory over a long run (`churn --rss-every`): the samples, and the figures a soak
//! is judged by (first, min, max, last, and the least-squares slope over the last minutes, so
//! warm-up growth does not hide a leak or fake one).

use serde_json::{Value, json};

use crate::report::round;

/// One RSS sample: seconds since the measured phase began, resident KiB.
pub type Point = (f64, u64);

/// Least-squares slope of `points` in KiB per minute; `None` with fewer than two distinct times.
pub fn slope_kb_per_min(points: &[Point]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(t, y) in points {
        sxy += (t - mean_t) * (y as f64 - mean_y);
        sxx += (t - mean_t) * (t - mean_t);
    }
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

/// The samples taken in the last `window_s` seconds of the series.
pub fn tail(points: &[Point], window_s: f64) -> &[Point] {
    let Some(&(end, _)) = points.last() else { return points };
    let from = points.iter().position(|p| p.0 >= end - window_s).unwrap_or(points.len());
    &points[from..]
}

/// The JSON figures of a series: samples and first/min/max/last, the slope over the last
/// `fit_window_s` seconds and over the whole series.
pub fn summary(points: &[Point], fit_window_s: f64) -> Value {
    let kb: Vec<u64> = points.iter().map(|p| p.1).collect();
    let fit = tail(points, fit_window_s);
    json!({
        "samples": points.len(),
        "first_kb": kb.first(),
        "min_kb": kb.iter().min(),
        "max_kb": kb.iter().max(),
        "last_kb": kb.last(),
        "fit_window_s": fit_window_s,
        "fit_samples": fit.len(),
        "slope_kb_per_min": slope_kb_per_min(fit).map(|s| round(s, 2)),
        "slope_all_kb_per_min": slope_kb_per_min(points).map(|s| round(s, 2)),
        "series": points.iter().map(|&(t, kb)| json!([round(t, 1), kb])).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_flat_noise() {
        // 100 KiB per 30 s = 200 KiB/min.
        let line: Vec<Point> = (0..10).map(|i| (i as f64 * 30.0, 1000 + i * 100)).collect();
        assert!((slope_kb_per_min(&line).unwrap() - 200.0).abs() < 1e-9);
        let flat: Vec<Point> = (0..10).map(|i| (i as f64 * 30.0, if i % 2 == 0 { 5000 } else { 5010 })).collect();
        assert!(slope_kb_per_min(&flat).unwrap().abs() < 1.0);
        assert_eq!(slope_kb_per_min(&[(0.0, 1)]), None);
        assert_eq!(slope_kb_per_min(&[(5.0, 1), (5.0, 9)]), None);
    }

    #[test]
    fn tail_keeps_the_last_window() {
        let pts: Vec<Point> = (0..=60).map(|i| (i as f64 * 30.0, i)).collect();
        let t = tail(&pts, 1200.0);
        assert_eq!(t.first().unwrap().0, 600.0);
        assert_eq!(t.len(), 41);
        assert!(tail(&[], 10.0).is_empty());
    }

    #[test]
    fn summary_fits_only_the_window() {
        // Warm-up growth in the first 10 minutes, flat afterwards: the windowed slope is 0.
        let pts: Vec<Point> =
            (0..=60).map(|i| (i as f64 * 30.0, if i < 20 { 10_000 + i as u64 * 500 } else { 20_000 })).collect();
        let v = summary(&pts, 1200.0);
        assert_eq!(v["first_kb"], 10_000);
        assert_eq!(v["max_kb"], 20_000);
        assert_eq!(v["last_kb"], 20_000);
        assert_eq!(v["samples"], 61);
        assert_eq!(v["slope_kb_per_min"], 0.0);
        assert!(v["slope_all_kb_per_min"].as_f64().unwrap() > 100.0);
        assert_eq!(v["series"][1], json!([30.0, 10_500]));
    }
}
