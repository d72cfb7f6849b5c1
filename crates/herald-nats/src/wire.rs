//! What Herald writes on NATS: the core pub/sub envelope and the JetStream history record.
//! Both are protobuf (prost) with the hub's own `Publication` and `ClientInfo` inside.

use bytes::Bytes;
use herald_proto::{ClientInfo, Publication};
use prost::Message;

pub(crate) const KIND_PUBLICATION: u32 = 1;
pub(crate) const KIND_JOIN: u32 = 2;
pub(crate) const KIND_LEAVE: u32 = 3;

/// One message on a channel's core subject.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Envelope {
    #[prost(uint32, tag = "1")]
    pub(crate) kind: u32,
    #[prost(message, optional, tag = "2")]
    pub(crate) publication: Option<Publication>,
    #[prost(message, optional, tag = "3")]
    pub(crate) info: Option<ClientInfo>,
    /// Herald's `exclude_client`, as a UUID string; empty when none.
    #[prost(string, tag = "4")]
    pub(crate) exclude_client: String,
    /// The stream epoch when the publication has an offset.
    #[prost(string, tag = "5")]
    pub(crate) epoch: String,
}

impl Envelope {
    pub(crate) fn encode_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
}

/// One message of a channel's JetStream subject: a publication, or a position marker (no
/// publication) that fixes the epoch of an empty stream or keeps the position after a
/// history removal.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    #[prost(uint64, tag = "1")]
    pub(crate) offset: u64,
    #[prost(string, tag = "2")]
    pub(crate) epoch: String,
    /// Stream sequence of the channel's previous record (0: none); history reads walk back.
    #[prost(uint64, tag = "3")]
    pub(crate) prev: u64,
    /// Unix ms after which the publications up to this one are gone (history TTL).
    #[prost(int64, tag = "4")]
    pub(crate) expires_ms: i64,
    /// Unix ms after which the position is forgotten and the next publish starts a new epoch.
    #[prost(int64, tag = "5")]
    pub(crate) meta_expires_ms: i64,
    /// The channel's history size when this was written: older offsets are not served.
    #[prost(uint64, tag = "6")]
    pub(crate) size: u64,
    #[prost(string, tag = "7")]
    pub(crate) exclude_client: String,
    #[prost(message, optional, tag = "8")]
    pub(crate) publication: Option<Publication>,
    /// Unix ms when written: a record whose predecessor expired before this time starts the
    /// visible history afresh (the history TTL cleared everything in between).
    #[prost(int64, tag = "9")]
    pub(crate) written_ms: i64,
}

impl Record {
    pub(crate) fn encode_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
}

pub(crate) fn parse_exclude(s: &str) -> Option<uuid::Uuid> {
    if s.is_empty() { None } else { s.parse().ok() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_record_round_trip() {
        let p = Publication { data: Bytes::from_static(b"{}"), offset: 7, ..Default::default() };
        let e = Envelope {
            kind: KIND_PUBLICATION,
            publication: Some(p.clone()),
            epoch: "abcd".into(),
            ..Default::default()
        };
        assert_eq!(Envelope::decode(e.encode_bytes()).unwrap(), e);
        let r =
            Record { offset: 7, epoch: "abcd".into(), prev: 3, size: 10, publication: Some(p), ..Default::default() };
        assert_eq!(Record::decode(r.encode_bytes()).unwrap(), r);
        assert!(Envelope::decode(&b"\xff\xff"[..]).is_err());
        assert_eq!(parse_exclude(""), None);
        assert_eq!(parse_exclude("not-a-uuid"), None);
    }
}
