//! Single-node presence: channel → client id → client info in process, sharded by channel.

use std::collections::HashMap;
use std::sync::Mutex;

use herald_proto::ClientInfo;

use super::memory::{SHARDS, ready, shard_of};
use super::{BoxFuture, BrokerError, PresenceManager};

/// channel → client id → info.
type PresenceMap = HashMap<String, HashMap<String, ClientInfo>>;

/// Single-node presence.
pub struct MemoryPresence {
    shards: Box<[Mutex<PresenceMap>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: Default::default() }
    }
}

impl MemoryPresence {
    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, PresenceMap> {
        self.shards[shard_of(&self.hasher, channel)].lock().expect("presence shard")
    }
}

impl PresenceManager for MemoryPresence {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.shard(channel).entry(channel.to_owned()).or_default().insert(info.client.clone(), info);
        ready(Ok(()))
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut shard = self.shard(channel);
        if let Some(m) = shard.get_mut(channel) {
            m.remove(client);
            if m.is_empty() {
                shard.remove(channel);
            }
        }
        ready(Ok(()))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>> {
        ready(Ok(self.shard(channel).get(channel).cloned().unwrap_or_default()))
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>> {
        let shard = self.shard(channel);
        let stats = match shard.get(channel) {
            Some(m) => {
                let users: std::collections::HashSet<&str> = m.values().map(|i| i.user.as_str()).collect();
                (m.len() as u32, users.len() as u32)
            }
            None => (0, 0),
        };
        ready(Ok(stats))
    }

    fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn presence_counts_users() {
        let p = MemoryPresence::default();
        for (c, u) in [("c1", "u1"), ("c2", "u1"), ("c3", "")] {
            let info = ClientInfo { client: c.into(), user: u.into(), ..Default::default() };
            p.add_presence("ch", info).now_or_never().unwrap().unwrap();
        }
        assert_eq!(p.presence_stats("ch").now_or_never().unwrap().unwrap(), (3, 2));
        p.remove_presence("ch", "c1").now_or_never().unwrap().unwrap();
        assert_eq!(p.presence("ch").now_or_never().unwrap().unwrap().len(), 2);
    }
}
