//! The `sidecar` section of the config file: its YAML schema, and the validated settings the
//! sidecar runs with (keys read and parsed, parties and their permitted columns).
//!
//! Every error names the file and the dotted key, like the rest of the config. Key files are
//! relative to the config file's directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::jose::{PartyKeys, ServerKey};
use crate::config::{Config, ConfigError};

/// The `sidecar` section as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Address the HTTP API listens on, e.g. "127.0.0.1:8080".
    pub listen: String,
    /// Upstream database, user and password for the sidecar's own connections.
    pub database: String,
    pub user: String,
    /// Environment variable holding the upstream password (none: trust/peer auth).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Upstream connections the sidecar keeps at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// RSA (>= 2048 bits) or EC private key, PEM: decrypts incoming JWE.
    pub private_key_file: PathBuf,
    /// Party id (the `kid` of its signatures) → its key and permissions.
    #[serde(default)]
    pub parties: BTreeMap<String, PartyConfig>,
}

/// One integrating party as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyConfig {
    /// RSA, EC (P-256/384/521) or Ed25519 public key, PEM: verifies the party's signatures
    /// and (RSA, EC) encrypts responses to it.
    pub public_key_file: PathBuf,
    /// A separate RSA, EC or X25519 public key to encrypt responses to; needed for fetching
    /// when `public_key_file` is an Ed25519 key, which can only sign.
    #[serde(default)]
    pub encryption_key_file: Option<PathBuf>,
    /// Table → the only columns this party may write and read.
    pub tables: BTreeMap<String, Vec<String>>,
}

fn default_pool_size() -> usize {
    4
}

/// A table as Postgres names it: `users` means `public.users`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `table` or `schema.table`; `None` for anything else.
    pub fn parse(name: &str) -> Option<TableName> {
        let mut parts = name.split('.');
        let (first, second, rest) = (parts.next()?, parts.next(), parts.next());
        let ok = |s: &str| !s.is_empty() && !s.contains('"');
        match (second, rest) {
            (None, _) if ok(first) => Some(TableName {
                schema: "public".into(),
                table: first.into(),
            }),
            (Some(table), None) if ok(first) && ok(table) => Some(TableName {
                schema: first.into(),
                table: table.into(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A party, ready to check signatures and encrypt responses.
pub struct Party {
    pub id: String,
    pub keys: PartyKeys,
    /// Table → the columns it may write and read.
    pub tables: HashMap<TableName, BTreeSet<String>>,
}

/// Validated settings the sidecar runs with.
pub struct SidecarSettings {
    pub listen: SocketAddr,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub connect_timeout: std::time::Duration,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub pool_size: usize,
    pub server_key: Arc<ServerKey>,
    pub parties: Arc<HashMap<String, Party>>,
}

impl std::fmt::Debug for SidecarSettings {
    /// Never the password or key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parties: Vec<&String> = self.parties.keys().collect();
        parties.sort();
        f.debug_struct("SidecarSettings")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("pool_size", &self.pool_size)
            .field("parties", &parties)
            .finish()
    }
}

impl Config {
    /// The sidecar's settings, with every key file read and parsed; `None` when the file has
    /// no `sidecar` section.
    pub fn sidecar(&self, path: &Path) -> Result<Option<SidecarSettings>, ConfigError> {
        let Some(section) = &self.sidecar else {
            return Ok(None);
        };
        let proxy = self.settings(path)?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("sidecar.{key}"),
            message,
        };
        let listen: SocketAddr = section.listen.parse().map_err(|_| {
            let listen = &section.listen;
            invalid(
                "listen",
                format!("{listen:?} is not an address:port such as \"127.0.0.1:8080\""),
            )
        })?;
        if listen == proxy.listen && listen.port() != 0 {
            return Err(invalid(
                "listen",
                "is the proxy's own `listen` address".into(),
            ));
        }
        for (key, value) in [("database", &section.database), ("user", &section.user)] {
            if value.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        if !(1..=64).contains(&section.pool_size) {
            return Err(invalid("pool_size", "must be between 1 and 64".into()));
        }
        let password = match &section.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                invalid(
                    "password_env",
                    format!("environment variable {var} is not set"),
                )
            })?),
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |key: &str, file: &Path| -> Result<Vec<u8>, ConfigError> {
            let file = dir.join(file);
            std::fs::read(&file)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", file.display())))
        };
        let pem = read("private_key_file", &section.private_key_file)?;
        let server_key =
            ServerKey::from_pem(&pem).map_err(|e| invalid("private_key_file", e.to_string()))?;
        let mut parties = HashMap::new();
        for (id, party) in &section.parties {
            let key = format!("parties.{id}");
            if id.is_empty() {
                return Err(invalid("parties", "party ids must not be empty".into()));
            }
            let signing = read(&format!("{key}.public_key_file"), &party.public_key_file)?;
            let encryption = match &party.encryption_key_file {
                Some(file) => Some(read(&format!("{key}.encryption_key_file"), file)?),
                None => None,
            };
            let keys = PartyKeys::from_pem(&signing, encryption.as_deref())
                .map_err(|(which, e)| invalid(&format!("{key}.{which}"), e.to_string()))?;
            if party.tables.is_empty() {
                return Err(invalid(&format!("{key}.tables"), "names no tables".into()));
            }
            let mut tables = HashMap::new();
            for (name, columns) in &party.tables {
                let table_key = format!("{key}.tables.{name}");
                let table = TableName::parse(name).ok_or_else(|| {
                    invalid(&table_key, "expected `table` or `schema.table`".into())
                })?;
                if columns.is_empty() {
                    return Err(invalid(&table_key, "names no columns".into()));
                }
                let mut allowed = BTreeSet::new();
                for column in columns {
                    if column.is_empty() || column.contains('"') {
                        return Err(invalid(
                            &table_key,
                            format!("{column:?} is not a column name"),
                        ));
                    }
                    if !allowed.insert(column.clone()) {
                        return Err(invalid(&table_key, format!("names {column} twice")));
                    }
                }
                if tables.insert(table, allowed).is_some() {
                    return Err(invalid(&table_key, "is configured twice".into()));
                }
            }
            let party = Party {
                id: id.clone(),
                keys,
                tables,
            };
            parties.insert(id.clone(), party);
        }
        Ok(Some(SidecarSettings {
            listen,
            upstream_host: proxy.upstream_host,
            upstream_port: proxy.upstream_port,
            connect_timeout: proxy.connect_timeout,
            database: section.database.clone(),
            user: section.user.clone(),
            password,
            pool_size: section.pool_size,
            server_key: Arc::new(server_key),
            parties: Arc::new(parties),
        }))
    }
}
