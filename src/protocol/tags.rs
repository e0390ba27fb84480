//! Message type bytes, one enum per direction: the same byte means different messages each
//! way (`b'D'` is Describe from the client and DataRow from the server), so code names the
//! message, never the byte.

/// A message from the client (after the startup packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    Flush,
    FunctionCall,
    CopyData,
    CopyDone,
    CopyFail,
    Terminate,
    /// PasswordMessage / SASL responses ('p'): only during authentication.
    Password,
    Other(u8),
}

impl Frontend {
    pub fn from_tag(tag: u8) -> Frontend {
        match tag {
            b'Q' => Frontend::Query,
            b'P' => Frontend::Parse,
            b'B' => Frontend::Bind,
            b'D' => Frontend::Describe,
            b'E' => Frontend::Execute,
            b'C' => Frontend::Close,
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'F' => Frontend::FunctionCall,
            b'd' => Frontend::CopyData,
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail,
            b'X' => Frontend::Terminate,
            b'p' => Frontend::Password,
            other => Frontend::Other(other),
        }
    }

    /// Parse, Bind, Describe, Execute, Close, Flush, Sync: after an error in one of these
    /// the server discards messages until Sync.
    pub fn is_extended(self) -> bool {
        matches!(
            self,
            Frontend::Parse
                | Frontend::Bind
                | Frontend::Describe
                | Frontend::Execute
                | Frontend::Close
                | Frontend::Flush
                | Frontend::Sync
        )
    }
}

/// A message from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Authentication,
    BackendKeyData,
    ParseComplete,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    CopyData,
    CopyDone,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FunctionCallResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
    Other(u8),
}

impl Backend {
    pub fn from_tag(tag: u8) -> Backend {
        match tag {
            b'R' => Backend::Authentication,
            b'K' => Backend::BackendKeyData,
            b'1' => Backend::ParseComplete,
            b'2' => Backend::BindComplete,
            b'3' => Backend::CloseComplete,
            b'C' => Backend::CommandComplete,
            b'G' => Backend::CopyInResponse,
            b'H' => Backend::CopyOutResponse,
            b'W' => Backend::CopyBothResponse,
            b'd' => Backend::CopyData,
            b'c' => Backend::CopyDone,
            b'D' => Backend::DataRow,
            b'I' => Backend::EmptyQueryResponse,
            b'E' => Backend::ErrorResponse,
            b'V' => Backend::FunctionCallResponse,
            b'v' => Backend::NegotiateProtocolVersion,
            b'n' => Backend::NoData,
            b'N' => Backend::NoticeResponse,
            b'A' => Backend::NotificationResponse,
            b't' => Backend::ParameterDescription,
            b'S' => Backend::ParameterStatus,
            b's' => Backend::PortalSuspended,
            b'Z' => Backend::ReadyForQuery,
            b'T' => Backend::RowDescription,
            other => Backend::Other(other),
        }
    }

    /// Messages the server may send at any time, outside the answer to any request.
    pub fn is_async(self) -> bool {
        matches!(
            self,
            Backend::NoticeResponse | Backend::NotificationResponse | Backend::ParameterStatus
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_two_meanings() {
        assert_eq!(Frontend::from_tag(b'D'), Frontend::Describe);
        assert_eq!(Backend::from_tag(b'D'), Backend::DataRow);
        assert_eq!(Frontend::from_tag(b'C'), Frontend::Close);
        assert_eq!(Backend::from_tag(b'C'), Backend::CommandComplete);
        assert_eq!(Frontend::from_tag(b'H'), Frontend::Flush);
        assert_eq!(Backend::from_tag(b'H'), Backend::CopyOutResponse);
    }

    #[test]
    fn extended_messages_start_skipping_on_error() {
        assert!(Frontend::Parse.is_extended());
        assert!(!Frontend::Query.is_extended());
        assert!(!Frontend::FunctionCall.is_extended());
    }
}
