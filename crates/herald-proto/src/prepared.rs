//! Encode once, send many: a push shared by every subscriber, encoded lazily and at most once
//! per transport framing, then handed out as cheap `Bytes` clones.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::codec::{Encoding, encode_reply};
use crate::protocol::Reply;
use crate::ws;

/// How a transport frames one encoded reply on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// JSON in a WebSocket text frame.
    WsText,
    /// Protobuf (varint-delimited) in a WebSocket binary frame.
    WsBinary,
}

impl Framing {
    const COUNT: usize = 2;

    pub fn encoding(self) -> Encoding {
        match self {
            Framing::WsText => Encoding::Json,
            Framing::WsBinary => Encoding::Protobuf,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Encodes one reply as a complete transport frame. `None` when the reply cannot be encoded for
/// that framing (binary payload for a JSON client).
pub fn encode_framed(framing: Framing, reply: &Reply) -> Option<Bytes> {
    let mut buf = vec![0u8; ws::RESERVE];
    encode_reply(framing.encoding(), reply, &mut buf).ok()?;
    let opcode = match framing {
        Framing::WsText => ws::Opcode::Text,
        Framing::WsBinary => ws::Opcode::Binary,
    };
    Some(ws::frame_reserved(opcode, buf))
}

/// A reply (usually a publication push) shared by many connections.
#[derive(Debug)]
pub struct Prepared {
    reply: Reply,
    frames: [OnceLock<Option<Bytes>>; Framing::COUNT],
}

impl Prepared {
    pub fn new(reply: Reply) -> Self {
        Prepared { reply, frames: Default::default() }
    }

    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// The complete frame for `framing`, encoded on first use. `None` when the payload cannot be
    /// sent in that encoding (the caller disconnects the client with 3506).
    pub fn frame(&self, framing: Framing) -> Option<&Bytes> {
        self.frames[framing.index()].get_or_init(|| encode_framed(framing, &self.reply)).as_ref()
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
    fn encodes_each_framing_once() {
        let p = Prepared::new(push(br#"{"a":1}"#));
        let a = p.frame(Framing::WsText).unwrap().clone();
        let b = p.frame(Framing::WsText).unwrap().clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "same shared bytes");
        assert_eq!(&a[2..], br#"{"push":{"channel":"news","pub":{"data":{"a":1},"offset":7}}}"#);
        assert_eq!(a[0], 0x81);
        assert_eq!(p.frame(Framing::WsBinary).unwrap()[0], 0x82);
    }

    #[test]
    fn binary_payload_has_no_json_frame() {
        let p = Prepared::new(push(&[0xff, 0x00]));
        assert!(p.frame(Framing::WsText).is_none());
        assert!(p.frame(Framing::WsBinary).is_some());
    }
}
