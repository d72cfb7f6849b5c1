//! Encode once, send many: a push shared by every subscriber, encoded lazily and at most once
//! per [`Envelope`] in use, then handed out as cheap `Bytes` clones.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::envelope::{self, Envelope};
use crate::protocol::Reply;

/// A reply (usually a publication push) shared by many connections.
#[derive(Debug)]
pub struct Prepared {
    reply: Reply,
    /// One slot per envelope, filled on first use: a node with only WebSocket JSON clients
    /// encodes once, and an unused slot costs its 40 bytes and nothing else.
    items: [OnceLock<Option<Bytes>>; Envelope::COUNT],
}

impl Prepared {
    pub fn new(reply: Reply) -> Self {
        Prepared { reply, items: Default::default() }
    }

    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// The complete item for `envelope`, encoded on first use. `None` when the payload cannot be
    /// sent in that envelope's encoding (the caller disconnects the client with 3506).
    pub fn encoded(&self, envelope: Envelope) -> Option<&Bytes> {
        self.items[envelope.index()].get_or_init(|| envelope::encode(envelope, &self.reply)).as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Publication, Push};

    fn push(data: &'static [u8]) -> Reply {
        Reply::push(Push {
            channel: "news".into(),
            publication: Some(Publication { data: Bytes::from_static(data), offset: 7, ..Default::default() }),
            ..Default::default()
        })
    }

    #[test]
    fn encodes_each_envelope_once() {
        let p = Prepared::new(push(br#"{"a":1}"#));
        let a = p.encoded(Envelope::WsJson).unwrap().clone();
        let b = p.encoded(Envelope::WsJson).unwrap().clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "same shared bytes");
        assert_eq!(&a[2..], br#"{"push":{"channel":"news","pub":{"data":{"a":1},"offset":7}}}"#);
        assert_eq!(a[0], 0x81);
        assert_eq!(p.encoded(Envelope::WsProtobuf).unwrap()[0], 0x82);
        let sse = p.encoded(Envelope::Sse).unwrap();
        assert_eq!(Some(sse), envelope::encode(Envelope::Sse, p.reply()).as_ref());
    }

    #[test]
    fn binary_payload_has_no_json_item() {
        let p = Prepared::new(push(&[0xff, 0x00]));
        assert!(p.encoded(Envelope::WsJson).is_none());
        assert!(p.encoded(Envelope::Sse).is_none());
        assert!(p.encoded(Envelope::WsProtobuf).is_some());
        assert!(p.encoded(Envelope::StreamProtobuf).is_some());
    }

    /// Allocated once per publication: the cache is eight `OnceLock<Option<Bytes>>` of 40 bytes.
    #[test]
    fn cache_size() {
        assert!(std::mem::size_of::<[OnceLock<Option<Bytes>>; Envelope::COUNT]>() <= 320);
    }
}
