//! The fanout (one channel, every connection subscribed) and personal (one channel per
//! connection) scenarios: the same run around a different publishing plan.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::publish::{Backlog, Plan, delivery_fields, print_delivery_summary, publish_phase};
use super::{JobSpec, Setup, base, client_fields, connect_all, finish, merge, setup};
use crate::cli::{FanoutArgs, PersonalArgs};
use crate::job::{Channels, Cmd, Target};
use crate::metrics;
use crate::worker::MAX_SEQ;

/// A fanout or personal run.
struct PublishRun {
    scenario: &'static str,
    plan: Plan,
    channels: Channels,
    duration: Duration,
    /// Deliveries per successful publish (default: every connection, or the share of one
    /// server when each server gets its own copy).
    per_publish: Option<f64>,
    /// One publish reaches the readers of every server (a cluster).
    all_nodes: bool,
    backlog: Option<Backlog>,
    /// Share of the connections that never read after subscribing (fanout only).
    stalled_share: f64,
    extra: Map<String, Value>,
}

/// Deliveries one accepted publish to the shared channel should make: every reader when the
/// servers share a broker (one publish through the first), else the readers of one server
/// (each server gets its own publish of the same sequence number).
fn shared_per_publish(readers: u64, servers: usize, cluster: bool) -> f64 {
    if cluster { readers as f64 } else { readers as f64 / servers.max(1) as f64 }
}

async fn publish_scenario(s: Setup, run: PublishRun) -> Result<(), String> {
    let PublishRun {
        scenario,
        plan,
        channels,
        duration,
        per_publish: per_publish_override,
        all_nodes,
        backlog,
        stalled_share,
        extra,
    } = run;
    let max_seq = plan.max_seq();
    if max_seq > MAX_SEQ {
        return Err(format!("too many publications/rounds ({max_seq}, at most {MAX_SEQ})"));
    }
    let spec = JobSpec {
        channels,
        strict_order: true,
        max_seq,
        churn_percent: None,
        handshake: None,
        api: None,
        stalled_share,
        reconnect: None,
    };
    let mut m = base(&s, scenario);
    m.extend(extra);
    let disconnects_before = if stalled_share > 0.0 { metrics::disconnects(&s.urls).await } else { None };
    let (mut fleet, _) = connect_all(&s, &spec, &mut m).await?;
    let stalled = fleet.ready_stalled();
    // Stalled connections read nothing: the deliveries expected are the readers'.
    let readers = fleet.ready_open() - stalled;
    let per_publish = per_publish_override.unwrap_or_else(|| shared_per_publish(readers, s.urls.len(), all_nodes));
    fleet.send_all(Cmd::Start).await;
    eprintln!("  publishing ...");
    let out = publish_phase(&s, s.c.drain, &mut fleet, &plan, duration, per_publish, backlog).await;
    // Read before the workers stop: their own closes would count too.
    let disconnects_after = if stalled_share > 0.0 { metrics::disconnects(&s.urls).await } else { None };
    fleet.stop(Instant::now() + Duration::from_secs(20)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    delivery_fields(&mut m, &merged, &out, per_publish, true);
    client_fields(&mut m, &merged);
    m.insert("connections_at_end".into(), json!(merged.open));
    print_delivery_summary(&m);
    if stalled_share > 0.0 {
        m.insert("stalled".into(), json!(stalled));
        m.insert("readers".into(), json!(readers));
        let closed = disconnects_before.zip(disconnects_after).map(|(b, a)| metrics::delta(&b, &a));
        eprintln!(
            "  stalled {stalled} of {} connections; server disconnects by code during the run: {}",
            readers + stalled,
            closed.as_ref().map(|c| format!("{c:?}")).unwrap_or_else(|| "unknown (no /metrics)".into())
        );
        m.insert("server_disconnects".into(), json!(closed));
    }
    finish(&s, m)
}

pub async fn fanout(a: FanoutArgs) -> Result<(), String> {
    let s = setup(&a.common, 1000, None, true)?;
    let rate = s.c.rate.unwrap_or(20.0);
    if rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    if !(0.0..1.0).contains(&a.stalled_share) {
        return Err("--stalled-share must be at least 0 and below 1".into());
    }
    let duration = s.c.duration.unwrap_or(Duration::from_secs(20));
    let count = s.c.count.unwrap_or_else(|| (rate * duration.as_secs_f64()).ceil() as u64).max(1);
    let duration = if s.c.count.is_some() && s.c.duration.is_none() { Duration::from_secs(3600) } else { duration };
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_fanout".into());
    eprintln!(
        "fanout: {} subscribers of {channel} on {} ({}), {rate}/s for up to {:.0} s / {count} publications",
        s.n,
        s.hosts(),
        s.c.target.as_str(),
        duration.as_secs_f64()
    );
    let mut extra = Map::new();
    extra.insert("rate".into(), json!(rate));
    extra.insert("duration_s".into(), json!(duration.as_secs_f64()));
    extra.insert("count".into(), json!(count));
    extra.insert("max_backlog_ms".into(), json!(a.max_backlog.map(|d| d.as_millis() as u64)));
    extra.insert("stalled_share".into(), json!(a.stalled_share));
    let backlog = a.max_backlog.map(|threshold| Backlog { threshold, secs: a.max_backlog_secs.max(1) });
    extra.insert("cluster".into(), json!(a.cluster));
    let plan = Plan::Fanout { channel: channel.clone(), rate, count, cluster: a.cluster };
    let run = PublishRun {
        scenario: "fanout",
        plan,
        channels: Channels::Shared(channel),
        duration,
        // A cluster delivers every publication to every reader, on whichever node.
        per_publish: None,
        all_nodes: a.cluster,
        backlog,
        stalled_share: a.stalled_share,
        extra,
    };
    publish_scenario(s, run).await
}

pub async fn personal(a: PersonalArgs) -> Result<(), String> {
    let s = setup(&a.common, 1000, None, true)?;
    let rate = s.c.rate.unwrap_or(s.n as f64);
    if rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let duration = s.c.duration.unwrap_or(Duration::from_secs(20));
    let rounds = s.c.count.unwrap_or_else(|| ((rate * duration.as_secs_f64()) / s.n as f64).floor() as u64).max(1);
    let duration = if s.c.count.is_some() && s.c.duration.is_none() { Duration::from_secs(3600) } else { duration };
    let prefix = s.c.channel.clone().unwrap_or_else(|| match s.c.target {
        Target::Herald => "personal:".into(),
        Target::Nchan => "personal_".into(),
    });
    eprintln!(
        "personal: {} subscribers on {prefix}<i> at {} ({}), {rate} messages/s, {rounds} round(s)",
        s.n,
        s.hosts(),
        s.c.target.as_str()
    );
    let mut extra = Map::new();
    extra.insert("rate".into(), json!(rate));
    extra.insert("duration_s".into(), json!(duration.as_secs_f64()));
    extra.insert("rounds".into(), json!(rounds));
    extra.insert("publishers".into(), json!(a.publishers));
    let backlog = a.max_backlog.map(|threshold| Backlog { threshold, secs: a.max_backlog_secs.max(1) });
    let plan = Plan::Personal { prefix: prefix.clone(), n: s.n, rate, rounds, publishers: a.publishers.max(1) };
    let run = PublishRun {
        scenario: "personal",
        plan,
        channels: Channels::PerConn(prefix),
        duration,
        per_publish: Some(1.0),
        all_nodes: false,
        backlog,
        stalled_share: 0.0,
        extra,
    };
    publish_scenario(s, run).await
}

#[cfg(test)]
mod tests {
    use super::shared_per_publish;

    #[test]
    fn a_cluster_expects_every_reader_per_publish_independent_servers_their_share() {
        // 18,000 readers over 3 servers: one publish through node A reaches all of them ...
        assert_eq!(shared_per_publish(18_000, 3, true), 18_000.0);
        // ... while independent servers each get a copy and deliver to their own third.
        assert_eq!(shared_per_publish(18_000, 3, false), 6_000.0);
        assert_eq!(shared_per_publish(10, 1, false), 10.0);
    }
}
