//! What the HTTP API answers when it refuses a request: a status, a JSON body
//! `{"error": "..."}` and a short reason code for /metrics and the log.
//!
//! Messages are written here or at the call site from facts pgcloak knows (table and column
//! names, party ids from the config, algorithm names); they never quote a submitted value,
//! and database errors are mapped by SQLSTATE, never passed through (Postgres messages can
//! quote values, e.g. "invalid input syntax for type integer: ...").

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request was refused. The reason code (`as_str`) labels the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MalformedBody,
    ContentType,
    NotJwe,
    UnsupportedAlgorithm,
    Undecryptable,
    NotObject,
    UnknownColumn,
    UnknownTable,
    InvalidValue,
    Unsigned,
    UnknownParty,
    BadSignature,
    MissingToken,
    BadToken,
    ExpiredToken,
    TableNotAllowed,
    ColumnNotAllowed,
    NoEncryptionKey,
    NotFound,
    Conflict,
    TooLarge,
    Upstream,
    Internal,
    BadClaims,
    Replayed,
    Overloaded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedBody => "malformed_body",
            Reason::ContentType => "content_type",
            Reason::NotJwe => "not_jwe",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::Undecryptable => "undecryptable",
            Reason::NotObject => "not_object",
            Reason::UnknownColumn => "unknown_column",
            Reason::UnknownTable => "unknown_table",
            Reason::InvalidValue => "invalid_value",
            Reason::Unsigned => "unsigned",
            Reason::UnknownParty => "unknown_party",
            Reason::BadSignature => "bad_signature",
            Reason::MissingToken => "missing_token",
            Reason::BadToken => "bad_token",
            Reason::ExpiredToken => "expired_token",
            Reason::TableNotAllowed => "table_not_allowed",
            Reason::ColumnNotAllowed => "column_not_allowed",
            Reason::NoEncryptionKey => "no_encryption_key",
            Reason::NotFound => "not_found",
            Reason::Conflict => "conflict",
            Reason::TooLarge => "too_large",
            Reason::Upstream => "upstream",
            Reason::Internal => "internal",
            Reason::BadClaims => "bad_claims",
            Reason::Replayed => "replayed",
            Reason::Overloaded => "overloaded",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Reason::MalformedBody
            | Reason::ContentType
            | Reason::NotJwe
            | Reason::UnsupportedAlgorithm
            | Reason::Undecryptable
            | Reason::NotObject
            | Reason::UnknownColumn
            | Reason::InvalidValue => StatusCode::BAD_REQUEST,
            Reason::Unsigned
            | Reason::UnknownParty
            | Reason::BadSignature
            | Reason::MissingToken
            | Reason::BadToken
            | Reason::ExpiredToken
            | Reason::BadClaims => StatusCode::UNAUTHORIZED,
            Reason::TableNotAllowed | Reason::ColumnNotAllowed | Reason::NoEncryptionKey => {
                StatusCode::FORBIDDEN
            }
            Reason::NotFound | Reason::UnknownTable => StatusCode::NOT_FOUND,
            Reason::Conflict | Reason::Replayed => StatusCode::CONFLICT,
            Reason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::Upstream | Reason::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A refused request: the reason and a message safe to show the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError {
            reason,
            message: message.into(),
        }
    }

    /// Maps a database error by SQLSTATE to a message of our own (never Postgres's text,
    /// which may quote the value).
    pub fn from_db(error: &tokio_postgres::Error, table: &str) -> ApiError {
        use tokio_postgres::error::SqlState;
        let Some(db) = error.as_db_error() else {
            return ApiError::new(Reason::Upstream, "the database is not reachable");
        };
        let column = db
            .column()
            .map(|c| format!(" ({table}.{c})"))
            .unwrap_or_default();
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            let constraint = db.constraint().unwrap_or("a unique constraint");
            return ApiError::new(
                Reason::Conflict,
                format!("a record of {table} with the same key already exists ({constraint})"),
            );
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            let constraint = db.constraint().unwrap_or("a foreign key");
            return ApiError::new(
                Reason::Conflict,
                format!("the record refers to a row that does not exist ({constraint})"),
            );
        }
        if *code == SqlState::NOT_NULL_VIOLATION {
            return ApiError::new(
                Reason::InvalidValue,
                format!("a required column of {table} has no value{column}"),
            );
        }
        if *code == SqlState::CHECK_VIOLATION {
            let constraint = db.constraint().unwrap_or("a check constraint");
            return ApiError::new(
                Reason::InvalidValue,
                format!("a value violates {constraint} of {table}"),
            );
        }
        if code.code().starts_with("22") {
            return ApiError::new(
                Reason::InvalidValue,
                format!("a value does not fit its column's type in {table}{column}"),
            );
        }
        if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::UNDEFINED_COLUMN {
            return ApiError::new(
                Reason::UnknownTable,
                format!("{table} changed in the database; retry"),
            );
        }
        ApiError::new(
            Reason::Upstream,
            format!(
                "the database refused the statement (SQLSTATE {})",
                code.code()
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (self.reason.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.reason.status() == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pgcloak\""),
            );
        }
        response.extensions_mut().insert(self.reason);
        response
    }
}
