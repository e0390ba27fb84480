//! Runs one generated statement on one connection and captures what came back: result
//! sets (column names and types, rows as raw bytes, rows affected), an error's SQLSTATE and
//! message, or a broken connection. The same code runs it through pgcloak on A and
//! directly on B, so the two outcomes are comparable byte for byte.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::Raw;

use super::generator::{Kind, Mode, Stmt, Val};
use super::schema::Ty;

/// How long one statement may take before the connection counts as hung.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);

/// One result set: a statement's rows, or a COPY's lines (one field each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub affected: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Ok(Vec<ResultSet>),
    /// An ErrorResponse.
    Error {
        code: String,
        message: String,
    },
    /// The client library failed before or without a server error (e.g. a parameter it
    /// could not serialise): comparable, as the library is the same on both sides.
    Client(String),
    /// The connection closed or hung.
    Broken(String),
}

impl Outcome {
    pub fn short(&self) -> String {
        match self {
            Outcome::Ok(sets) => {
                let parts: Vec<String> = sets.iter().map(render_set).collect();
                format!("ok {}", parts.join(" | "))
            }
            Outcome::Error { code, message } => format!("error {code}: {message}"),
            Outcome::Client(m) => format!("client error: {m}"),
            Outcome::Broken(m) => format!("BROKEN: {m}"),
        }
    }
}

fn render_set(set: &ResultSet) -> String {
    let rows: Vec<String> = set
        .rows
        .iter()
        .take(6)
        .map(|row| {
            let fields: Vec<String> = row
                .iter()
                .map(|f| match f {
                    None => "NULL".into(),
                    Some(b) => {
                        let s = String::from_utf8_lossy(b);
                        let s: String = s.chars().take(60).collect();
                        format!("{s:?}")
                    }
                })
                .collect();
            format!("({})", fields.join(", "))
        })
        .collect();
    let more = set.rows.len().saturating_sub(6);
    let more = if more > 0 {
        format!(" ... {more} more")
    } else {
        String::new()
    };
    format!(
        "[{}] {} rows{}: {}{more}",
        set.columns.join(", "),
        set.rows.len(),
        set.affected
            .map_or(String::new(), |n| format!(" (affected {n})")),
        rows.join(" ")
    )
}

/// Runs `stmt` on `client`.
pub async fn run(client: &Client, stmt: &Stmt) -> Outcome {
    match tokio::time::timeout(STATEMENT_TIMEOUT, run_inner(client, stmt)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Broken(format!("no answer within {STATEMENT_TIMEOUT:?}")),
    }
}

async fn run_inner(client: &Client, stmt: &Stmt) -> Outcome {
    let result = match (&stmt.kind, stmt.mode) {
        (Kind::CopyIn(data), _) => copy_in(client, &stmt.sql, data).await,
        (Kind::CopyOut, _) => copy_out(client, &stmt.sql).await,
        (Kind::Query, Mode::Simple) => simple(client, &stmt.sql).await,
        (Kind::Query, Mode::Typed) => typed(client, stmt).await,
        (Kind::Query, mode) => extended(client, stmt, mode == Mode::ExtBinary).await,
    };
    match result {
        Ok(sets) => Outcome::Ok(sets),
        Err(e) => classify(client, &e),
    }
}

fn classify(client: &Client, e: &tokio_postgres::Error) -> Outcome {
    if let Some(db) = e.as_db_error() {
        return Outcome::Error {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
        };
    }
    if client.is_closed() || e.is_closed() {
        return Outcome::Broken(e.to_string());
    }
    Outcome::Client(e.to_string())
}

pub async fn simple(client: &Client, sql: &str) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    let mut sets = Vec::new();
    let mut current = ResultSet {
        columns: Vec::new(),
        rows: Vec::new(),
        affected: None,
    };
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                current.columns = columns.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => current.rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(|s| s.as_bytes().to_vec()))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => {
                current.affected = Some(n);
                sets.push(std::mem::replace(
                    &mut current,
                    ResultSet {
                        columns: Vec::new(),
                        rows: Vec::new(),
                        affected: None,
                    },
                ));
            }
            _ => {}
        }
    }
    Ok(sets)
}

/// Prepare (Parse + Describe), then Bind/Execute the named statement: the driver's
/// describe-once, execute-later flow.
async fn extended(
    client: &Client,
    stmt: &Stmt,
    binary: bool,
) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let prepared = client.prepare(&stmt.sql).await?;
    let columns = prepared
        .columns()
        .iter()
        .map(|c| format!("{}:{}", c.name(), c.type_().oid()))
        .collect();
    let params: Vec<Param> = stmt
        .params
        .iter()
        .map(|v| Param { val: v, binary })
        .collect();
    let stream = client.query_raw(&prepared, params.iter()).await?;
    collect(stream, columns).await
}

/// One round of Parse/Bind/Execute on the unnamed statement, parameter types declared.
async fn typed(client: &Client, stmt: &Stmt) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let params: Vec<(Param, Type)> = stmt
        .params
        .iter()
        .zip(&stmt.types)
        .map(|(v, ty)| {
            (
                Param {
                    val: v,
                    binary: true,
                },
                declared(*ty),
            )
        })
        .collect();
    let stream = client.query_typed_raw(&stmt.sql, params).await?;
    collect(stream, Vec::new()).await
}

fn declared(ty: Ty) -> Type {
    match ty {
        Ty::Int => Type::INT4,
        Ty::Text => Type::TEXT,
        Ty::Num => Type::NUMERIC,
        Ty::TextArr => Type::TEXT_ARRAY,
        Ty::Json => Type::JSONB,
    }
}

async fn collect(
    stream: tokio_postgres::RowStream,
    mut columns: Vec<String>,
) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    futures::pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        if columns.is_empty() {
            columns = row
                .columns()
                .iter()
                .map(|c| format!("{}:{}", c.name(), c.type_().oid()))
                .collect();
        }
        let fields = (0..row.len())
            .map(|i| row.try_get::<_, Option<Raw>>(i).map(|v| v.map(|r| r.0)))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(fields);
    }
    Ok(vec![ResultSet {
        columns,
        rows,
        affected: stream.rows_affected(),
    }])
}

async fn copy_in(
    client: &Client,
    sql: &str,
    data: &str,
) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data.to_owned())).await?;
    let n = sink.finish().await?;
    Ok(vec![ResultSet {
        columns: Vec::new(),
        rows: Vec::new(),
        affected: Some(n),
    }])
}

async fn copy_out(client: &Client, sql: &str) -> Result<Vec<ResultSet>, tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    futures::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        data.extend_from_slice(&chunk);
    }
    let rows = data
        .split_inclusive(|&b| b == b'\n')
        .map(|line| vec![Some(line.to_vec())])
        .collect();
    Ok(vec![ResultSet {
        columns: Vec::new(),
        rows,
        affected: None,
    }])
}

/// A parameter: binary where its type and the server's inferred type allow, else text.
#[derive(Debug)]
struct Param<'a> {
    val: &'a Val,
    binary: bool,
}

impl Param<'_> {
    fn use_binary(&self, ty: &Type) -> bool {
        self.binary
            && match self.val {
                Val::Text(_) => [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty),
                Val::Int(_) => [Type::INT2, Type::INT4, Type::INT8].contains(ty),
                Val::TextArr(_) => [Type::TEXT_ARRAY, Type::VARCHAR_ARRAY].contains(ty),
                Val::Json(_) => [Type::JSON, Type::JSONB].contains(ty),
                Val::Num(_) | Val::Null => false,
            }
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if !self.use_binary(ty) {
            return match self.val.text() {
                None => Ok(IsNull::Yes),
                Some(text) => {
                    out.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
            };
        }
        match self.val {
            Val::Text(s) => s.as_str().to_sql(ty, out),
            Val::Int(n) if *ty == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
            Val::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Val::Int(n) => n.to_sql(ty, out),
            Val::TextArr(items) => items.to_sql(ty, out),
            Val::Json(s) if *ty == Type::JSONB => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Val::Json(s) => s.as_str().to_sql(&Type::TEXT, out),
            Val::Num(_) | Val::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> tokio_postgres::types::Format {
        if self.use_binary(ty) {
            tokio_postgres::types::Format::Binary
        } else {
            tokio_postgres::types::Format::Text
        }
    }

    tokio_postgres::types::to_sql_checked!();
}
