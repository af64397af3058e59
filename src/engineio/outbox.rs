//! A session's outbound queue: frames in the order they were queued, and the bytes they hold.
//!
//! The byte count is kept next to the frames, so bounding the queue in bytes costs an addition per
//! frame queued and a subtraction per frame taken, under the session's lock that the queue already
//! needs (no atomics shared across sessions). Reading goes through `Deref` to the frames; every change
//! goes through the methods here, which keep the count true.

use std::collections::VecDeque;
use std::ops::Deref;

use super::codec::Frame;

/// The frames waiting to be written to one client, with their total size.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Deref for Outbox {
    type Target = VecDeque<Frame>;

    fn deref(&self) -> &VecDeque<Frame> {
        &self.frames
    }
}

impl Outbox {
    /// The bytes the queued frames hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues `frame` last.
    pub(crate) fn push_back(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Queues `frame` first.
    pub(crate) fn push_front(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.frames.push_front(frame);
    }

    /// Takes the first `n` frames (fewer if fewer are queued).
    pub(crate) fn drain_front(
        &mut self,
        n: usize,
    ) -> std::collections::vec_deque::Drain<'_, Frame> {
        let n = n.min(self.frames.len());
        let taken: usize = self.frames.iter().take(n).map(Frame::len).sum();
        self.bytes -= taken;
        self.frames.drain(..n)
    }

    /// Takes every frame, and the buffer with them, leaving an empty queue that holds no memory.
    /// Returns the frames and their size.
    pub(crate) fn take_all(&mut self) -> (VecDeque<Frame>, usize) {
        let bytes = std::mem::take(&mut self.bytes);
        (std::mem::take(&mut self.frames), bytes)
    }

    /// Drops every frame and frees the queue's buffer.
    pub(crate) fn clear(&mut self) {
        drop(self.take_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_through_every_change() {
        let mut outbox = Outbox::default();
        outbox.push_back(Frame::message("hello")); // 6 bytes
        outbox.push_back(Frame::Binary(bytes::Bytes::from_static(&[1, 2, 3])));
        outbox.push_front(Frame::message("")); // 1 byte
        assert_eq!(outbox.bytes(), 10);
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.drain_front(2).count(), 2);
        assert_eq!(outbox.bytes(), 3);
        assert_eq!(outbox.drain_front(10).count(), 1);
        assert_eq!(outbox.bytes(), 0);
        outbox.push_back(Frame::message("abc"));
        let (frames, bytes) = outbox.take_all();
        assert_eq!((frames.len(), bytes), (1, 4));
        assert_eq!((outbox.len(), outbox.bytes(), outbox.capacity()), (0, 0, 0));
        outbox.push_back(Frame::message("abc"));
        outbox.clear();
        assert_eq!((outbox.len(), outbox.bytes(), outbox.capacity()), (0, 0, 0));
    }
}
