//! A raw protocol client for tests that need message sequences no driver sends: re-used
//! statement names, pipelines with errors, FunctionCall, several messages in one write.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One server message: its type byte and body.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// An ErrorResponse's or NoticeResponse's field, e.g. b'C' for the SQLSTATE.
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let [c, tail @ ..] = rest {
            if *c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if *c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// A DataRow's fields (text).
    pub fn fields(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let end = at + len as usize;
                out.push(Some(String::from_utf8_lossy(&b[at..end]).into_owned()));
                at = end;
            }
        }
        out
    }
}

/// A session speaking the protocol by hand (trust authentication only).
pub struct Wire {
    stream: TcpStream,
    out: BytesMut,
    inbox: BytesMut,
}

impl Wire {
    pub async fn connect(addr: SocketAddr, user: &str, database: &str) -> Wire {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut body = BytesMut::new();
        body.put_u32(196_608);
        for (k, v) in [("user", user), ("database", database)] {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut packet = BytesMut::new();
        packet.put_u32(body.len() as u32 + 4);
        packet.put_slice(&body);
        stream.write_all(&packet).await.unwrap();
        let mut wire = Wire {
            stream,
            out: BytesMut::new(),
            inbox: BytesMut::new(),
        };
        let startup = wire.until_ready().await;
        assert!(
            startup.iter().all(|m| m.tag != b'E'),
            "startup failed: {:?}",
            startup.iter().find_map(|m| m.field(b'M'))
        );
        wire
    }

    fn frame(&mut self, tag: u8, f: impl FnOnce(&mut BytesMut)) -> &mut Wire {
        let mut body = BytesMut::new();
        f(&mut body);
        self.out.put_u8(tag);
        self.out.put_u32(body.len() as u32 + 4);
        self.out.put_slice(&body);
        self
    }

    pub fn query(&mut self, sql: &str) -> &mut Wire {
        self.frame(b'Q', |b| cstr(b, sql))
    }

    pub fn parse(&mut self, name: &str, sql: &str) -> &mut Wire {
        self.frame(b'P', |b| {
            cstr(b, name);
            cstr(b, sql);
            b.put_u16(0);
        })
    }

    /// Bind with text parameters and text results.
    pub fn bind(&mut self, portal: &str, statement: &str, params: &[Option<&str>]) -> &mut Wire {
        self.frame(b'B', |b| {
            cstr(b, portal);
            cstr(b, statement);
            b.put_u16(0);
            b.put_u16(params.len() as u16);
            for p in params {
                match p {
                    Some(v) => {
                        b.put_i32(v.len() as i32);
                        b.put_slice(v.as_bytes());
                    }
                    None => b.put_i32(-1),
                }
            }
            b.put_u16(0);
        })
    }

    pub fn describe(&mut self, kind: u8, name: &str) -> &mut Wire {
        self.frame(b'D', |b| {
            b.put_u8(kind);
            cstr(b, name);
        })
    }

    pub fn execute(&mut self, portal: &str) -> &mut Wire {
        self.frame(b'E', |b| {
            cstr(b, portal);
            b.put_i32(0);
        })
    }

    pub fn close(&mut self, kind: u8, name: &str) -> &mut Wire {
        self.frame(b'C', |b| {
            b.put_u8(kind);
            cstr(b, name);
        })
    }

    pub fn sync(&mut self) -> &mut Wire {
        self.frame(b'S', |_| {})
    }

    /// FunctionCall with text arguments and a text result.
    pub fn function_call(&mut self, oid: u32, args: &[&str]) -> &mut Wire {
        self.frame(b'F', |b| {
            b.put_u32(oid);
            b.put_u16(0);
            b.put_u16(args.len() as u16);
            for a in args {
                b.put_i32(a.len() as i32);
                b.put_slice(a.as_bytes());
            }
            b.put_u16(0);
        })
    }

    pub fn copy_data(&mut self, data: &str) -> &mut Wire {
        self.frame(b'd', |b| b.put_slice(data.as_bytes()))
    }

    pub fn copy_done(&mut self) -> &mut Wire {
        self.frame(b'c', |_| {})
    }

    /// Sends everything queued in one write.
    pub async fn send(&mut self) {
        let out = self.out.split();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Reads one message.
    pub async fn read(&mut self) -> Message {
        loop {
            if self.inbox.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.inbox[1],
                    self.inbox[2],
                    self.inbox[3],
                    self.inbox[4],
                ]) as usize;
                if self.inbox.len() > len {
                    let frame = self.inbox.split_to(len + 1);
                    return Message {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    };
                }
            }
            let n = self.stream.read_buf(&mut self.inbox).await.unwrap();
            assert!(n > 0, "the proxy closed the session");
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self.read().await;
            let ready = message.tag == b'Z';
            messages.push(message);
            if ready {
                return messages;
            }
        }
    }

    /// Sends what is queued and reads `syncs` ReadyForQuery-terminated answers.
    pub async fn round_trip(&mut self, readies: usize) -> Vec<Message> {
        self.send().await;
        let mut all = Vec::new();
        for _ in 0..readies {
            all.extend(self.until_ready().await);
        }
        all
    }
}

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// The SQLSTATEs of the errors among `messages`.
pub fn error_codes(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.field(b'C'))
        .collect()
}

/// The tags of `messages`, as a string (e.g. "12DCZ").
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}
