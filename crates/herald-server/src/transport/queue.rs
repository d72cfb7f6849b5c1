//! The per-connection outbound frame queue.
//!
//! Most connections have at most one frame in flight (a reply, a ping, one publication), so the
//! first frame is stored inline and the overflow `VecDeque` is allocated only during bursts and
//! freed as soon as it empties: an idle connection holds no queue buffer. Counters are 32-bit
//! (`client.queue_max_size` is far below 4 GiB): this struct is part of every connection.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Frames waiting to be written, with the progress of a partially written head.
#[derive(Debug, Default)]
pub(crate) struct FrameQueue {
    /// The next frame to write. `None` implies `rest` is empty.
    head: Option<Bytes>,
    // Boxed on purpose: 8 bytes in every idle connection instead of 32.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Bytes>>>,
    /// Bytes of `head` already written.
    head_written: u32,
    /// Bytes not written yet.
    pending: u32,
}

impl FrameQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Bytes not written yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending as usize
    }

    /// Queues a frame; the caller bounds the total (well under 4 GiB).
    pub(crate) fn push(&mut self, frame: Bytes) {
        self.pending += frame.len() as u32;
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.get_or_insert_with(Default::default).push_back(frame);
        }
    }

    /// Drops everything queued (slow consumers are not flushed).
    pub(crate) fn clear(&mut self) {
        *self = FrameQueue::default();
    }

    /// Drops every frame not started yet, keeping the rest of one partly written: what is
    /// written after it (a close frame, a disconnect push) must not land inside a frame.
    pub(crate) fn drop_unstarted(&mut self) {
        let rest = match &self.head {
            Some(head) if self.head_written > 0 => Some(head.slice(self.head_written as usize..)),
            _ => None,
        };
        self.clear();
        if let Some(rest) = rest {
            self.push(rest);
        }
    }

    /// Fills `out` with the unwritten bytes, in order. Returns how many slices were filled.
    pub(crate) fn slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let Some(head) = &self.head else { return 0 };
        if out.is_empty() {
            return 0;
        }
        out[0] = IoSlice::new(&head[self.head_written as usize..]);
        let mut n = 1;
        for frame in self.rest.iter().flat_map(|r| r.iter()).take(out.len() - 1) {
            out[n] = IoSlice::new(frame);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as sent.
    pub(crate) fn consume(&mut self, mut written: usize) {
        self.pending -= written as u32;
        while written > 0 {
            let head = self.head.as_ref().expect("written bytes belong to queued frames");
            let left = head.len() - self.head_written as usize;
            if written < left {
                self.head_written += written as u32;
                return;
            }
            written -= left;
            self.head = self.rest.as_mut().and_then(|r| r.pop_front());
            self.head_written = 0;
        }
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
    }

    /// Takes every unwritten byte range as frames (used when closing).
    pub(crate) fn take_all(&mut self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(1 + self.rest.as_ref().map_or(0, |r| r.len()));
        if let Some(head) = self.head.take() {
            out.push(head.slice(self.head_written as usize..));
        }
        out.extend(self.rest.take().into_iter().flat_map(|r| r.into_iter()));
        self.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(q: &FrameQueue) -> Vec<Vec<u8>> {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.slices(&mut slices);
        slices[..n].iter().map(|s| s.to_vec()).collect()
    }

    #[test]
    fn single_frame_stays_inline_and_partial_writes_resume() {
        let mut q = FrameQueue::default();
        q.push(Bytes::from_static(b"hello"));
        assert!(q.rest.is_none());
        assert_eq!(q.pending(), 5);
        q.consume(2);
        assert_eq!(frames(&q), vec![b"llo".to_vec()]);
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn burst_overflow_is_freed_when_drained() {
        let mut q = FrameQueue::default();
        for f in [&b"ab"[..], b"cd", b"ef"] {
            q.push(Bytes::copy_from_slice(f));
        }
        assert_eq!(frames(&q), vec![b"ab".to_vec(), b"cd".to_vec(), b"ef".to_vec()]);
        q.consume(3);
        assert_eq!(frames(&q), vec![b"d".to_vec(), b"ef".to_vec()]);
        q.consume(3);
        assert!(q.is_empty());
        assert!(q.rest.is_none(), "overflow buffer freed");
    }

    #[test]
    fn take_all_keeps_unwritten_bytes_in_order() {
        let mut q = FrameQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.consume(1);
        let all: Vec<Vec<u8>> = q.take_all().iter().map(|b| b.to_vec()).collect();
        assert_eq!(all, vec![b"bc".to_vec(), b"de".to_vec()]);
        assert!(q.is_empty());
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn dropping_unstarted_frames_keeps_a_partly_written_one() {
        let mut q = FrameQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.drop_unstarted();
        assert!(q.is_empty(), "nothing was started");
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.consume(1);
        q.drop_unstarted();
        assert_eq!(frames(&q), vec![b"bc".to_vec()]);
        assert_eq!(q.pending(), 2);
    }

    #[test]
    fn slices_respect_the_limit() {
        let mut q = FrameQueue::default();
        for _ in 0..10 {
            q.push(Bytes::from_static(b"x"));
        }
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(q.slices(&mut slices), 4);
    }
}
