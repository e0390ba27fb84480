//! The wire messages of a SASL login: the server's Authentication requests ('R') and the
//! client's SASLInitialResponse and SASLResponse (both 'p'; which one a 'p' is follows from
//! where the exchange is, so the caller picks the decoder).
//!
//! As in [`crate::protocol::messages`], `decode` takes the frame body (after the type byte
//! and length) and `encode` appends a whole frame; malformed bodies are a
//! [`MessageError`], never a guess.

use bytes::{BufMut, BytesMut};

pub use crate::protocol::messages::MessageError;
use crate::protocol::messages::{frame, put_cstr};

/// Authentication request codes (the i32 that opens an 'R' body).
const AUTH_OK: i32 = 0;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// An 'R' message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationSASL (10): the mechanisms the server offers, preferred first.
    Sasl(Vec<String>),
    /// AuthenticationSASLContinue (11): server-first-message.
    SaslContinue(Vec<u8>),
    /// AuthenticationSASLFinal (12): server-final-message.
    SaslFinal(Vec<u8>),
    /// Any other request (cleartext 3, md5 5, GSS/SSPI 7-9, ...), body not decoded: the
    /// caller refuses it or relays it.
    Other(i32),
}

impl Authentication {
    pub fn decode(body: &[u8]) -> Result<Authentication, MessageError> {
        const WHAT: &str = "Authentication";
        let (code, rest) = split_i32(body, WHAT)?;
        match code {
            AUTH_OK => {
                finish(rest, WHAT)?;
                Ok(Authentication::Ok)
            }
            AUTH_SASL => {
                let mut mechanisms = Vec::new();
                let mut rest = rest;
                loop {
                    let (name, after) = split_cstr(rest, "AuthenticationSASL")?;
                    rest = after;
                    if name.is_empty() {
                        break;
                    }
                    mechanisms.push(name.to_owned());
                }
                finish(rest, "AuthenticationSASL")?;
                Ok(Authentication::Sasl(mechanisms))
            }
            AUTH_SASL_CONTINUE => Ok(Authentication::SaslContinue(rest.to_vec())),
            AUTH_SASL_FINAL => Ok(Authentication::SaslFinal(rest.to_vec())),
            other => Ok(Authentication::Other(other)),
        }
    }

    /// Appends the frame. [`Authentication::Other`] is written as its code alone, which
    /// is the whole message only for codes without a payload (e.g. cleartext, 3).
    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'R', |out| match self {
            Authentication::Ok => out.put_i32(AUTH_OK),
            Authentication::Sasl(mechanisms) => {
                out.put_i32(AUTH_SASL);
                for name in mechanisms {
                    put_cstr(out, name);
                }
                out.put_u8(0);
            }
            Authentication::SaslContinue(data) => {
                out.put_i32(AUTH_SASL_CONTINUE);
                out.put_slice(data);
            }
            Authentication::SaslFinal(data) => {
                out.put_i32(AUTH_SASL_FINAL);
                out.put_slice(data);
            }
            Authentication::Other(code) => out.put_i32(*code),
        });
    }
}

/// 'p' opening a SASL exchange: the chosen mechanism and, usually, client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    pub mechanism: String,
    /// `None` when the length is -1: no initial response (SCRAM clients always send one).
    pub data: Option<Vec<u8>>,
}

impl SaslInitialResponse {
    pub fn decode(body: &[u8]) -> Result<SaslInitialResponse, MessageError> {
        const WHAT: &str = "SASLInitialResponse";
        let (mechanism, rest) = split_cstr(body, WHAT)?;
        let (len, rest) = split_i32(rest, WHAT)?;
        let data = match len {
            -1 => None,
            len if len < 0 => return Err(MessageError::InvalidValueLength(WHAT, len)),
            len => {
                let len = len as usize;
                if rest.len() < len {
                    return Err(MessageError::Truncated(WHAT));
                }
                finish(&rest[len..], WHAT)?;
                Some(rest[..len].to_vec())
            }
        };
        if data.is_none() {
            finish(rest, WHAT)?;
        }
        Ok(SaslInitialResponse {
            mechanism: mechanism.to_owned(),
            data,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'p', |out| {
            put_cstr(out, &self.mechanism);
            match &self.data {
                Some(data) => {
                    out.put_i32(data.len() as i32);
                    out.put_slice(data);
                }
                None => out.put_i32(-1),
            }
        });
    }
}

/// 'p' during a SASL exchange: the next client message (client-final-message for SCRAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslResponse {
    pub data: Vec<u8>,
}

impl SaslResponse {
    pub fn decode(body: &[u8]) -> SaslResponse {
        SaslResponse {
            data: body.to_vec(),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        frame(out, b'p', |out| out.put_slice(&self.data));
    }
}

// Decoding helpers for the few shapes these bodies have (i32, C string, nothing after).

fn split_i32<'a>(body: &'a [u8], what: &'static str) -> Result<(i32, &'a [u8]), MessageError> {
    let (head, rest) = body
        .split_first_chunk::<4>()
        .ok_or(MessageError::Truncated(what))?;
    Ok((i32::from_be_bytes(*head), rest))
}

fn split_cstr<'a>(body: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), MessageError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(MessageError::Truncated(what))?;
    let s = std::str::from_utf8(&body[..end]).map_err(|_| MessageError::NotUtf8(what))?;
    Ok((s, &body[end + 1..]))
}

fn finish(rest: &[u8], what: &'static str) -> Result<(), MessageError> {
    match rest.len() {
        0 => Ok(()),
        n => Err(MessageError::Trailing(what, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    /// The body of a frame after checking its tag and length.
    fn body(frame: &[u8], tag: u8) -> &[u8] {
        assert_eq!(frame[0], tag);
        let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 1);
        &frame[5..]
    }

    #[test]
    fn authentication_sasl_bytes_and_round_trip() {
        let msg = Authentication::Sasl(vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]);
        let frame = encoded(|out| msg.encode(out));
        assert_eq!(
            frame,
            b"R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
        );
        assert_eq!(Authentication::decode(body(&frame, b'R')), Ok(msg));
    }

    #[test]
    fn authentication_messages_round_trip() {
        for msg in [
            Authentication::Ok,
            Authentication::SaslContinue(b"r=abc,s=c2FsdA==,i=4096".to_vec()),
            Authentication::SaslFinal(b"v=abc".to_vec()),
            Authentication::Other(5),
        ] {
            let frame = encoded(|out| msg.encode(out));
            assert_eq!(Authentication::decode(body(&frame, b'R')), Ok(msg));
        }
        assert_eq!(
            encoded(|out| Authentication::Ok.encode(out)),
            b"R\0\0\0\x08\0\0\0\0"
        );
    }

    #[test]
    fn malformed_authentication_bodies() {
        assert_eq!(
            Authentication::decode(b"\0\0"),
            Err(MessageError::Truncated("Authentication"))
        );
        assert_eq!(
            Authentication::decode(b"\0\0\0\0x"),
            Err(MessageError::Trailing("Authentication", 1))
        );
        assert_eq!(
            Authentication::decode(b"\0\0\0\x0aSCRAM-SHA-256\0"),
            Err(MessageError::Truncated("AuthenticationSASL"))
        );
        assert_eq!(
            Authentication::decode(b"\0\0\0\x0aSCRAM-SHA-256\0\0x"),
            Err(MessageError::Trailing("AuthenticationSASL", 1))
        );
        assert_eq!(
            Authentication::decode(b"\0\0\0\x0a\xff\0\0"),
            Err(MessageError::NotUtf8("AuthenticationSASL"))
        );
    }

    #[test]
    fn sasl_initial_response_bytes_and_round_trip() {
        let msg = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: Some(b"n,,n=,r=abc".to_vec()),
        };
        let frame = encoded(|out| msg.encode(out));
        assert_eq!(frame, b"p\0\0\0\x21SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc");
        assert_eq!(SaslInitialResponse::decode(body(&frame, b'p')), Ok(msg));
        let empty = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: None,
        };
        let frame = encoded(|out| empty.encode(out));
        assert_eq!(SaslInitialResponse::decode(body(&frame, b'p')), Ok(empty));
    }

    #[test]
    fn malformed_sasl_initial_responses() {
        const WHAT: &str = "SASLInitialResponse";
        let cases: [(&[u8], MessageError); 5] = [
            (b"SCRAM-SHA-256", MessageError::Truncated(WHAT)),
            (b"SCRAM-SHA-256\0\0\0", MessageError::Truncated(WHAT)),
            (
                b"SCRAM-SHA-256\0\0\0\0\x05abc",
                MessageError::Truncated(WHAT),
            ),
            (
                b"SCRAM-SHA-256\0\0\0\0\x01abc",
                MessageError::Trailing(WHAT, 2),
            ),
            (
                b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
                MessageError::InvalidValueLength(WHAT, -2),
            ),
        ];
        for (body, error) in cases {
            assert_eq!(SaslInitialResponse::decode(body), Err(error));
        }
        assert_eq!(
            SaslInitialResponse::decode(b"SCRAM-SHA-256\0\xff\xff\xff\xffx"),
            Err(MessageError::Trailing(WHAT, 1))
        );
    }

    #[test]
    fn sasl_response_round_trip() {
        let msg = SaslResponse {
            data: b"c=biws,r=abc,p=xyz".to_vec(),
        };
        let frame = encoded(|out| msg.encode(out));
        assert_eq!(&frame[..5], b"p\0\0\0\x16");
        assert_eq!(SaslResponse::decode(body(&frame, b'p')), msg);
    }
}
