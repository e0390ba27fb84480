//! One direction of a session: read whatever the peer has sent, find the frame boundaries,
//! and forward the bytes. Writing once per read means the relay flushes exactly when the
//! sender did (Postgres flushes at ReadyForQuery, CopyIn/OutResponse and Flush), holds at
//! most one read buffer per direction, and never waits for bytes that are not coming.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::frame::{FrameError, FrameScanner, Header};

/// What one direction needs to notice about the frames passing through it.
pub trait Observer {
    /// Called for every frame header. `bytes` starts at the header; the body may be cut
    /// short when the frame spans several reads.
    fn on_frame(&mut self, header: Header, bytes: &[u8]);
}

/// Why a pump stopped.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

pub struct Pump<R, W, O> {
    reader: R,
    writer: W,
    observer: O,
    /// `buf[..ready]` is scanned and waiting to be written; the rest is an incomplete header.
    buf: BytesMut,
    ready: usize,
    read_size: usize,
    scanner: FrameScanner,
    forwarded: u64,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin, O: Observer> Pump<R, W, O> {
    pub fn new(reader: R, writer: W, observer: O, max_frame_len: u32, read_size: usize) -> Self {
        Pump {
            reader,
            writer,
            observer,
            buf: BytesMut::new(),
            ready: 0,
            read_size,
            scanner: FrameScanner::new(max_frame_len),
            forwarded: 0,
        }
    }

    /// Relays until the reader reaches end of stream (Ok) or something fails. Cancel-safe:
    /// if the future is dropped, the pump's state says exactly what was forwarded.
    pub async fn run(&mut self) -> Result<(), PumpError> {
        loop {
            self.write_ready().await?;
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
            let observer = &mut self.observer;
            self.ready += self
                .scanner
                .scan(&self.buf[self.ready..], |header, bytes| {
                    observer.on_frame(header, bytes)
                })?;
        }
    }

    /// Writes the scanned bytes; each `write` is cancel-safe, so progress is never lost.
    async fn write_ready(&mut self) -> Result<(), PumpError> {
        while self.ready > 0 {
            let n = self
                .writer
                .write(&self.buf[..self.ready])
                .await
                .map_err(PumpError::Write)?;
            if n == 0 {
                return Err(PumpError::Write(std::io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
            self.ready -= n;
            self.forwarded += n as u64;
        }
        Ok(())
    }

    /// Finishes forwarding what was read, then sends `frame` of our own if the stream is at
    /// a frame boundary (a frame cannot be inserted into the middle of another).
    pub async fn finish_with(&mut self, frame: &[u8]) -> Result<(), PumpError> {
        self.write_ready().await?;
        if self.scanner.at_boundary() {
            self.writer
                .write_all(frame)
                .await
                .map_err(PumpError::Write)?;
            self.writer.flush().await.map_err(PumpError::Write)?;
        }
        Ok(())
    }

    pub fn observer(&self) -> &O {
        &self.observer
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

    impl Observer for Tags {
        fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
            self.0.push(header.tag);
        }
    }

    #[tokio::test]
    async fn forwards_frames_split_across_reads() {
        let (mut src, reader) = tokio::io::duplex(64);
        let (writer, mut dst) = tokio::io::duplex(1 << 16);
        let mut pump = Pump::new(reader, writer, Tags::default(), 1 << 20, 16);
        let mut stream = vec![b'Q', 0, 0, 0, 13];
        stream.extend_from_slice(b"SELECT 1\0");
        stream.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        let sent = stream.clone();
        let feeder = tokio::spawn(async move {
            for chunk in stream.chunks(3) {
                src.write_all(chunk).await.unwrap();
            }
        });
        let run = tokio::spawn(async move {
            pump.run().await.unwrap();
            pump
        });
        feeder.await.unwrap();
        let pump = run.await.unwrap();
        assert_eq!(pump.observer().0, b"QX");
        assert_eq!(pump.forwarded(), sent.len() as u64);
        let mut got = vec![0; sent.len()];
        dst.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
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
