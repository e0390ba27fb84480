//! Applying the column policy to one session's frames: values bound for PII columns are
//! encrypted on the way in (Query, Parse, Bind, COPY data) and envelopes are decrypted on
//! the way out (DataRow). Refused statements are swapped for a marker the server rejects,
//! and the server's error for it is swapped back for pgcloak's message, so the server
//! itself keeps the protocol order and transaction state right.

mod access;
pub mod array;
mod catalog;
mod client;
#[doc(hidden)]
pub mod copy;
mod server;
pub mod tracker;
mod typed;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::crypto::Keyring;
use crate::policy::Policy;
use crate::sql::{AnalysisCache, Refusal};
use tracker::Tracker;

pub use client::ClientCloak;
pub use server::ServerCloak;

/// Shared by all sessions: the policy, its analysis cache and the keys.
pub struct Cloak {
    cache: AnalysisCache,
    keyring: Keyring,
    /// DDL statements committed by sessions through this pgcloak.
    ddl_committed: AtomicU64,
    started: Instant,
    /// How old a session's column map may grow before its next PII statement reads it
    /// again (DDL sent to Postgres directly is noticed no later than this).
    catalog_max_age: Duration,
}

/// The default of `catalog_max_age_seconds`.
pub const DEFAULT_CATALOG_MAX_AGE: Duration = Duration::from_secs(60);

impl Cloak {
    pub fn new(policy: Arc<Policy>, keyring: Keyring) -> Cloak {
        Cloak {
            cache: AnalysisCache::new(policy, crate::sql::DEFAULT_CACHE_BYTES),
            keyring,
            ddl_committed: AtomicU64::new(0),
            started: Instant::now(),
            catalog_max_age: DEFAULT_CATALOG_MAX_AGE,
        }
    }

    /// The same cloak with column maps read again after `age` at the latest.
    pub fn with_catalog_max_age(self, age: Duration) -> Cloak {
        Cloak {
            catalog_max_age: age.max(Duration::from_secs(1)),
            ..self
        }
    }

    /// The generation of the catalog a session's map must have been read under.
    fn catalog_generation(&self) -> tracker::Generation {
        tracker::Generation {
            ddl: self.ddl_committed.load(Ordering::Acquire),
            epoch: (self.started.elapsed().as_secs() / self.catalog_max_age.as_secs().max(1)),
        }
    }

    /// A session committed DDL: every session reads its map again before its next PII
    /// statement.
    fn catalog_changed(&self) {
        self.ddl_committed.fetch_add(1, Ordering::AcqRel);
    }

    /// The cloak a config asks for: `None` when it names no PII tables.
    pub fn from_config(
        config: &crate::config::Config,
        path: &std::path::Path,
    ) -> Result<Option<Arc<Cloak>>, crate::config::ConfigError> {
        let policy = config.policy(path)?;
        let Some(keys) = config.master_keys(path)? else {
            return Ok(None);
        };
        let cache_bytes = config.analysis_cache_bytes(path)?;
        let cloak = Cloak::with_keys(policy, &keys)
            .map_err(|message| crate::config::ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "keys.master_keys".into(),
                message,
            })?
            .with_analysis_cache_bytes(cache_bytes)
            .with_catalog_max_age(Duration::from_secs(config.catalog_max_age_seconds));
        Ok(Some(Arc::new(cloak)))
    }

    /// The same cloak with an analysis cache of at most `bytes` (0: no cache).
    pub fn with_analysis_cache_bytes(self, bytes: usize) -> Cloak {
        let policy = self.cache.policy_handle();
        Cloak {
            cache: AnalysisCache::new(policy, bytes),
            ..self
        }
    }

    /// A cloak for `policy`, with column keys derived from `master`.
    pub fn with_key(policy: Policy, master: &crate::crypto::MasterKey) -> Cloak {
        let mut keyring = Keyring::new(master, &Cloak::keyed_columns(&policy));
        for (column, owner) in policy.shared_keys() {
            keyring.share(&column.to_string(), &owner.to_string());
        }
        Cloak::new(Arc::new(policy), keyring)
    }

    /// A cloak for `policy` with column keys under every master key of `keys` (new values
    /// under the current one); an error when two keys cannot be told apart.
    pub fn with_keys(policy: Policy, keys: &crate::keys::MasterKeys) -> Result<Cloak, String> {
        let keys: Vec<_> = keys.iter().collect();
        let mut keyring = Keyring::with_keys(&keys, &Cloak::keyed_columns(&policy))?;
        for (column, owner) in policy.shared_keys() {
            keyring.share(&column.to_string(), &owner.to_string());
        }
        Ok(Cloak::new(Arc::new(policy), keyring))
    }

    /// The columns that own keys (the others share one: `same_key_as`), with their modes.
    fn keyed_columns(policy: &Policy) -> Vec<(String, crate::crypto::Mode)> {
        policy
            .columns()
            .filter(|(id, _)| policy.key_of(id) == id)
            .map(|(id, mode)| (id.to_string(), mode))
            .collect()
    }

    /// The column policy.
    pub fn policy(&self) -> &Policy {
        self.cache.policy()
    }

    /// The column keys (shared with the JWE sidecar, which encrypts what parties send).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The two filters of one session, sharing its state.
    pub fn session(self: &Arc<Cloak>) -> (ClientCloak, ServerCloak) {
        let state = Arc::new(Mutex::new(SessionState::default()));
        (
            ClientCloak::new(self.clone(), state.clone()),
            ServerCloak::new(self.clone(), state),
        )
    }
}

/// What one session's two directions share.
#[derive(Default)]
struct SessionState {
    /// Statements, portals, replies due, catalog and server settings.
    tracker: Tracker,
    /// Marker sent in place of a refused statement → the refusal to report.
    refusals: HashMap<String, Refusal>,
    next_marker: u64,
    /// COPY FROM STDIN into a PII table in progress.
    copy_in: Option<copy::CopyIn>,
}

impl SessionState {
    /// Registers a refusal and returns the SQL to send instead: a bare marker that the
    /// server rejects as a syntax error, naming the marker in its message.
    fn refuse(&mut self, refusal: Refusal) -> String {
        self.next_marker += 1;
        let marker = format!("pgcloak_refused_{}", self.next_marker);
        self.refusals.insert(marker.clone(), refusal);
        marker
    }
}

fn lock(state: &Mutex<SessionState>) -> MutexGuard<'_, SessionState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod session_tests;
