//! The YAML configuration file: its schema, defaults and validation.
//!
//! Unknown keys are rejected so that a typo never silently disables a setting. Every error
//! names the file and the key. The `tables` section is read by [`Policy::from_yaml`], the
//! `sidecar` section by [`crate::sidecar::SidecarConfig`] (its key files by
//! [`Config::sidecar`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::keys::MasterKeys;
use crate::policy::Policy;
use crate::sidecar::SidecarConfig;

mod listen;
pub use listen::listen_addr;

/// A configuration error, always naming the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde_yaml's message names the key (`unknown field `lisen``) and the line.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on, e.g. "127.0.0.1:6432" or "localhost:6432" (see
    /// [`listen_addr`]).
    pub listen: String,
    pub upstream: UpstreamConfig,
    /// TLS towards clients; absent: plaintext only (SSLRequest answered N).
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// pgcloak as the SCRAM endpoint of both legs; absent: logins are relayed.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Client connections beyond this many are refused with SQLSTATE 53300.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long open sessions may run before the proxy exits anyway.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// A client message larger than this closes that client with a protocol error.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Threads that relay sessions (each session stays on one); absent: one per core.
    #[serde(default)]
    pub session_threads: Option<usize>,
    /// A session's map of where the PII columns are (table OIDs, attribute numbers) is read
    /// again before its next PII statement once it is this old. DDL through pgcloak is
    /// noticed at once; this bounds how long DDL sent to Postgres directly goes unnoticed.
    #[serde(default = "default_catalog_max_age_seconds")]
    pub catalog_max_age_seconds: u64,
    /// Bytes the shared cache of statement analyses may hold; 0 disables it.
    #[serde(default = "default_analysis_cache_bytes")]
    pub analysis_cache_bytes: u64,
    /// Where the master key comes from; required when `tables` is present.
    #[serde(default)]
    pub keys: Option<KeysConfig>,
    /// The PII columns: table → column → mode. Validated by [`Policy::from_yaml`].
    #[serde(default)]
    pub tables: Option<serde_yaml::Value>,
    /// The JWE sidecar's HTTP API; started by `pgcloak serve` when present.
    #[serde(default)]
    pub sidecar: Option<SidecarConfig>,
}

pub use crate::keys::KeysConfig;

/// `auth:` — where the users' SCRAM verifiers come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lines `"user" "SCRAM-SHA-256$..."`, as PgBouncer's auth_file.
    pub file: Option<PathBuf>,
    /// The role that runs `query`, with its password from the environment.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub query: Option<String>,
}

/// Where the real PostgreSQL server is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub host: String,
    #[serde(default = "default_upstream_port")]
    pub port: u16,
    /// Connecting upstream longer than this fails the client with SQLSTATE 08001.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// TLS towards Postgres; absent: plaintext (as mode `disable`).
    #[serde(default)]
    pub tls: Option<crate::tls::UpstreamTlsConfig>,
}

fn default_max_connections() -> usize {
    1000
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}
fn default_max_message_bytes() -> u32 {
    // Postgres itself accepts messages up to 1 GiB; most deployments never come near it.
    256 * 1024 * 1024
}
fn default_analysis_cache_bytes() -> u64 {
    crate::sql::DEFAULT_CACHE_BYTES as u64
}
fn default_catalog_max_age_seconds() -> u64 {
    crate::cloak::DEFAULT_CATALOG_MAX_AGE.as_secs()
}
fn default_upstream_port() -> u16 {
    5432
}
fn default_connect_timeout_seconds() -> u64 {
    10
}

/// Validated, typed settings the proxy runs with.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub max_message_bytes: u32,
    /// None: one per core.
    pub session_threads: Option<usize>,
    /// The client leg's TLS, when configured.
    pub client_tls: Option<Arc<crate::tls::ServerTls>>,
    /// The upstream leg's TLS, when configured.
    pub upstream_tls: Option<Arc<crate::tls::UpstreamTls>>,
    /// The users' SCRAM verifiers, when pgcloak is the SCRAM endpoint.
    pub auth: Option<Arc<crate::proxy::login::AuthSource>>,
}

/// A smaller cache than this holds too few statements to be worth its lookups.
const MIN_ANALYSIS_CACHE_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The column policy (empty when there is no `tables` section).
    pub fn policy(&self, path: &Path) -> Result<Policy, ConfigError> {
        let Some(tables) = &self.tables else {
            return Ok(Policy::default());
        };
        Policy::from_yaml(tables).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })
    }

    /// Loads the master keys named by the `keys` section (reading the environment, key
    /// files, an HSM). `None` when the file configures no PII tables.
    pub fn master_keys(&self, path: &Path) -> Result<Option<MasterKeys>, ConfigError> {
        let invalid = |(key, message): (String, String)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let Some(keys) = &self.keys else {
            return match self.tables {
                Some(_) => Err(invalid((
                    "keys".into(),
                    "missing: `tables` names PII columns, so a master key is needed (keys: { master_key_env: PGCLOAK_MASTER_KEY }; make one with `pgcloak keygen`)".into(),
                ))),
                None => Ok(None),
            };
        };
        let base = path.parent().unwrap_or(Path::new("."));
        keys.load(base).map(Some).map_err(invalid)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check_values(path)?;
        config.analysis_cache_bytes(path)?;
        config.policy(path)?;
        Ok(config)
    }

    /// The budget of the analysis cache in bytes (0: no cache).
    pub fn analysis_cache_bytes(&self, path: &Path) -> Result<usize, ConfigError> {
        match self.analysis_cache_bytes {
            0 => Ok(0),
            n if n < MIN_ANALYSIS_CACHE_BYTES => Err(()),
            n => usize::try_from(n).map_err(drop),
        }
        .map_err(|()| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "analysis_cache_bytes".into(),
            message:
                "must be 0 (no cache) or at least 1048576 (1 MiB); the default is 67108864 (64 MiB)"
                    .into(),
        })
    }

    /// The checks of [`Config::settings`] that read no file and no environment variable
    /// (so that [`Config::parse`] can make them without loading certificates twice).
    fn check_values(&self, path: &Path) -> Result<SocketAddr, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        let listen = listen_addr(&self.listen, "listen", path)?;
        if self.upstream.host.trim().is_empty() {
            return Err(invalid("upstream.host", "must not be empty".into()));
        }
        if self.upstream.port == 0 {
            return Err(invalid(
                "upstream.port",
                "must be between 1 and 65535".into(),
            ));
        }
        if self.upstream.connect_timeout_seconds == 0 {
            return Err(invalid(
                "upstream.connect_timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.catalog_max_age_seconds == 0 {
            return Err(invalid(
                "catalog_max_age_seconds",
                "must be at least 1".into(),
            ));
        }
        if self.session_threads == Some(0) {
            return Err(invalid("session_threads", "must be at least 1".into()));
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err(invalid(
                "max_message_bytes",
                "must be at least 65536 (64 KiB)".into(),
            ));
        }
        Ok(listen)
    }

    /// The typed settings, with the certificates, keys and auth file they name loaded (the
    /// one place that does: call it once per start or reload), or an error naming the first
    /// invalid key.
    pub fn settings(&self, path: &Path) -> Result<ProxySettings, ConfigError> {
        let listen = self.check_values(path)?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        let tls_error = |e: crate::tls::TlsError| invalid(&e.key, e.message);
        let base = path.parent().unwrap_or(Path::new("."));
        let client_tls = match &self.tls {
            Some(tls) => Some(Arc::new(
                crate::tls::ServerTls::load(tls, base).map_err(tls_error)?,
            )),
            None => None,
        };
        let upstream_tls = match &self.upstream.tls {
            Some(tls) => Some(Arc::new(
                crate::tls::UpstreamTls::load(tls, &self.upstream.host, base).map_err(tls_error)?,
            )),
            None => None,
        };
        let auth = match &self.auth {
            None => None,
            Some(AuthConfig {
                file: Some(file),
                user: None,
                password_env: None,
                query: None,
            }) => {
                let file = base.join(file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    invalid("auth.file", format!("cannot read {}: {e}", file.display()))
                })?;
                let users = crate::auth::parse_auth_file(&text)
                    .map_err(|e| invalid("auth.file", format!("{}: {e}", file.display())))?;
                Some(Arc::new(crate::proxy::login::AuthSource::from_file(users)))
            }
            Some(AuthConfig { file: Some(_), .. }) => {
                return Err(invalid(
                    "auth",
                    "set either `file` or `user`/`password_env`/`query`, not both".into(),
                ))
            }
            Some(AuthConfig {
                file: None,
                user: Some(user),
                password_env: Some(var),
                query,
            }) => {
                let password = std::env::var(var).map_err(|_| {
                    invalid(
                        "auth.password_env",
                        format!("environment variable {var} is not set"),
                    )
                })?;
                let mut pg = tokio_postgres::Config::new();
                pg.host(&self.upstream.host)
                    .port(self.upstream.port)
                    .user(user)
                    .password(password)
                    .dbname("postgres")
                    .application_name("pgcloak auth")
                    .connect_timeout(Duration::from_secs(self.upstream.connect_timeout_seconds));
                let query = query
                    .clone()
                    .unwrap_or_else(|| crate::proxy::login::DEFAULT_AUTH_QUERY.to_owned());
                Some(Arc::new(crate::proxy::login::AuthSource::from_query(
                    pg,
                    upstream_tls.clone(),
                    query,
                )))
            }
            Some(_) => {
                return Err(invalid(
                    "auth",
                    "set `file`, or `user` and `password_env` (with an optional `query`)".into(),
                ))
            }
        };
        Ok(ProxySettings {
            auth,
            client_tls,
            upstream_tls,
            listen,
            upstream_host: self.upstream.host.clone(),
            upstream_port: self.upstream.port,
            connect_timeout: Duration::from_secs(self.upstream.connect_timeout_seconds),
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            max_message_bytes: self.max_message_bytes,
            session_threads: self.session_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("pgcloak.yaml"))
    }

    const MINIMAL: &str =
        "listen: \"127.0.0.1:6432\"\nupstream:\n  host: 127.0.0.1\n  port: 5432\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        let settings = config.settings(Path::new("x")).unwrap();
        assert_eq!(settings.listen.port(), 6432);
        assert_eq!(settings.upstream_port, 5432);
        assert_eq!(settings.max_connections, 1000);
    }

    #[test]
    fn unknown_top_level_key_names_key_and_file() {
        let err = parse("lisen: \"127.0.0.1:6432\"\nupstream: {host: h}\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("pgcloak.yaml: "), "{msg}");
        assert!(msg.contains("unknown field `lisen`"), "{msg}");
    }

    #[test]
    fn unknown_nested_key_is_rejected() {
        let err = parse("listen: \"127.0.0.1:1\"\nupstream: {host: h, prot: 1}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse("listen: \"127.0.0.1:1\"\n").unwrap_err();
        assert!(
            err.to_string().contains("missing field `upstream`"),
            "{err}"
        );
    }

    #[test]
    fn later_sections_are_accepted() {
        let text = format!(
            "{MINIMAL}keys:\n  master_key_env: K\ntables:\n  users:\n    email: deterministic\nsidecar:\n  listen: \"127.0.0.1:8080\"\n  database: app\n  user: app\n  private_key_file: k.pem\n"
        );
        let config = parse(&text).unwrap();
        assert!(config.tables.is_some() && config.keys.is_some() && config.sidecar.is_some());
    }

    #[test]
    fn policy_errors_name_the_column_key() {
        let err = parse(&format!("{MINIMAL}tables:\n  users:\n    email: plain\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pgcloak.yaml: `tables.users.email`: unknown mode"),
            "{err}"
        );
    }

    #[test]
    fn master_key_comes_from_the_environment() {
        let text = format!("{MINIMAL}keys:\n  master_key_env: PGCLOAK_TEST_KEY_UNSET_42\ntables:\n  users:\n    email: deterministic\n");
        let config = parse(&text).unwrap();
        let err = config.master_keys(Path::new("pgcloak.yaml")).unwrap_err();
        assert!(
            err.to_string().contains(
                "`keys.master_key_env`: environment variable PGCLOAK_TEST_KEY_UNSET_42 is not set"
            ),
            "{err}"
        );
        let no_keys = parse(&format!(
            "{MINIMAL}tables:\n  users:\n    email: deterministic\n"
        ))
        .unwrap();
        let err = no_keys.master_keys(Path::new("pgcloak.yaml")).unwrap_err();
        assert!(err.to_string().contains("`keys`: missing"), "{err}");
        assert!(parse(MINIMAL)
            .unwrap()
            .master_keys(Path::new("x"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn listen_takes_a_host_name_and_names_the_key_when_bad() {
        let err = parse("listen: localhost\nupstream: {host: h}\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pgcloak.yaml: `listen`: \"localhost\" is not an address:port"),
            "{err}"
        );
        let config = parse("listen: \"localhost:6432\"\nupstream: {host: h}\n").unwrap();
        let listen = config.settings(Path::new("x")).unwrap().listen;
        assert!(
            listen.ip().is_loopback() && listen.port() == 6432,
            "{listen}"
        );
    }

    #[test]
    fn auth_needs_a_readable_file_of_scram_verifiers() {
        let dir = std::env::temp_dir().join(format!("pgcloak-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("pgcloak.yaml");
        let load = |auth: &str| {
            Config::parse(&format!("{MINIMAL}auth: {auth}\n"), &config_path)?
                .settings(&config_path)
                .map(|_| ())
        };
        let err = load("{ file: missing.txt }").unwrap_err().to_string();
        assert!(
            err.contains("`auth.file`") && err.contains("missing.txt"),
            "{err}"
        );
        std::fs::write(dir.join("md5.txt"), "\"app\" \"md5abc\"\n").unwrap();
        let err = load("{ file: md5.txt }").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let verifier = crate::auth::Verifier::from_password("pw", b"0123456789abcdef", 4096);
        std::fs::write(
            dir.join("ok.txt"),
            format!("\"app\" \"{}\"\n", verifier.encode()),
        )
        .unwrap();
        load("{ file: ok.txt }").unwrap();
        let err = load("{ user: pgcloak_auth, password_env: PGCLOAK_TEST_UNSET_VAR }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auth.password_env`"), "{err}");
        let err = load("{ user: pgcloak_auth }").unwrap_err().to_string();
        assert!(err.contains("`auth`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_session_threads_is_invalid() {
        let err = parse(&format!("{MINIMAL}session_threads: 0\n")).unwrap_err();
        assert!(err.to_string().contains("`session_threads`"), "{err}");
        let config = parse(&format!("{MINIMAL}session_threads: 3\n")).unwrap();
        let settings = config.settings(Path::new("x")).unwrap();
        assert_eq!(settings.session_threads, Some(3));
    }

    #[test]
    fn zero_max_connections_is_invalid() {
        let err = parse(&format!("{MINIMAL}max_connections: 0\n")).unwrap_err();
        assert!(err.to_string().contains("`max_connections`"), "{err}");
    }

    #[test]
    fn analysis_cache_bytes_defaults_and_is_validated() {
        let bytes = |text: &str| parse(text).and_then(|c| c.analysis_cache_bytes(Path::new("x")));
        assert_eq!(bytes(MINIMAL).unwrap(), 64 * 1024 * 1024);
        let off = format!("{MINIMAL}analysis_cache_bytes: 0\n");
        assert_eq!(bytes(&off).unwrap(), 0);
        let small = format!("{MINIMAL}analysis_cache_bytes: 4096\n");
        let err = parse(&small).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "pgcloak.yaml: `analysis_cache_bytes`: must be 0 (no cache) or at least"
            ),
            "{err}"
        );
        let negative = format!("{MINIMAL}analysis_cache_bytes: -1\n");
        let err = parse(&negative).unwrap_err().to_string();
        assert!(
            err.starts_with("pgcloak.yaml: ") && err.contains("analysis_cache_bytes"),
            "{err}"
        );
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        for file in ["config/pgcloak.example.yaml", "config/demo.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
