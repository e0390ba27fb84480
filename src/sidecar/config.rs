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

use super::claims;
use super::jose::{PartyKeys, ServerKey};
use crate::config::{Config, ConfigError, ProxySettings};

/// The `sidecar` section as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Address the HTTP API listens on, e.g. "127.0.0.1:8080" or "localhost:8080".
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
    /// HTTPS on the listener; absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<SidecarTlsConfig>,
}

/// `sidecar.tls`: the listener's certificate chain and key (PEM, relative to the config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
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
    /// Every record must carry `jti` and `exp` claims: each is accepted once.
    #[serde(default)]
    pub require_jti: bool,
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
    /// Records must carry `jti` and `exp` (see `claims`).
    pub require_jti: bool,
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
    /// The upstream leg's TLS (`upstream.tls`), which the sidecar's own connections use too.
    pub upstream_tls: Option<Arc<crate::tls::UpstreamTls>>,
    /// HTTPS on the listener (`sidecar.tls`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
        match &self.sidecar {
            Some(_) => self.sidecar_with(path, &self.settings(path)?),
            None => Ok(None),
        }
    }

    /// [`Config::sidecar`] sharing the proxy's already loaded settings (upstream and TLS).
    pub fn sidecar_with(
        &self,
        path: &Path,
        proxy: &ProxySettings,
    ) -> Result<Option<SidecarSettings>, ConfigError> {
        let Some(section) = &self.sidecar else {
            return Ok(None);
        };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("sidecar.{key}"),
            message,
        };
        let listen = crate::config::listen_addr(&section.listen, "sidecar.listen", path)?;
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
                    if claims::is_registered(column) {
                        return Err(invalid(
                            &table_key,
                            format!("{column} is a JWT claim name: in a signed record it is read as a claim, so the sidecar cannot write a column of that name"),
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
                require_jti: party.require_jti,
            };
            parties.insert(id.clone(), party);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match &section.tls {
            Some(tls) => Some(
                crate::tls::https_acceptor(
                    (
                        "sidecar.tls.cert_file",
                        &crate::tls::resolve(base, &tls.cert_file),
                    ),
                    (
                        "sidecar.tls.key_file",
                        &crate::tls::resolve(base, &tls.key_file),
                    ),
                )
                .map_err(|e| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: e.key,
                    message: e.message,
                })?,
            ),
            None => None,
        };
        Ok(Some(SidecarSettings {
            tls,
            listen,
            upstream_host: proxy.upstream_host.clone(),
            upstream_port: proxy.upstream_port,
            connect_timeout: proxy.connect_timeout,
            database: section.database.clone(),
            user: section.user.clone(),
            password,
            pool_size: section.pool_size,
            server_key: Arc::new(server_key),
            parties: Arc::new(parties),
            upstream_tls: proxy.upstream_tls.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;

    /// A directory with an RSA server key (`server.pem`), a 1024-bit one (`small.pem`) and a
    /// party's EC public key (`party.pub.pem`).
    fn key_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pgcloak-sidecar-config-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let rsa = |bits| PKey::from_rsa(openssl::rsa::Rsa::generate(bits).unwrap()).unwrap();
        std::fs::write(
            dir.join("server.pem"),
            rsa(2048).private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("small.pem"),
            rsa(1024).private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        std::fs::write(dir.join("party.pub.pem"), ec.public_key_to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a key").unwrap();
        dir
    }

    const HEAD: &str = "listen: \"127.0.0.1:6432\"\nupstream: {host: 127.0.0.1}\nsidecar:\n  listen: \"127.0.0.1:8080\"\n  database: app\n  user: app\n";

    /// Loads the config `HEAD + sidecar` from `dir`; the sidecar settings or the error text.
    fn load(dir: &Path, sidecar: &str) -> Result<SidecarSettings, String> {
        let path = dir.join("pgcloak.yaml");
        std::fs::write(&path, format!("{HEAD}{sidecar}")).unwrap();
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        Ok(config.sidecar(&path).map_err(|e| e.to_string())?.unwrap())
    }

    #[test]
    fn a_complete_section_loads_its_keys_and_parties() {
        let dir = key_dir("ok");
        let settings = load(
            &dir,
            "  private_key_file: server.pem\n  parties:\n    p:\n      public_key_file: party.pub.pem\n      tables:\n        users: [email, name]\n        billing.cards: [holder]\n",
        )
        .unwrap();
        assert_eq!(settings.pool_size, 4);
        let party = &settings.parties["p"];
        let cards = TableName::parse("billing.cards").unwrap();
        assert!(party.tables[&cards].contains("holder"));
        assert_eq!(
            party.tables[&TableName::parse("public.users").unwrap()].len(),
            2
        );
        assert_eq!(
            settings.server_key.algorithms(),
            ["RSA-OAEP", "RSA-OAEP-256"]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listen_takes_a_host_name_and_names_the_key_when_bad() {
        let dir = key_dir("listen");
        let path = dir.join("pgcloak.yaml");
        let load = |listen: &str| {
            let text = HEAD.replace("127.0.0.1:8080", listen) + "  private_key_file: server.pem\n";
            std::fs::write(&path, text).unwrap();
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            config.sidecar(&path).map_err(|e| e.to_string())
        };
        let settings = load("localhost:8080").unwrap().unwrap();
        assert!(settings.listen.ip().is_loopback() && settings.listen.port() == 8080);
        let err = load("localhost").unwrap_err();
        assert!(
            err.contains("`sidecar.listen`: \"localhost\" is not an address:port"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = key_dir("errors");
        let party = "  parties:\n    p:\n      public_key_file: party.pub.pem\n";
        let cases = [
            ("  private_key_file: missing.pem\n".to_owned(), "`sidecar.private_key_file`: cannot read"),
            ("  private_key_file: junk.pem\n".into(), "`sidecar.private_key_file`: not a PEM private key"),
            ("  private_key_file: small.pem\n".into(), "`sidecar.private_key_file`: RSA key has 1024 bits"),
            ("  private_key_file: server.pem\n  pool_size: 0\n".into(), "`sidecar.pool_size`"),
            ("  private_key_file: server.pem\n  password_env: PGCLOAK_UNSET_TEST_VAR_7\n".into(), "`sidecar.password_env`: environment variable PGCLOAK_UNSET_TEST_VAR_7 is not set"),
            ("  private_key_file: server.pem\n  parties:\n    p:\n      public_key_file: junk.pem\n      tables: {users: [a]}\n".into(), "`sidecar.parties.p.public_key_file`: not a PEM public key"),
            (format!("  private_key_file: server.pem\n{party}      tables: {{a.b.c: [x]}}\n"), "`sidecar.parties.p.tables.a.b.c`: expected `table` or `schema.table`"),
            (format!("  private_key_file: server.pem\n{party}      tables: {{users: []}}\n"), "`sidecar.parties.p.tables.users`: names no columns"),
            (format!("  private_key_file: server.pem\n{party}      tables: {{users: [a, a]}}\n"), "names a twice"),
            (format!("  private_key_file: server.pem\n{party}      tables: {{users: [sub]}}\n"), "sub is a JWT claim name"),
            (format!("  private_key_file: server.pem\n{party}      tabels: {{users: [a]}}\n"), "unknown field `tabels`"),
            ("  private_key_file: server.pem\n  listne: x\n".into(), "unknown field `listne`"),
        ];
        for (sidecar, expected) in cases {
            let error = load(&dir, &sidecar)
                .err()
                .unwrap_or_else(|| panic!("accepted: {sidecar}"));
            assert!(
                error.starts_with(&dir.join("pgcloak.yaml").display().to_string()),
                "{error}"
            );
            assert!(error.contains(expected), "{sidecar}\n→ {error}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
