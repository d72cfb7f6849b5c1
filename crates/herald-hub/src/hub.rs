//! Local indexes and fan-out: channel → subscribers and user → connections, sharded so that no
//! global lock sits on the delivery path.
//!
//! Fan-out encodes a publication once ([`Prepared`]) and queues the shared frame to every live
//! subscriber under that channel's lock, which keeps per-channel order.
//!
//! Race-free subscribe: a new subscriber is first added as *pending*; pushes for it are
//! buffered while the session reads the stream position or recovers history. The session then
//! writes its subscribe reply and calls [`Hub::activate`], which flushes the buffered pushes
//! newer than what the reply covered and makes the subscriber live. So a subscribe reply always
//! precedes that channel's pushes, and nothing is lost or duplicated in between.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use herald_proto::codes::DISCONNECT_SLOW;
use herald_proto::{ClientInfo, Join, Leave, Prepared, Publication, Push, Reply};
use indexmap::IndexMap;
use uuid::Uuid;

use crate::clock::Clock;
use crate::link::{ClientLink, Control};
use crate::trace::{self, Tracer};
use crate::wake;

/// Per-subscriber flags kept in the hub.
pub mod flags {
    /// Deliver join and leave pushes to this subscriber.
    pub const PUSH_JOIN_LEAVE: u8 = 1;
    /// Told to recover after an engine reconnect ([`super::Hub::resync`]): nothing more is
    /// delivered to this entry, so a publication after the gap cannot reach the client before
    /// its unsubscribe (the SDK would take its offset as the position to recover from). The
    /// resubscribe makes a new entry.
    pub(crate) const RESYNCING: u8 = 2;
}

const SHARDS: usize = 64;

/// Pushes held for a pending subscriber.
struct Pending {
    items: Vec<(u64, Arc<Prepared>)>,
}

struct Subscriber {
    link: Arc<dyn ClientLink>,
    flags: u8,
    pending: Option<Box<Pending>>,
}

/// Subscribers of one channel, keyed by link address.
struct ChannelSubs {
    subs: Mutex<IndexMap<usize, Subscriber>>,
}

fn key(link: &Arc<dyn ClientLink>) -> usize {
    Arc::as_ptr(link) as *const () as usize
}

type UserMap = HashMap<Arc<str>, Vec<Arc<dyn ClientLink>>>;
type ChannelMap = HashMap<Arc<str>, Arc<ChannelSubs>>;

/// The node's local subscription and user indexes.
pub struct Hub {
    channels: Box<[Mutex<ChannelMap>]>,
    users: Box<[Mutex<UserMap>]>,
    hasher: std::collections::hash_map::RandomState,
    num_subs: AtomicUsize,
    num_clients: AtomicUsize,
    num_users: AtomicUsize,
    /// Publications fanned out to local subscribers so far (the node's messages/s).
    num_publications: std::sync::atomic::AtomicU64,
    /// Most pushes buffered for one pending subscriber before it is closed as slow.
    pending_limit: usize,
    /// Publications fanned out to local subscribers, and pushes queued by those fan-outs
    /// (the admin console's messages in and out per second).
    msgs_in: AtomicU64,
    msgs_out: AtomicU64,
    tracer: Tracer,
    /// Client ids of traced connections and their users (pushes are traced per link, and a
    /// link does not know its user).
    traced_clients: Mutex<HashMap<Uuid, Arc<str>>>,
    clock: Arc<dyn Clock>,
}

/// Why a user could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimitReached;

impl Hub {
    pub fn new(pending_limit: usize, clock: Arc<dyn Clock>) -> Self {
        Hub {
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            tracer: Tracer::default(),
            traced_clients: Mutex::new(HashMap::new()),
            clock,
            channels: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            num_subs: AtomicUsize::new(0),
            num_clients: AtomicUsize::new(0),
            num_users: AtomicUsize::new(0),
            num_publications: std::sync::atomic::AtomicU64::new(0),
            pending_limit,
        }
    }

    fn shard<K: Hash + ?Sized>(&self, k: &K) -> usize {
        (self.hasher.hash_one(k) as usize) % SHARDS
    }

    /// Adds `link` as a pending subscriber of `channel`. Returns true when the channel had no
    /// local subscribers (the caller then subscribes the node through the broker).
    pub fn add_pending(&self, channel: &str, link: &Arc<dyn ClientLink>, flags: u8) -> bool {
        let mut shard = self.channels[self.shard(channel)].lock().expect("hub shard");
        let (subs, first) = match shard.get(channel) {
            Some(s) => (s.clone(), false),
            None => {
                let s = Arc::new(ChannelSubs { subs: Mutex::new(IndexMap::new()) });
                shard.insert(Arc::from(channel), s.clone());
                (s, true)
            }
        };
        let mut subs = subs.subs.lock().expect("channel subs");
        let sub = Subscriber { link: link.clone(), flags, pending: Some(Box::new(Pending { items: Vec::new() })) };
        if subs.insert(key(link), sub).is_none() {
            self.num_subs.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Makes a pending subscriber live: queues the buffered pushes with an offset greater than
    /// `after` (pushes without offset always), then delivers directly.
    pub fn activate(&self, channel: &str, link: &Arc<dyn ClientLink>, after: u64) {
        let Some(subs) = self.channel_subs(channel) else { return };
        let mut subs = subs.subs.lock().expect("channel subs");
        if let Some(sub) = subs.get_mut(&key(link))
            && let Some(pending) = sub.pending.take()
        {
            for (offset, p) in pending.items {
                if offset == 0 || offset > after {
                    sub.link.send_prepared(&p);
                }
            }
        }
    }

    /// Removes `link` from `channel`. Returns true when it was the last local subscriber.
    pub fn remove(&self, channel: &str, link: &Arc<dyn ClientLink>) -> bool {
        let mut shard = self.channels[self.shard(channel)].lock().expect("hub shard");
        let Some(subs) = shard.get(channel).cloned() else { return false };
        let mut inner = subs.subs.lock().expect("channel subs");
        if inner.swap_remove(&key(link)).is_some() {
            self.num_subs.fetch_sub(1, Ordering::Relaxed);
        }
        if inner.is_empty() {
            drop(inner);
            shard.remove(channel);
            return true;
        }
        false
    }

    fn channel_subs(&self, channel: &str) -> Option<Arc<ChannelSubs>> {
        self.channels[self.shard(channel)].lock().expect("hub shard").get(channel).cloned()
    }

    /// Delivers `push` to the channel's subscribers (those with `need_flags`, except `exclude`).
    /// Returns the number of live deliveries.
    fn fan_out(&self, channel: &str, push: Push, offset: u64, need_flags: u8, exclude: Option<Uuid>) -> usize {
        let Some(subs) = self.channel_subs(channel) else { return 0 };
        let prepared = Arc::new(Prepared::new(Reply::push(push)));
        let mut delivered = 0;
        // The one check a fan-out pays for user traces.
        let tracing = self.tracer.any();
        // Handed over after the channel lock is released (dropped in reverse order).
        let _batch = wake::Batch::open();
        let mut subs = subs.subs.lock().expect("channel subs");
        for sub in subs.values_mut() {
            // The wanted flags, and not resyncing: one comparison.
            if sub.flags & (need_flags | flags::RESYNCING) != need_flags {
                continue;
            }
            if let Some(ex) = exclude
                && sub.link.id() == ex
            {
                continue;
            }
            match &mut sub.pending {
                Some(pending) => {
                    if pending.items.len() >= self.pending_limit {
                        sub.link.close(DISCONNECT_SLOW);
                    } else {
                        pending.items.push((offset, prepared.clone()));
                    }
                }
                None => {
                    sub.link.send_prepared(&prepared);
                    delivered += 1;
                    if tracing && sub.link.timers().is_traced() {
                        self.trace_push(&*sub.link, channel, &prepared);
                    }
                }
            }
        }
        self.msgs_out.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    fn trace_push(&self, link: &dyn ClientLink, channel: &str, prepared: &Prepared) {
        let client = link.id();
        let Some(user) = self.traced_clients.lock().expect("traced clients").get(&client).cloned() else { return };
        let payload = trace::Json(prepared.reply());
        self.tracer.record(self.clock.now_ms(), &user, &client.to_string(), trace::kind::PUSH, channel, &payload);
    }

    /// Delivers a publication to local subscribers. Returns live deliveries.
    pub fn broadcast_publication(&self, channel: &str, publication: &Publication, exclude: Option<Uuid>) -> usize {
        self.num_publications.fetch_add(1, Ordering::Relaxed);
        let push = Push { channel: channel.to_owned(), publication: Some(publication.clone()), ..Default::default() };
        self.msgs_in.fetch_add(1, Ordering::Relaxed);
        self.fan_out(channel, push, publication.offset, 0, exclude)
    }

    pub fn broadcast_join(&self, channel: &str, info: &ClientInfo) -> usize {
        let push =
            Push { channel: channel.to_owned(), join: Some(Join { info: Some(info.clone()) }), ..Default::default() };
        self.fan_out(channel, push, 0, flags::PUSH_JOIN_LEAVE, None)
    }

    pub fn broadcast_leave(&self, channel: &str, info: &ClientInfo) -> usize {
        let push =
            Push { channel: channel.to_owned(), leave: Some(Leave { info: Some(info.clone()) }), ..Default::default() };
        self.fan_out(channel, push, 0, flags::PUSH_JOIN_LEAVE, None)
    }

    /// Tells every local subscriber of the channels `affected` selects that the stream may have
    /// a gap ([`Control::Insufficient`]): client-side subscriptions are unsubscribed with 2500,
    /// which makes the SDKs resubscribe and recover from history. From here on nothing is
    /// delivered to those entries ([`flags::RESYNCING`]). Returns how many were told.
    pub fn resync(&self, affected: &dyn Fn(&str) -> bool) -> usize {
        let mut told = 0;
        for shard in self.channels.iter() {
            let channels: Vec<(Arc<str>, Arc<ChannelSubs>)> = shard
                .lock()
                .expect("hub shard")
                .iter()
                .filter(|(name, _)| affected(name))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            for (name, subs) in channels {
                for sub in subs.subs.lock().expect("channel subs").values_mut() {
                    if sub.flags & flags::RESYNCING != 0 {
                        continue;
                    }
                    sub.flags |= flags::RESYNCING;
                    sub.link.control(Control::Insufficient { channel: name.to_string() });
                    told += 1;
                }
            }
        }
        told
    }

    /// Registers a connection of `user`. With `limit > 0`, fails when the user (unless
    /// anonymous) already has `limit` connections on this node.
    pub fn add_user(&self, user: &str, link: &Arc<dyn ClientLink>, limit: usize) -> Result<(), UserLimitReached> {
        let mut shard = self.users[self.shard(user)].lock().expect("user shard");
        match shard.get_mut(user) {
            Some(links) => {
                if limit > 0 && !user.is_empty() && links.len() >= limit {
                    return Err(UserLimitReached);
                }
                links.push(link.clone());
            }
            None => {
                shard.insert(Arc::from(user), vec![link.clone()]);
                self.num_users.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.num_clients.fetch_add(1, Ordering::Relaxed);
        drop(shard);
        if self.tracer.is_traced(user, self.clock.now_ms()) {
            self.mark_traced(user, link, true);
        }
        Ok(())
    }

    pub fn remove_user(&self, user: &str, link: &Arc<dyn ClientLink>) {
        let mut shard = self.users[self.shard(user)].lock().expect("user shard");
        if let Some(links) = shard.get_mut(user) {
            let before = links.len();
            links.retain(|l| key(l) != key(link));
            if links.len() < before {
                self.num_clients.fetch_sub(1, Ordering::Relaxed);
                if link.timers().is_traced() {
                    self.traced_clients.lock().expect("traced clients").remove(&link.id());
                }
            }
            if links.is_empty() {
                shard.remove(user);
                self.num_users.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The node's user traces.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The time trace lines are stamped with, Unix ms.
    pub fn tracer_now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn mark_traced(&self, user: &str, link: &Arc<dyn ClientLink>, on: bool) {
        link.timers().set_traced(on);
        let mut clients = self.traced_clients.lock().expect("traced clients");
        if on {
            clients.insert(link.id(), Arc::from(user));
        } else {
            clients.remove(&link.id());
        }
    }

    /// Traces `user`'s connections on this node until `until_ms` (Unix ms); connections made
    /// before then are traced from their connect. Returns how many connections were marked.
    pub fn trace_start(&self, user: &str, until_ms: i64) -> usize {
        let new = self.tracer.start(user, until_ms);
        let links = self.user_links(user);
        for link in &links {
            self.mark_traced(user, link, true);
        }
        if new {
            let detail = format!("{} connection(s) on this node", links.len());
            self.tracer.record(self.clock.now_ms(), user, "", trace::kind::TRACE, "start", &detail);
        }
        links.len()
    }

    /// Ends the trace of `user` (its connections stop logging at once).
    pub fn trace_stop(&self, user: &str, why: &str) -> bool {
        let was = self.tracer.stop(user);
        for link in self.user_links(user) {
            self.mark_traced(user, &link, false);
        }
        if was {
            self.tracer.record(self.clock.now_ms(), user, "", trace::kind::TRACE, "end", &why);
        }
        was
    }

    /// Ends the traces that are over; call about once a second.
    pub fn trace_sweep(&self) {
        for user in self.tracer.expire(self.clock.now_ms()) {
            for link in self.user_links(&user) {
                self.mark_traced(&user, &link, false);
            }
            self.tracer.record(self.clock.now_ms(), &user, "", trace::kind::TRACE, "end", &"its duration is over");
        }
    }

    /// Publications fanned out here since start, and pushes queued by them.
    pub fn messages(&self) -> (u64, u64) {
        (self.msgs_in.load(Ordering::Relaxed), self.msgs_out.load(Ordering::Relaxed))
    }

    /// The channels `link` is subscribed to here (a scan of every channel: for the admin
    /// console's user lookup, not for a hot path).
    pub fn channels_of(&self, link: &Arc<dyn ClientLink>) -> Vec<String> {
        let mut out = Vec::new();
        for shard in self.channels.iter() {
            for (name, subs) in shard.lock().expect("hub shard").iter() {
                if subs.subs.lock().expect("channel subs").contains_key(&key(link)) {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// Connections of `user` on this node.
    pub fn user_links(&self, user: &str) -> Vec<Arc<dyn ClientLink>> {
        self.users[self.shard(user)].lock().expect("user shard").get(user).cloned().unwrap_or_default()
    }

    /// Every connection on this node (used at shutdown).
    pub fn all_links(&self) -> Vec<Arc<dyn ClientLink>> {
        let mut out = Vec::with_capacity(self.num_clients());
        for shard in self.users.iter() {
            for links in shard.lock().expect("user shard").values() {
                out.extend(links.iter().cloned());
            }
        }
        out
    }

    /// Channels with local subscribers and their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.channels.iter() {
            for (name, subs) in shard.lock().expect("hub shard").iter() {
                let n = subs.subs.lock().expect("channel subs").len();
                out.push((name.to_string(), n));
            }
        }
        out
    }

    pub fn num_subscribers(&self, channel: &str) -> usize {
        self.channel_subs(channel).map(|s| s.subs.lock().expect("channel subs").len()).unwrap_or(0)
    }

    /// Publications fanned out so far.
    pub fn num_publications(&self) -> u64 {
        self.num_publications.load(Ordering::Relaxed)
    }

    pub fn num_subs(&self) -> usize {
        self.num_subs.load(Ordering::Relaxed)
    }

    pub fn num_clients(&self) -> usize {
        self.num_clients.load(Ordering::Relaxed)
    }

    pub fn num_users(&self) -> usize {
        self.num_users.load(Ordering::Relaxed)
    }

    pub fn num_channels(&self) -> usize {
        self.channels.iter().map(|s| s.lock().expect("hub shard").len()).sum()
    }
}
