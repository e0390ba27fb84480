//! Packets of the startup phase, which carry no type byte: SSLRequest, GSSENCRequest,
//! CancelRequest and the StartupMessage itself (length, then a 4-byte code).

use bytes::Bytes;

pub const SSL_REQUEST_CODE: u32 = 80877103;
/// The whole SSLRequest packet: length 8, then the code.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
pub const GSSENC_REQUEST_CODE: u32 = 80877104;
pub const CANCEL_REQUEST_CODE: u32 = 80877102;
/// Postgres refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET_LEN: u32 = 10_000;

/// One packet of the startup phase, with its raw bytes where they are forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    /// Forwarded untouched to the upstream on a fresh connection.
    CancelRequest {
        raw: Bytes,
    },
    /// Protocol 3.x; forwarded untouched.
    Startup {
        raw: Bytes,
        version: u32,
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a startup parameter such as `user` or `database`.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// libpq 17's `sslnegotiation=direct` opens with a TLS ClientHello (record type 0x16).
    #[error("the client started TLS directly (sslnegotiation=direct), but pgcloak has no `tls` section configured; configure one, or connect with sslnegotiation=postgres")]
    DirectTls,
    #[error("invalid startup packet length {0}")]
    InvalidLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: pgcloak supports protocol 3")]
    UnsupportedProtocol { major: u32, minor: u32 },
    #[error("invalid cancel request length {0}")]
    InvalidCancel(u32),
    #[error("malformed startup parameters")]
    MalformedParams,
}

/// Checks the length prefix of a startup-phase packet (it counts itself).
pub fn check_len(len: u32) -> Result<usize, StartupError> {
    // A startup length never exceeds 10000, so its first byte is 0; 0x16 opens a TLS record.
    if len >> 24 == 0x16 {
        return Err(StartupError::DirectTls);
    }
    if !(8..=MAX_STARTUP_PACKET_LEN).contains(&len) {
        return Err(StartupError::InvalidLength(len));
    }
    Ok(len as usize)
}

/// A CancelRequest for the backend whose BackendKeyData body (pid + secret) is `key`.
pub fn cancel_request(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&(8 + key.len() as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Parses a whole startup-phase packet, length prefix included.
pub fn parse(raw: Bytes) -> Result<StartupPacket, StartupError> {
    // Checked access: a caller may hand over fewer than the 8 bytes of length and code.
    let Some(header) = raw.get(..8) else {
        let len = raw.get(..4).map_or(raw.len() as u32, be_u32);
        return Err(StartupError::InvalidLength(len));
    };
    let len = check_len(be_u32(&header[0..4]))?;
    if raw.len() != len {
        return Err(StartupError::InvalidLength(len as u32));
    }
    let code = be_u32(&header[4..8]);
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            // Protocol 3.2 allows cancel keys of up to 256 bytes; 3.0 uses 4.
            if !(16..=8 + 4 + 256).contains(&len) {
                return Err(StartupError::InvalidCancel(len as u32));
            }
            Ok(StartupPacket::CancelRequest { raw })
        }
        version if version >> 16 == 3 => {
            let params = parse_params(&raw[8..])?;
            Ok(StartupPacket::Startup {
                raw,
                version,
                params,
            })
        }
        version => Err(StartupError::UnsupportedProtocol {
            major: version >> 16,
            minor: version & 0xffff,
        }),
    }
}

/// Name/value C strings, terminated by an empty name.
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let name = take_cstr(&mut body)?;
        if name.is_empty() {
            return Ok(params);
        }
        let value = take_cstr(&mut body)?;
        params.push((name, value));
    }
}

fn take_cstr(body: &mut &[u8]) -> Result<String, StartupError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::MalformedParams)?;
    let s = String::from_utf8_lossy(&body[..end]).into_owned();
    *body = &body[end + 1..];
    Ok(s)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Bytes {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(body);
        Bytes::from(out)
    }

    #[test]
    fn ssl_and_gssenc_requests() {
        assert_eq!(
            parse(packet(SSL_REQUEST_CODE, b"")),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse(packet(GSSENC_REQUEST_CODE, b"")),
            Ok(StartupPacket::GssEncRequest)
        );
    }

    #[test]
    fn startup_message_with_params() {
        let raw = packet(196608, b"user\0alice\0database\0app\0\0");
        let parsed = parse(raw.clone()).unwrap();
        assert_eq!(parsed.param("user"), Some("alice"));
        assert_eq!(parsed.param("database"), Some("app"));
        assert!(
            matches!(parsed, StartupPacket::Startup { raw: r, version: 196608, .. } if r == raw)
        );
    }

    #[test]
    fn cancel_request_keeps_its_bytes() {
        let raw = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 42, 1, 2, 3, 4]);
        assert_eq!(parse(raw.clone()), Ok(StartupPacket::CancelRequest { raw }));
    }

    #[test]
    fn cancel_request_round_trips() {
        let raw = cancel_request(&[0, 0, 0, 42, 1, 2, 3, 4]);
        assert_eq!(raw.len(), 16);
        assert!(matches!(
            parse(Bytes::from(raw)),
            Ok(StartupPacket::CancelRequest { .. })
        ));
    }

    #[test]
    fn protocol_two_is_refused() {
        assert_eq!(
            parse(packet(0x0002_0000, b"")),
            Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 })
        );
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert_eq!(check_len(7), Err(StartupError::InvalidLength(7)));
        assert!(check_len(MAX_STARTUP_PACKET_LEN + 1).is_err());
        assert!(matches!(
            parse(packet(CANCEL_REQUEST_CODE, b"")),
            Err(StartupError::InvalidCancel(8))
        ));
    }

    #[test]
    fn direct_tls_is_recognised() {
        assert_eq!(check_len(0x1603_0106), Err(StartupError::DirectTls));
    }

    #[test]
    fn short_packets_are_errors_not_panics() {
        for raw in [&b""[..], b"\0\0", b"\0\0\0\x08", b"\0\0\0\x08\x04\xd2"] {
            assert!(parse(Bytes::copy_from_slice(raw)).is_err(), "{raw:?}");
        }
        // A TLS ClientHello cut short is still recognised as direct TLS.
        assert_eq!(
            parse(Bytes::from_static(b"\x16\x03\x01\x02\0\x01\0\x01")),
            Err(StartupError::DirectTls)
        );
    }

    #[test]
    fn unterminated_params_are_malformed() {
        assert_eq!(
            parse(packet(196608, b"user\0alice")),
            Err(StartupError::MalformedParams)
        );
    }
}
