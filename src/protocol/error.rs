//! ErrorResponse messages that pgcloak itself sends, in Postgres's own format so that every
//! client shows them like a server error (severity, SQLSTATE, message).

use bytes::BytesMut;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;

/// SQLSTATEs pgcloak reports.
pub mod sqlstate {
    /// The upstream server could not be reached.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// Connecting to the upstream server failed before a session existed.
    pub const CLIENT_UNABLE_TO_ESTABLISH_CONNECTION: &str = "08001";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// A login the configuration refuses (e.g. without TLS where TLS is required).
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Encodes an ErrorResponse frame. `message` must never contain a PII value.
pub fn error_response(severity: Severity, code: &str, message: &str) -> BytesMut {
    let fields = vec![
        (b'S', severity.as_str().to_owned()),
        (b'V', severity.as_str().to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    let mut buf = BytesMut::new();
    // Encoding only fails above pgwire's size cap, which our short messages never reach.
    if ErrorResponse::new(fields).encode(&mut buf).is_err() {
        buf.clear();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_postgres_error_layout() {
        let frame = error_response(Severity::Fatal, "53300", "too many");
        let mut expected = vec![b'E'];
        let body = b"SFATAL\0VFATAL\0C53300\0Mtoo many\0\0";
        expected.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        expected.extend_from_slice(body);
        assert_eq!(&frame[..], &expected[..]);
    }
}
