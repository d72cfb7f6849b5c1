//! Upstream health: a sans-IO state machine per upstream ([`Health`], driven by check results
//! and a clock passed in) and the task that runs a route's active checks.
//!
//! An upstream starts in. `unhealthy` failed checks in a row take it out; `healthy` passed
//! checks in a row put it back. With `passive`, a forwarded request that could not reach the
//! upstream counts as a failed check, but only when active checks run: they are what can put
//! it back. The `herald_gateway_upstream_healthy{route, upstream}` gauge is 1 or 0.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;

use super::Gateway;

/// A route's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub unhealthy: u32,
    pub healthy: u32,
    /// Active checks run.
    pub active: bool,
    /// Failed forwards count.
    pub passive: bool,
}

/// One upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
    /// When the state last changed (ms).
    pub since_ms: i64,
}

impl Default for Health {
    fn default() -> Self {
        Health { up: true, streak: 0, since_ms: 0 }
    }
}

impl Health {
    /// Records an active check's result at `now_ms`; `Some(up)` when the state changed.
    pub fn checked(&mut self, ok: bool, t: &Thresholds, now_ms: i64) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { t.unhealthy } else { t.healthy };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        self.since_ms = now_ms;
        Some(ok)
    }

    /// Records a forwarded request that could not reach the upstream.
    pub fn passive_failure(&mut self, t: &Thresholds, now_ms: i64) -> Option<bool> {
        if !(t.active && t.passive && self.up) {
            return None;
        }
        self.checked(false, t, now_ms)
    }
}

/// Sets the health gauge of one upstream.
pub fn gauge(route: &str, upstream: &str, up: bool) {
    metrics::gauge!("herald_gateway_upstream_healthy", "route" => route.to_owned(), "upstream" => upstream.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

/// Logs and reports a change of state.
pub fn changed(route: &str, upstream: &str, up: bool, why: &str) {
    gauge(route, upstream, up);
    if up {
        tracing::info!(route, upstream, "gateway upstream back in: {why}");
    } else {
        tracing::warn!(route, upstream, "gateway upstream taken out: {why}");
    }
}

/// Starts the active checks of every route of `gateway` that has them, and sets every health
/// gauge. A reload aborts the tasks of the routes it replaces (`AppState::set_gateway`).
pub fn spawn_all(gateway: &Arc<Gateway>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (index, route) in gateway.routes.iter().enumerate() {
        for u in &route.upstreams {
            gauge(&route.label, &u.label, true);
        }
        if route.thresholds.active {
            tasks.push(tokio::spawn(run(gateway.clone(), index)));
        }
    }
    tasks
}

/// Runs the active checks of route `index` until aborted: every upstream at once, each
/// `interval`.
pub async fn run(gateway: Arc<Gateway>, index: usize) {
    let route = &gateway.routes[index];
    let mut every = tokio::time::interval(route.cfg.health_check.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let mut checks = tokio::task::JoinSet::new();
        for upstream in 0..route.upstreams.len() {
            checks.spawn(check(gateway.clone(), index, upstream));
        }
        while checks.join_next().await.is_some() {}
    }
}

async fn check(gateway: Arc<Gateway>, index: usize, upstream: usize) {
    let route = &gateway.routes[index];
    let u = &route.upstreams[upstream];
    let hc = &route.cfg.health_check;
    let uri = format!("{}://{}{}{}", u.scheme, u.authority, u.base, hc.path);
    let result = probe(&route.client, &uri, hc.timeout).await;
    let change =
        u.health.lock().unwrap_or_else(|p| p.into_inner()).checked(result.is_ok(), &route.thresholds, gateway.now_ms());
    if let Some(up) = change {
        let why = match &result {
            Ok(()) => format!("{} passed checks of {uri}", route.thresholds.healthy),
            Err(e) => format!("{} failed checks of {uri}, the last: {e}", route.thresholds.unhealthy),
        };
        changed(&route.label, &u.label, up, &why);
    }
}

/// One check: `GET uri` answered 2xx within `timeout`.
async fn probe(client: &super::forward::HttpClient, uri: &str, timeout: Duration) -> Result<(), String> {
    let request = Request::get(uri)
        .header(http::header::USER_AGENT, "herald-health-check")
        .body(super::forward::empty())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| format!("unreachable: {e}"))?;
        let status = response.status();
        // Read the (small) body so the connection can be reused.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("status {}", status.as_u16())) }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", herald_hub::duration::format(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { unhealthy: 2, healthy: 3, active: true, passive: true };

    #[test]
    fn taken_out_after_the_unhealthy_threshold_and_back_after_the_healthy_one() {
        let mut h = Health::default();
        assert!(h.up);
        assert_eq!(h.checked(false, &T, 1000), None, "one failure is not enough");
        assert_eq!(h.checked(true, &T, 2000), None, "a pass resets the streak");
        assert_eq!(h.checked(false, &T, 3000), None);
        assert_eq!(h.checked(false, &T, 4000), Some(false));
        assert_eq!((h.up, h.since_ms), (false, 4000));
        assert_eq!(h.checked(false, &T, 5000), None, "already out");
        assert_eq!(h.checked(true, &T, 6000), None);
        assert_eq!(h.checked(true, &T, 7000), None);
        assert_eq!(h.checked(false, &T, 8000), None, "a failure resets the recovery");
        for at in [9000, 10_000] {
            assert_eq!(h.checked(true, &T, at), None);
        }
        assert_eq!(h.checked(true, &T, 11_000), Some(true));
        assert_eq!((h.up, h.since_ms), (true, 11_000));
    }

    #[test]
    fn passive_failures_count_only_with_active_checks() {
        let mut h = Health::default();
        let no_active = Thresholds { active: false, ..T };
        for at in 0..10 {
            assert_eq!(h.passive_failure(&no_active, at), None);
        }
        assert!(h.up, "nothing could put it back, so nothing takes it out");
        let no_passive = Thresholds { passive: false, ..T };
        assert_eq!(h.passive_failure(&no_passive, 0), None);
        assert_eq!(h.passive_failure(&no_passive, 1), None);
        assert!(h.up);
        assert_eq!(h.passive_failure(&T, 2), None);
        assert_eq!(h.passive_failure(&T, 3), Some(false));
        assert_eq!(h.passive_failure(&T, 4), None, "out already: no change");
    }
}
