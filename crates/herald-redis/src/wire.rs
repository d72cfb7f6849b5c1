//! Every byte layout the Redis engine puts into Redis: key and PUB/SUB channel names, the
//! messages carried between nodes, and the Lua scripts that make a publish and its history
//! append one atomic step.
//!
//! Keys of one channel share a hash tag (`{channel}`), so in a Redis Cluster they live in one
//! slot and one script may touch them all. PUB/SUB names carry the same tag only in a Redis
//! Cluster, where they are sharded channels (`SPUBLISH` from the script must stay in the slot of
//! the keys); on standalone instances they stay untagged, as nodes of earlier versions name them.
//!
//! Messages on a channel's PUB/SUB name start with one tag byte:
//! - `p<offset>:<epoch>:<exclude client>:<Publication protobuf>`: a publication (offset 0 and an
//!   empty epoch when the channel keeps no history; an empty exclude when none);
//! - `j<ClientInfo protobuf>` and `l<ClientInfo protobuf>`: join and leave.
//!
//! Control messages (`<prefix>.control`, `<prefix>.node.<uid>`) are carried as the hub gave
//! them.

use bytes::Bytes;
use herald_proto::{ClientInfo, Publication};
use prost::Message;

/// Names derived from the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
    /// Redis Cluster: PUB/SUB names are sharded channels tagged like the channel's keys.
    cluster: bool,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Names { prefix: prefix.to_owned(), cluster: false }
    }

    /// Names for a Redis Cluster (sharded PUB/SUB).
    pub(crate) fn for_cluster(prefix: &str) -> Self {
        Names { prefix: prefix.to_owned(), cluster: true }
    }

    /// PUB/SUB name of a Herald channel.
    pub(crate) fn pubsub(&self, channel: &str) -> String {
        if self.cluster {
            format!("{}.client.{{{channel}}}", self.prefix)
        } else {
            format!("{}.client.{channel}", self.prefix)
        }
    }

    /// The Herald channel of a PUB/SUB name, if it is one.
    pub(crate) fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        let rest = pubsub.strip_prefix(self.prefix.as_str())?.strip_prefix(".client.")?;
        if self.cluster { rest.strip_prefix('{')?.strip_suffix('}') } else { Some(rest) }
    }

    /// The command that publishes to a PUB/SUB name: sharded in a Redis Cluster, where a plain
    /// `PUBLISH` would be broadcast to every node of the cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.cluster { "SPUBLISH" } else { "PUBLISH" }
    }

    pub(crate) fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }

    pub(crate) fn node(&self, uid: &str) -> String {
        format!("{}.node.{uid}", self.prefix)
    }

    pub(crate) fn stream(&self, channel: &str) -> String {
        format!("{}.stream.{{{channel}}}", self.prefix)
    }

    pub(crate) fn meta(&self, channel: &str) -> String {
        format!("{}.stream.meta.{{{channel}}}", self.prefix)
    }

    pub(crate) fn result(&self, channel: &str, key: &str) -> String {
        format!("{}.result.{{{channel}}}.{key}", self.prefix)
    }

    pub(crate) fn presence_data(&self, channel: &str) -> String {
        format!("{}.presence.data.{{{channel}}}", self.prefix)
    }

    pub(crate) fn presence_expire(&self, channel: &str) -> String {
        format!("{}.presence.expire.{{{channel}}}", self.prefix)
    }
}

/// A message received on a channel's PUB/SUB name.
#[derive(Debug, PartialEq)]
pub(crate) enum Message_ {
    Publication { publication: Publication, epoch: String, exclude: Option<uuid::Uuid> },
    Join(ClientInfo),
    Leave(ClientInfo),
}

pub(crate) use Message_ as ChannelMessage;

/// The protobuf body of a publication as stored in history (no offset: the stream entry id is
/// the offset).
pub(crate) fn publication_body(publication: &Publication) -> Vec<u8> {
    publication.encode_to_vec()
}

/// A publication as published without history (the script builds the same with its offset).
pub(crate) fn publication_message(body: &[u8], exclude: Option<uuid::Uuid>) -> Vec<u8> {
    let exclude = exclude.map(|u| u.to_string()).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + exclude.len() + 4);
    out.extend_from_slice(b"p0::");
    out.extend_from_slice(exclude.as_bytes());
    out.push(b':');
    out.extend_from_slice(body);
    out
}

pub(crate) fn join_message(info: &ClientInfo) -> Vec<u8> {
    tagged(b'j', info)
}

pub(crate) fn leave_message(info: &ClientInfo) -> Vec<u8> {
    tagged(b'l', info)
}

fn tagged(tag: u8, info: &ClientInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(info.encoded_len() + 1);
    out.push(tag);
    info.encode(&mut out).expect("vec grows");
    out
}

/// Decodes a stored publication body and gives it its position.
pub(crate) fn decode_publication(body: &[u8], offset: u64, epoch: &str) -> Option<Publication> {
    let mut publication = Publication::decode(body).ok()?;
    publication.offset = offset;
    // Like the memory engine: the first publication of a stream names its epoch.
    if offset == 1 {
        publication.epoch = epoch.to_owned();
    }
    Some(publication)
}

/// Decodes a message received on a channel's PUB/SUB name; `None` when it is not one of ours.
pub(crate) fn decode_channel_message(payload: &[u8]) -> Option<ChannelMessage> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'p' => {
            let (offset, rest) = split_colon(rest)?;
            let (epoch, rest) = split_colon(rest)?;
            let (exclude, body) = split_colon(rest)?;
            let offset: u64 = std::str::from_utf8(offset).ok()?.parse().ok()?;
            let epoch = std::str::from_utf8(epoch).ok()?.to_owned();
            let exclude = if exclude.is_empty() {
                None
            } else {
                Some(uuid::Uuid::parse_str(std::str::from_utf8(exclude).ok()?).ok()?)
            };
            let publication = decode_publication(body, offset, &epoch)?;
            Some(ChannelMessage::Publication { publication, epoch, exclude })
        }
        b'j' => ClientInfo::decode(rest).ok().map(ChannelMessage::Join),
        b'l' => ClientInfo::decode(rest).ok().map(ChannelMessage::Leave),
        _ => None,
    }
}

fn split_colon(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b':')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Encodes a presence entry.
pub(crate) fn encode_info(info: &ClientInfo) -> Bytes {
    Bytes::from(info.encode_to_vec())
}

/// Publish with history and/or an idempotency key, atomically.
///
/// KEYS: stream, meta, idempotency result. ARGV: body, history size (0: no history), history
/// TTL s, meta TTL s (0: none), a fresh epoch, PUB/SUB name, idempotency TTL s (0: no key),
/// exclude client (or empty), publish command (`publish`, `spublish`, or empty when another
/// broker carries the publication).
/// Returns {epoch, offset, suppressed}.
pub(crate) const PUBLISH: &str = r#"
if ARGV[7] ~= '0' then
  local r = redis.call('hmget', KEYS[3], 'e', 's')
  if r[1] then return {r[1], tonumber(r[2]), 1} end
end
local epoch, offset = '', 0
if ARGV[2] ~= '0' then
  epoch = redis.call('hget', KEYS[2], 'e')
  if not epoch then
    epoch = ARGV[5]
    redis.call('hset', KEYS[2], 'e', epoch)
  end
  offset = redis.call('hincrby', KEYS[2], 's', 1)
  if offset == 1 then
    -- a new epoch starts clean: entries of an expired stream would clash with the new ids
    redis.call('del', KEYS[1])
  end
  redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-1', 'd', ARGV[1])
  redis.call('expire', KEYS[1], ARGV[3])
  local meta_ttl = tonumber(ARGV[4])
  if meta_ttl > 0 then
    local ttl = math.max(meta_ttl, tonumber(ARGV[3]))
    if redis.call('ttl', KEYS[2]) < ttl then redis.call('expire', KEYS[2], ttl) end
  end
end
if ARGV[9] ~= '' then
  redis.call(ARGV[9], ARGV[6], 'p' .. offset .. ':' .. epoch .. ':' .. ARGV[8] .. ':' .. ARGV[1])
end
if ARGV[7] ~= '0' then
  redis.call('hset', KEYS[3], 'e', epoch, 's', offset)
  redis.call('expire', KEYS[3], ARGV[7])
end
return {epoch, offset, 0}
"#;

/// Reads a stream's position and (optionally) a range of it, creating its epoch when missing.
///
/// KEYS: stream, meta. ARGV: a fresh epoch, meta TTL s (0: none), read ('0'/'1'), reverse
/// ('0'/'1'), first id, last id (as XRANGE takes them), count (-1: all).
/// Returns {epoch, top, entries}.
pub(crate) const HISTORY: &str = r#"
local epoch = redis.call('hget', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', KEYS[2], 'e', epoch)
end
local meta_ttl = tonumber(ARGV[2])
if meta_ttl > 0 and redis.call('ttl', KEYS[2]) < meta_ttl then redis.call('expire', KEYS[2], meta_ttl) end
local top = tonumber(redis.call('hget', KEYS[2], 's') or '0')
local entries = {}
if ARGV[3] == '1' then
  if ARGV[4] == '1' then
    if ARGV[7] == '-1' then entries = redis.call('xrevrange', KEYS[1], ARGV[6], ARGV[5])
    else entries = redis.call('xrevrange', KEYS[1], ARGV[6], ARGV[5], 'COUNT', ARGV[7]) end
  else
    if ARGV[7] == '-1' then entries = redis.call('xrange', KEYS[1], ARGV[5], ARGV[6])
    else entries = redis.call('xrange', KEYS[1], ARGV[5], ARGV[6], 'COUNT', ARGV[7]) end
  end
end
return {epoch, top, entries}
"#;

/// KEYS: expire zset, data hash. ARGV: key TTL s, expire-at (Unix s), client, info.
pub(crate) const PRESENCE_ADD: &str = r#"
redis.call('zadd', KEYS[1], ARGV[2], ARGV[3])
redis.call('hset', KEYS[2], ARGV[3], ARGV[4])
redis.call('expire', KEYS[1], ARGV[1])
redis.call('expire', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: expire zset, data hash. ARGV: client. One script rather than MULTI, which a Redis
/// Cluster connection does not route.
pub(crate) const PRESENCE_REMOVE: &str = r#"
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: expire zset, data hash. ARGV: now (Unix s). Drops expired entries, returns the rest.
pub(crate) const PRESENCE_GET: &str = r#"
local expired = redis.call('zrangebyscore', KEYS[1], '0', ARGV[1])
if #expired > 0 then
  for _, c in ipairs(expired) do redis.call('hdel', KEYS[2], c) end
  redis.call('zremrangebyscore', KEYS[1], '0', ARGV[1])
end
return redis.call('hgetall', KEYS[2])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_message_round_trips() {
        let p = Publication { data: Bytes::from_static(b"{\"a\":1}"), ..Default::default() };
        let ex = uuid::Uuid::new_v4();
        let msg = publication_message(&publication_body(&p), Some(ex));
        let Some(ChannelMessage::Publication { publication, epoch, exclude }) = decode_channel_message(&msg) else {
            panic!("not decoded")
        };
        assert_eq!(publication, p);
        assert_eq!(epoch, "");
        assert_eq!(exclude, Some(ex));
        // The script's form: offset and epoch filled in, no exclude.
        let mut scripted = b"p7:abcd::".to_vec();
        scripted.extend_from_slice(&publication_body(&p));
        let Some(ChannelMessage::Publication { publication, epoch, exclude }) = decode_channel_message(&scripted)
        else {
            panic!("not decoded")
        };
        assert_eq!(publication.offset, 7);
        assert_eq!(epoch, "abcd");
        assert_eq!(exclude, None);
    }

    #[test]
    fn join_and_leave_round_trip_and_garbage_is_ignored() {
        let info = ClientInfo { user: "u".into(), client: "c".into(), ..Default::default() };
        assert_eq!(decode_channel_message(&join_message(&info)), Some(ChannelMessage::Join(info.clone())));
        assert_eq!(decode_channel_message(&leave_message(&info)), Some(ChannelMessage::Leave(info)));
        assert_eq!(decode_channel_message(b""), None);
        assert_eq!(decode_channel_message(b"x123"), None);
        assert_eq!(decode_channel_message(b"pnotanumber:e::"), None);
    }

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let n = Names::new("herald");
        assert_eq!(n.stream("chat:1"), "herald.stream.{chat:1}");
        assert_eq!(n.meta("chat:1"), "herald.stream.meta.{chat:1}");
        assert_eq!(n.result("chat:1", "k"), "herald.result.{chat:1}.k");
        assert_eq!(n.channel_of(&n.pubsub("chat:1")), Some("chat:1"));
        assert_eq!(n.channel_of("herald.control"), None);
        assert_eq!(n.publish_command(), "PUBLISH");
    }

    #[test]
    fn cluster_pubsub_names_share_the_keys_slot() {
        let n = Names::for_cluster("herald");
        assert_eq!(n.pubsub("chat:1"), "herald.client.{chat:1}");
        assert_eq!(n.channel_of(&n.pubsub("chat:1")), Some("chat:1"));
        // Braces inside a channel name survive the round trip.
        assert_eq!(n.channel_of(&n.pubsub("a}b{c")), Some("a}b{c"));
        assert_eq!(n.channel_of("herald.client.untagged"), None);
        assert_eq!(n.publish_command(), "SPUBLISH");
    }
}
