//! Stream positions in uni_sse event ids, for `Last-Event-ID`.
//!
//! Every uni_sse event that moves a channel's position (the connect push, publications with an
//! offset) gets an `id:` line holding the position of *every* positioned channel of the
//! connection at that event, as compact JSON: `[["news",5,"e1"],["chat",2,""]]` (channel,
//! offset, epoch; from the connect push's results and the publications, which name their
//! epoch; an epoch not known is empty, which recovery treats as "any epoch"). JSON
//! escapes control characters, so an id never holds the CR, LF or NUL SSE cannot carry. When
//! the stream is cut, `EventSource` (or any client that keeps the last id) reconnects with
//! `Last-Event-ID`, and the positions become `recover` requests in the connect's `subs`, exactly
//! as an SDK reconnect recovers: nothing lost, nothing twice.
//!
//! The id line is a separate small buffer queued together with the shared event bytes (one
//! allocation per delivery on this transport only; the event itself stays encoded once).

use herald_proto::{ConnectRequest, Push, SubscribeRequest};

/// Positions of one connection's channels, in the order they were first seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Positions {
    entries: Vec<(String, u64, String)>,
}

impl Positions {
    /// Positions from the connect push: each subscription's position after its recovered
    /// publications (the result's offset, or the last recovered publication's).
    pub fn from_connect(push: &Push) -> Positions {
        let mut p = Positions::default();
        if let Some(connect) = &push.connect {
            for (channel, sub) in &connect.subs {
                if sub.epoch.is_empty() && sub.offset == 0 && !sub.positioned && !sub.recoverable {
                    continue;
                }
                let last = sub.publications.iter().map(|p| p.offset).max().unwrap_or(0);
                p.entries.push((channel.clone(), sub.offset.max(last), sub.epoch.clone()));
            }
        }
        p
    }

    /// A publication in `channel` at `offset` (of stream `epoch`, when the publication names
    /// it) was queued. Returns whether a position moved.
    pub fn advance(&mut self, channel: &str, offset: u64, epoch: &str) -> bool {
        if offset == 0 {
            return false;
        }
        match self.entries.iter_mut().find(|(c, _, _)| c == channel) {
            Some(entry) => {
                entry.1 = offset;
                if !epoch.is_empty() && entry.2 != epoch {
                    entry.2 = epoch.to_owned();
                }
            }
            None => self.entries.push((channel.to_owned(), offset, epoch.to_owned())),
        }
        true
    }

    /// Applies a queued push (a publication) and says whether it moved a position.
    pub fn apply(&mut self, push: &Push) -> bool {
        match &push.publication {
            Some(p) => self.advance(&push.channel, p.offset, &p.epoch),
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `id:` line (with its `\n`) for the current positions.
    pub fn id_line(&self) -> Vec<u8> {
        let mut line = b"id: ".to_vec();
        serde_json::to_writer(&mut line, &self.entries).expect("strings and numbers serialize");
        line.push(b'\n');
        line
    }

    /// Parses a `Last-Event-ID` value written by [`Positions::id_line`].
    pub fn parse(id: &str) -> Option<Positions> {
        let entries: Vec<(String, u64, String)> = serde_json::from_str(id).ok()?;
        Some(Positions { entries })
    }

    /// Turns the positions into recovery requests in the connect's `subs` (a position the
    /// client named itself in `subs` wins).
    pub fn into_request(self, req: &mut ConnectRequest) {
        for (channel, offset, epoch) in self.entries {
            let sub: &mut SubscribeRequest = req.subs.entry(channel).or_default();
            if !sub.recover {
                sub.recover = true;
                sub.offset = offset;
                sub.epoch = epoch;
            }
        }
    }

    #[cfg(test)]
    fn as_map(&self) -> std::collections::BTreeMap<String, (u64, String)> {
        self.entries.iter().map(|(c, o, e)| (c.clone(), (*o, e.clone()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_proto::{Connect, Publication, SubscribeResult};

    use super::*;

    fn connect_push() -> Push {
        let mut subs = BTreeMap::new();
        subs.insert(
            "news".to_owned(),
            SubscribeResult {
                recoverable: true,
                positioned: true,
                epoch: "e1".into(),
                offset: 3,
                ..Default::default()
            },
        );
        subs.insert(
            "chat".to_owned(),
            SubscribeResult {
                recoverable: true,
                positioned: true,
                epoch: "e2".into(),
                offset: 1,
                publications: vec![Publication { offset: 2, ..Default::default() }],
                ..Default::default()
            },
        );
        subs.insert("plain".to_owned(), SubscribeResult::default());
        Push { connect: Some(Connect { subs, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn ids_round_trip_into_recovery_requests() {
        let mut p = Positions::from_connect(&connect_push());
        assert_eq!(p.as_map().len(), 2, "unpositioned channels have no position");
        assert!(p.advance("news", 4, ""));
        assert!(!p.advance("news", 0, ""));
        assert!(p.advance("new", 1, "e9"));
        let line = p.id_line();
        assert!(line.starts_with(b"id: ") && line.ends_with(b"\n"));
        let id = std::str::from_utf8(&line[4..line.len() - 1]).unwrap();
        assert!(!id.contains(['\r', '\n', '\0']));
        let back = Positions::parse(id).unwrap();
        assert_eq!(back, p);
        let mut req = ConnectRequest::default();
        req.subs.insert(
            "chat".into(),
            SubscribeRequest { recover: true, offset: 1, epoch: "x".into(), ..Default::default() },
        );
        back.into_request(&mut req);
        let news = &req.subs["news"];
        assert_eq!((news.recover, news.offset, news.epoch.as_str()), (true, 4, "e1"));
        assert_eq!(req.subs["chat"].epoch, "x", "the client's own position wins");
        assert_eq!((req.subs["new"].offset, req.subs["new"].epoch.as_str()), (1, "e9"));
        assert_eq!(Positions::parse("garbage"), None);
    }

    #[test]
    fn control_characters_in_channel_names_are_escaped() {
        let mut p = Positions::default();
        p.advance("a\nb\r\0", 1, "");
        let line = p.id_line();
        assert_eq!(line.iter().filter(|b| matches!(b, b'\r' | b'\n' | 0)).count(), 1, "only the final LF");
    }
}
