//! The master keys: which exist, where each comes from ([`KeySource`]: an environment
//! variable, a file, or a file wrapped by an HSM key), and which one new values are written
//! under (`keys.current`). Reads decrypt under any configured key, since each envelope names
//! the key it was written under (its key id is derived from the master key).
//!
//! The one-key form (`master_key_env` / `master_key_file`) is a single key named
//! [`DEFAULT_KEY_NAME`]; its envelopes are the same as before several keys existed.

pub mod pkcs11;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::crypto::MasterKey;
pub use source::{EnvKey, FileKey, KeySource};

/// The name of the key of the one-key form.
pub const DEFAULT_KEY_NAME: &str = "default";

/// `keys:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub master_key_env: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// The key new values are written under (a name in `master_keys`).
    pub current: Option<String>,
    /// Every key that may still have written data, by name.
    #[serde(default)]
    pub master_keys: BTreeMap<String, MasterKeyConfig>,
}

/// One entry of `keys.master_keys`: exactly one of `env`, `file`, or `wrapped_file` with
/// `pkcs11`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterKeyConfig {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    pub wrapped_file: Option<PathBuf>,
    pub pkcs11: Option<pkcs11::Pkcs11Config>,
}

/// A config error: the key (dotted path under `keys`) and what is wrong.
pub type KeysError = (String, String);

/// Each key's source by name, and the name of the current key.
pub type Sources = (Vec<(String, Box<dyn KeySource>)>, String);

/// The loaded master keys, the current one first.
#[derive(Debug)]
pub struct MasterKeys {
    keys: Vec<(String, MasterKey)>,
}

impl MasterKeys {
    /// One key, named [`DEFAULT_KEY_NAME`] (tests, the demo, the one-key form).
    pub fn single(key: MasterKey) -> MasterKeys {
        MasterKeys {
            keys: vec![(DEFAULT_KEY_NAME.to_owned(), key)],
        }
    }

    /// Several keys; `current` is written under. Identical keys under two names are an
    /// error (their envelopes could not be told apart).
    pub fn new(keys: Vec<(String, MasterKey)>, current: &str) -> Result<MasterKeys, KeysError> {
        let Some(position) = keys.iter().position(|(name, _)| name == current) else {
            return Err((
                "keys.current".into(),
                format!("names {current:?}, which is not in keys.master_keys"),
            ));
        };
        for (i, (a, key_a)) in keys.iter().enumerate() {
            if let Some((b, _)) = keys[i + 1..].iter().find(|(_, key_b)| key_b == key_a) {
                return Err((
                    format!("keys.master_keys.{b}"),
                    format!("is the same key as keys.master_keys.{a}: give each name its own key (`pgcloak keygen`)"),
                ));
            }
        }
        let mut keys = keys;
        let current = keys.remove(position);
        keys.insert(0, current);
        Ok(MasterKeys { keys })
    }

    /// (name, key), the current key first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MasterKey)> {
        self.keys.iter().map(|(name, key)| (name.as_str(), key))
    }

    pub fn current_name(&self) -> &str {
        &self.keys[0].0
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeysConfig {
    /// Each key's source by name, and the name of the current key. Paths are relative to
    /// `base` (the config file's directory).
    pub fn sources(&self, base: &Path) -> Result<Sources, KeysError> {
        let invalid = |key: &str, message: &str| Err((key.to_owned(), message.to_owned()));
        let one_key = self.master_key_env.is_some() || self.master_key_file.is_some();
        if one_key && (self.current.is_some() || !self.master_keys.is_empty()) {
            return invalid(
                "keys",
                "use either master_key_env/master_key_file (one key) or current + master_keys, not both",
            );
        }
        if one_key {
            let source: Box<dyn KeySource> = match (&self.master_key_env, &self.master_key_file) {
                (Some(var), None) => Box::new(EnvKey { var: var.clone() }),
                (None, Some(file)) => Box::new(FileKey {
                    path: base.join(file),
                }),
                _ => {
                    return invalid(
                        "keys",
                        "set exactly one of master_key_env and master_key_file",
                    )
                }
            };
            return Ok((
                vec![(DEFAULT_KEY_NAME.to_owned(), source)],
                DEFAULT_KEY_NAME.to_owned(),
            ));
        }
        if self.master_keys.is_empty() {
            return invalid(
                "keys",
                "names no key: set master_key_env (one key, e.g. PGCLOAK_MASTER_KEY; make one with `pgcloak keygen`) or current + master_keys",
            );
        }
        let Some(current) = &self.current else {
            return invalid(
                "keys.current",
                "missing: name the key new values are written under",
            );
        };
        if !self.master_keys.contains_key(current) {
            return invalid(
                "keys.current",
                &format!("names {current:?}, which is not in keys.master_keys"),
            );
        }
        let mut sources = Vec::with_capacity(self.master_keys.len());
        for (name, key) in &self.master_keys {
            let at = format!("keys.master_keys.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return invalid(&at, "a key name is letters, digits, `_` and `-`");
            }
            let source: Box<dyn KeySource> = match key {
                MasterKeyConfig { env: Some(var), file: None, wrapped_file: None, pkcs11: None } => {
                    Box::new(EnvKey { var: var.clone() })
                }
                MasterKeyConfig { env: None, file: Some(file), wrapped_file: None, pkcs11: None } => {
                    Box::new(FileKey { path: base.join(file) })
                }
                MasterKeyConfig { env: None, file: None, wrapped_file: Some(file), pkcs11: Some(hsm) } => {
                    Box::new(pkcs11::WrappedKey {
                        wrapped_file: base.join(file),
                        pkcs11: hsm.relative_to(base),
                    })
                }
                MasterKeyConfig { wrapped_file: Some(_), pkcs11: None, .. } => {
                    return invalid(&format!("{at}.pkcs11"), "missing: a wrapped_file is unwrapped by an HSM key (pkcs11: { module, token_label, key_label, pin_env })")
                }
                _ => return invalid(&at, "set exactly one of env, file, or wrapped_file with pkcs11"),
            };
            sources.push((name.clone(), source));
        }
        Ok((sources, current.clone()))
    }

    /// Loads every key (reading the environment, files, the HSM).
    pub fn load(&self, base: &Path) -> Result<MasterKeys, KeysError> {
        let (sources, current) = self.sources(base)?;
        let mut keys = Vec::with_capacity(sources.len());
        for (name, source) in sources {
            let key = source.load().map_err(|message| {
                let at = match name.as_str() {
                    DEFAULT_KEY_NAME if self.master_keys.is_empty() => match self.master_key_env {
                        Some(_) => "keys.master_key_env".to_owned(),
                        None => "keys.master_key_file".to_owned(),
                    },
                    _ => format!("keys.master_keys.{name}"),
                };
                (at, message)
            })?;
            keys.push((name, key));
        }
        MasterKeys::new(keys, &current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> KeysConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn several_keys_load_with_the_current_one_first() {
        let dir = std::env::temp_dir().join(format!("pgcloak-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k1"), MasterKey::generate().to_base64()).unwrap();
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("PGCLOAK_KEYS_TEST_K2", MasterKey::generate().to_base64()) };
        let config = keys(
            "current: k2\nmaster_keys:\n  k1: { file: k1 }\n  k2: { env: PGCLOAK_KEYS_TEST_K2 }\n",
        );
        let loaded = config.load(&dir).unwrap();
        assert_eq!(loaded.current_name(), "k2");
        let names: Vec<_> = loaded.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["k2", "k1"]);
    }

    #[test]
    fn each_mistake_names_its_key() {
        let dir = Path::new("/nonexistent");
        let cases = [
            (
                "current: k9\nmaster_keys:\n  k1: { env: X }\n",
                "keys.current",
            ),
            ("master_keys:\n  k1: { env: X }\n", "keys.current"),
            (
                "current: k1\nmaster_keys:\n  k1: { env: X, file: f }\n",
                "keys.master_keys.k1",
            ),
            (
                "current: k1\nmaster_keys:\n  k1: { wrapped_file: w }\n",
                "keys.master_keys.k1.pkcs11",
            ),
            ("master_key_env: X\ncurrent: k1\n", "keys"),
            ("{}", "keys"),
            (
                "current: k1\nmaster_keys:\n  k1: { file: missing }\n",
                "keys.master_keys.k1",
            ),
            ("master_key_file: missing\n", "keys.master_key_file"),
        ];
        for (yaml, key) in cases {
            let err = keys(yaml).load(dir).unwrap_err();
            assert_eq!(err.0, key, "{yaml}: {err:?}");
        }
        let err = keys("current: k1\nmaster_keys:\n  k1: { file: missing }\n")
            .load(dir)
            .unwrap_err();
        assert!(err.1.contains("/nonexistent/missing"), "{err:?}");
    }

    #[test]
    fn the_same_key_under_two_names_is_refused() {
        let zero = || MasterKey::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        let err =
            MasterKeys::new(vec![("a".into(), zero()), ("b".into(), zero())], "a").unwrap_err();
        assert_eq!(err.0, "keys.master_keys.b");
    }
}
