//! The sidecar's upstream: a small pool of tokio-postgres connections, the tables' columns
//! and primary keys read from the catalog (cached), one INSERT ... RETURNING per ingest and
//! one SELECT by primary key per fetch.
//!
//! Values are bound as text parameters (Postgres parses them with each column's input
//! function, as for a literal), so any column type works and nothing is reformatted here.
//! Values for PII columns arrive here already encrypted; this module never sees plaintext
//! of a PII column on the way in.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::config::{SidecarSettings, TableName};
use super::error::{ApiError, Reason};

/// Waiting longer than this for a free pooled connection fails the request (503).
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The columns of every table, in attribute order; primary key columns in key order.
const TABLE_QUERY: &str = "SELECT a.attname::text, t.typname::text, t.typcategory::text, \
     (SELECT k.ord FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) WHERE k.attnum = a.attnum) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     JOIN pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
     ORDER BY a.attnum";

/// How a column's text form becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Number,
    Bool,
    Json,
    String,
}

/// One column of a table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: JsonKind,
    /// A string type (`text`, `varchar`, ...), which can hold a ciphertext envelope.
    pub holds_text: bool,
}

/// A table's columns and primary key.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: TableName,
    pub columns: Vec<ColumnInfo>,
    /// Names of the primary key columns, in key order; empty when the table has none.
    pub primary_key: Vec<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A value bound in text format; `None` is NULL. Postgres infers the parameter's type from
/// where it is used and parses the text with that type's input function.
#[derive(Debug)]
pub struct TextParam(pub Option<String>);

impl ToSql for TextParam {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.put_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The pool and the table cache.
pub struct Store {
    pool: Pool,
    tables: Mutex<HashMap<TableName, Arc<TableInfo>>>,
}

impl Store {
    /// A pool per the settings; connections are opened on first use.
    pub fn new(settings: &SidecarSettings) -> Result<Store, String> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&settings.upstream_host)
            .port(settings.upstream_port)
            .dbname(&settings.database)
            .user(&settings.user)
            .application_name("pgcloak-sidecar")
            .connect_timeout(settings.connect_timeout);
        if let Some(password) = &settings.password {
            pg.password(password);
        }
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // The same TLS settings as the relay's upstream leg.
        let manager = match &settings.upstream_tls {
            Some(tls) => {
                pg.ssl_mode(tls.ssl_mode());
                Manager::from_config(pg, (**tls).clone(), recycling())
            }
            None => Manager::from_config(pg, NoTls, recycling()),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot build the sidecar's connection pool: {e}"))?;
        Ok(Store {
            pool,
            tables: Mutex::new(HashMap::new()),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ApiError> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "sidecar: no upstream connection");
            ApiError::new(Reason::Upstream, "the database is not reachable")
        })
    }

    /// True when the upstream answers a trivial query.
    pub async fn healthy(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The table's columns and primary key (cached; `forget` drops a stale entry).
    pub async fn table(&self, name: &TableName) -> Result<Arc<TableInfo>, ApiError> {
        if let Some(info) = self.cache().get(name) {
            return Ok(info.clone());
        }
        let client = self.client().await?;
        let rows = client
            .query(TABLE_QUERY, &[&name.schema, &name.table])
            .await
            .map_err(|e| ApiError::from_db(&e, &name.to_string()))?;
        if rows.is_empty() {
            return Err(ApiError::new(
                Reason::UnknownTable,
                format!("table {name} does not exist"),
            ));
        }
        let mut columns = Vec::with_capacity(rows.len());
        let mut key: Vec<(i64, String)> = Vec::new();
        for row in &rows {
            let column: String = row.get(0);
            let type_name: String = row.get(1);
            let category: String = row.get(2);
            let kind = match (category.as_str(), type_name.as_str()) {
                (_, "json" | "jsonb") => JsonKind::Json,
                ("N", "money") => JsonKind::String,
                ("N", _) => JsonKind::Number,
                ("B", _) => JsonKind::Bool,
                _ => JsonKind::String,
            };
            if let Some(position) = row.get::<_, Option<i64>>(3) {
                key.push((position, column.clone()));
            }
            let holds_text = category == "S";
            columns.push(ColumnInfo {
                name: column,
                kind,
                holds_text,
            });
        }
        key.sort();
        let info = Arc::new(TableInfo {
            name: name.clone(),
            columns,
            primary_key: key.into_iter().map(|(_, name)| name).collect(),
        });
        self.cache().insert(name.clone(), info.clone());
        Ok(info)
    }

    /// Drops the cached columns of `name` (after DDL made them stale).
    pub fn forget(&self, name: &TableName) {
        self.cache().remove(name);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, Arc<TableInfo>>> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts one row (one statement, so one transaction: all of it or nothing) and returns
    /// the text of its primary key columns (empty when the table has no primary key).
    pub async fn insert(
        &self,
        table: &TableInfo,
        columns: &[&str],
        values: Vec<TextParam>,
    ) -> Result<Vec<Option<String>>, ApiError> {
        let list: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            qualified(&table.name),
            list.join(", "),
            placeholders.join(", ")
        );
        if !table.primary_key.is_empty() {
            sql.push_str(" RETURNING ");
            sql.push_str(&as_text(&table.primary_key).join(", "));
        }
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.run(table, &sql, &params).await?;
        let Some(row) = rows.first() else {
            return Ok(Vec::new());
        };
        Ok((0..row.len()).map(|i| row.get(i)).collect())
    }

    /// The text of `columns` of the row whose primary key is `key` (text per key column).
    pub async fn select(
        &self,
        table: &TableInfo,
        columns: &[&str],
        key: Vec<TextParam>,
    ) -> Result<Option<Vec<Option<String>>>, ApiError> {
        let conditions: Vec<String> = (table.primary_key.iter().enumerate())
            .map(|(i, c)| format!("{} = ${}", ident(c), i + 1))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            as_text(columns).join(", "),
            qualified(&table.name),
            conditions.join(" AND ")
        );
        let params: Vec<&(dyn ToSql + Sync)> =
            key.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.run(table, &sql, &params).await?;
        Ok(rows
            .first()
            .map(|row| (0..row.len()).map(|i| row.get(i)).collect()))
    }

    /// Prepares (cached per connection) and runs one statement, mapping errors by SQLSTATE.
    async fn run(
        &self,
        table: &TableInfo,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ApiError> {
        let client = self.client().await?;
        let result = match client.prepare_cached(sql).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            let error = ApiError::from_db(&e, &table.name.to_string());
            if error.reason == Reason::UnknownTable {
                self.forget(&table.name);
                client.statement_cache.clear();
            }
            error
        })
    }
}

/// `"schema"."table"`.
fn qualified(name: &TableName) -> String {
    format!("{}.{}", ident(&name.schema), ident(&name.table))
}

/// A quoted identifier (names are matched exactly, as Postgres stores them).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn as_text<S: AsRef<str>>(columns: &[S]) -> Vec<String> {
    columns
        .iter()
        .map(|c| format!("{}::text", ident(c.as_ref())))
        .collect()
}
