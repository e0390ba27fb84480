//! One direction of a session: read whatever the peer has sent, find the frame boundaries,
//! and forward the bytes. Writing once per read means the relay flushes exactly when the
//! sender did (Postgres flushes at ReadyForQuery, CopyIn/OutResponse and Flush), holds at
//! most one read buffer per direction, and never waits for bytes that are not coming.
//!
//! A [`Filter`] may ask to see whole frames of some types and replace them (to encrypt or
//! decrypt values); all other bytes pass through without being copied.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::filter::{Filter, FilterError};
use crate::protocol::frame::{FrameError, FrameScanner, Header};

/// Why a pump stopped.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// Chunks handed to one vectored write (on the stack: no allocation per write).
const WRITE_SLICES: usize = 32;

pub struct Pump<R, W, F> {
    reader: R,
    writer: W,
    filter: F,
    /// Bytes read and not yet scanned. When `held` is set, a held frame starts at buf[0].
    buf: BytesMut,
    held: Option<Header>,
    /// Scanned bytes waiting to be written, in order.
    queue: VecDeque<Bytes>,
    read_size: usize,
    scanner: FrameScanner,
    forwarded: u64,
    /// A held frame whose filter work runs on the blocking pool, and that work.
    prepared: Option<(Bytes, tokio::task::JoinHandle<()>)>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin, F: Filter> Pump<R, W, F> {
    pub fn new(reader: R, writer: W, filter: F, max_frame_len: u32, read_size: usize) -> Self {
        Pump {
            reader,
            writer,
            filter,
            buf: BytesMut::new(),
            held: None,
            queue: VecDeque::new(),
            read_size,
            scanner: FrameScanner::new(max_frame_len),
            forwarded: 0,
            prepared: None,
        }
    }

    /// Relays until the reader reaches end of stream (Ok) or something fails. Cancel-safe:
    /// if the future is dropped, the pump's state says exactly what was forwarded.
    pub async fn run(&mut self) -> Result<(), PumpError> {
        loop {
            self.write_queue().await?;
            if let Some((_, job)) = self.prepared.as_mut() {
                // Awaiting by reference keeps run() cancel-safe. A job that panicked left
                // its result unset: rewrite then does the work itself.
                let _ = job.await;
            }
            if let Some((frame, _)) = self.prepared.take() {
                self.push_rewritten(frame)?;
                self.process()?;
                continue;
            }
            if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
                self.buf.reserve(self.read_size);
            }
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(PumpError::Read)?;
            if n == 0 {
                return Ok(());
            }
            self.process()?;
        }
    }

    /// Moves every complete piece of `buf` to the write queue, through the filter.
    fn process(&mut self) -> Result<(), PumpError> {
        loop {
            if let Some(header) = self.held {
                if self.buf.len() < header.frame_size() {
                    return Ok(()); // the rest of the held frame is still to come
                }
                self.held = None;
                let frame = self.buf.split_to(header.frame_size()).freeze();
                if let Some(job) = self.filter.prepare(&frame) {
                    self.prepared = Some((frame, tokio::task::spawn_blocking(job)));
                    return Ok(()); // run() awaits the job, then comes back here
                }
                self.push_rewritten(frame)?;
                continue;
            }
            let filter = &mut self.filter;
            let (n, held) = self.scanner.scan_until(&self.buf, |header, bytes| {
                filter.on_frame(header, bytes);
                filter.holds(header.tag)
            })?;
            if n > 0 {
                self.queue.push_back(self.buf.split_to(n).freeze());
            }
            match held {
                Some(header) => self.held = Some(header),
                None => return Ok(()),
            }
        }
    }

    fn push_rewritten(&mut self, frame: Bytes) -> Result<(), PumpError> {
        let replacement = self.filter.rewrite(frame)?;
        if !replacement.is_empty() {
            self.queue.push_back(replacement);
        }
        Ok(())
    }

    /// Writes the queue with vectored writes, then flushes (a TLS stream holds records
    /// until then; for a socket it is a no-op); each step is cancel-safe.
    async fn write_queue(&mut self) -> Result<(), PumpError> {
        if self.queue.is_empty() {
            return Ok(());
        }
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let count = self.queue.len().min(WRITE_SLICES);
            for (slice, chunk) in slices.iter_mut().zip(&self.queue) {
                *slice = IoSlice::new(chunk);
            }
            let mut n = self
                .writer
                .write_vectored(&slices[..count])
                .await
                .map_err(PumpError::Write)?;
            if n == 0 {
                return Err(PumpError::Write(std::io::ErrorKind::WriteZero.into()));
            }
            self.forwarded += n as u64;
            while n > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        self.writer.flush().await.map_err(PumpError::Write)
    }

    /// Finishes forwarding what was read, then sends `frame` of our own if the stream is at
    /// a frame boundary (a frame cannot be inserted into the middle of another).
    pub async fn finish_with(&mut self, frame: &[u8]) -> Result<(), PumpError> {
        self.write_queue().await?;
        if self.scanner.at_boundary() {
            self.writer
                .write_all(frame)
                .await
                .map_err(PumpError::Write)?;
            self.writer.flush().await.map_err(PumpError::Write)?;
        }
        Ok(())
    }

    pub fn filter(&self) -> &F {
        &self.filter
    }

    /// Bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Tags(Vec<u8>);

    impl Filter for Tags {
        fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
            self.0.push(header.tag);
        }
    }

    /// Replaces every 'D' frame body with its upper-case version.
    struct Upper;

    impl Filter for Upper {
        fn holds(&self, tag: u8) -> bool {
            tag == b'D'
        }

        fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
            Ok(Bytes::from(frame.to_ascii_uppercase()))
        }
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    async fn relay<F: Filter + Send + 'static>(
        filter: F,
        input: Vec<u8>,
        chunk: usize,
    ) -> (Vec<u8>, F) {
        let (mut src, reader) = tokio::io::duplex(64);
        let (writer, mut dst) = tokio::io::duplex(1 << 16);
        let mut pump = Pump::new(reader, writer, filter, 1 << 20, 16);
        let feeder = tokio::spawn(async move {
            for piece in input.chunks(chunk) {
                src.write_all(piece).await.unwrap();
            }
        });
        let run = tokio::spawn(async move {
            pump.run().await.unwrap();
            pump
        });
        feeder.await.unwrap();
        let pump = run.await.unwrap();
        let mut out = vec![0; pump.forwarded() as usize];
        dst.read_exact(&mut out).await.unwrap();
        (out, pump.filter)
    }

    #[tokio::test]
    async fn forwards_frames_split_across_reads() {
        let mut stream = frame(b'Q', b"SELECT 1\0");
        stream.extend(frame(b'X', b""));
        let (out, tags) = relay(Tags::default(), stream.clone(), 3).await;
        assert_eq!(out, stream);
        assert_eq!(tags.0, b"QX");
    }

    #[tokio::test]
    async fn held_frames_are_replaced_in_order() {
        for chunk in [1, 5, 64] {
            let mut stream = frame(b'T', b"head");
            stream.extend(frame(b'D', b"row one"));
            stream.extend(frame(b'D', b"row two"));
            stream.extend(frame(b'C', b"done"));
            let mut expected = frame(b'T', b"head");
            expected.extend(frame(b'D', b"ROW ONE"));
            expected.extend(frame(b'D', b"ROW TWO"));
            expected.extend(frame(b'C', b"done"));
            let (out, _) = relay(Upper, stream, chunk).await;
            assert_eq!(out, expected, "chunk size {chunk}");
        }
    }

    /// Upper-cases 'D' frames after a job on the blocking pool that waits for a signal.
    struct Offloaded {
        release: Option<std::sync::mpsc::Receiver<()>>,
    }

    impl Filter for Offloaded {
        fn holds(&self, tag: u8) -> bool {
            tag == b'D'
        }

        fn prepare(&mut self, _frame: &Bytes) -> Option<crate::protocol::filter::BlockingJob> {
            let release = self.release.take()?;
            Some(Box::new(move || {
                let _ = release.recv();
            }))
        }

        fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
            Ok(Bytes::from(frame.to_ascii_uppercase()))
        }
    }

    #[tokio::test]
    async fn prepared_work_runs_off_the_session_thread_and_keeps_order() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stream = frame(b'Q', b"before");
        stream.extend(frame(b'D', b"slow"));
        stream.extend(frame(b'Q', b"after"));
        let mut expected = frame(b'Q', b"before");
        expected.extend(frame(b'D', b"SLOW"));
        expected.extend(frame(b'Q', b"after"));
        let filter = Offloaded { release: Some(rx) };
        // This single-threaded runtime must stay free while the job waits: the task that
        // releases it runs on the same thread.
        let releaser = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
        });
        let relayed =
            tokio::time::timeout(std::time::Duration::from_secs(20), relay(filter, stream, 7))
                .await
                .expect("the job blocked the session's thread");
        releaser.await.unwrap();
        assert_eq!(relayed.0, expected);
    }

    #[tokio::test]
    async fn malformed_frame_stops_the_pump() {
        let (mut src, reader) = tokio::io::duplex(64);
        let (writer, _dst) = tokio::io::duplex(64);
        let mut pump = Pump::new(reader, writer, Tags::default(), 100, 64);
        src.write_all(&[b'Q', 0, 0, 1, 0]).await.unwrap();
        let err = pump.run().await.unwrap_err();
        assert!(matches!(err, PumpError::Frame(FrameError::TooLarge { .. })));
    }
}
