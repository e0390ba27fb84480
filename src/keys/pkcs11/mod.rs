//! A master key stored wrapped (encrypted) by a key that never leaves an HSM, unwrapped at
//! start through the HSM's PKCS#11 module.
//!
//! The wrapping key is an AES-256 secret key on the token, found by its label; the master
//! key is encrypted with CKM_AES_GCM (C_Encrypt/C_Decrypt on the HSM, random 12-byte IV,
//! associated data [`wrapped_file::AAD`]) and stored in the file format of [`wrapped_file`].
//! The unwrapped bytes live only in zeroizing buffers and then in the [`MasterKey`].
//!
//! - [`token`]: the module, the session and the HSM operations.
//! - [`wrapped_file`]: the file format (pure).

mod token;
pub mod wrapped_file;

use std::path::{Path, PathBuf};

use cryptoki::types::AuthPin;
use serde::Deserialize;

use super::source::KeySource;
use crate::crypto::MasterKey;
pub use token::module_dirs;
use wrapped_file::WrappedFile;

/// `pkcs11:` of a wrapped master key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library): a bare file name (`libsofthsm2.so`) is looked
    /// up as the dynamic loader does, then in [`module_dirs`]; a relative path with a `/`
    /// is relative to the config file's directory.
    pub module: PathBuf,
    pub token_label: String,
    /// The label of the wrapping key (AES) on the token.
    pub key_label: String,
    /// The environment variable holding the token's user PIN.
    pub pin_env: String,
}

impl Pkcs11Config {
    /// The config with a relative module path (one with a `/`) made relative to `base`.
    pub fn relative_to(&self, base: &Path) -> Pkcs11Config {
        let mut config = self.clone();
        if config.module.is_relative() && config.module.components().count() > 1 {
            config.module = base.join(&self.module);
        }
        config
    }

    /// The token's user PIN from `pin_env`, held as a secret (never printed).
    fn pin(&self) -> Result<AuthPin, Pkcs11Error> {
        match std::env::var(&self.pin_env) {
            Ok(pin) if !pin.is_empty() => Ok(AuthPin::from(pin)),
            _ => Err(Pkcs11Error::NoPin {
                pin_env: self.pin_env.clone(),
            }),
        }
    }
}

/// What went wrong, by step. Messages name the module, token, key label or file, and never
/// contain the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("the token's user PIN: environment variable {pin_env} is not set")]
    NoPin { pin_env: String },
    #[error("PKCS#11 module {module} cannot be loaded: {reason}")]
    Module { module: String, reason: String },
    #[error("PKCS#11 module {module} has no token labelled {token_label:?} ({others})")]
    NoToken {
        module: String,
        token_label: String,
        others: String,
    },
    #[error("login to token {token_label:?} failed: {reason}")]
    Login { token_label: String, reason: String },
    #[error("wrapping key {key_label:?}: {reason}")]
    Key { key_label: String, reason: String },
    #[error("HSM error {step}: {reason}")]
    Hsm { step: String, reason: String },
    #[error("wrapped file {file}: {reason}")]
    File { file: String, reason: String },
    #[error("unwrap failed: {file} was not wrapped by the AES key {key_label:?} on token {token_label:?}, or was changed ({code})")]
    Unwrap {
        file: String,
        key_label: String,
        token_label: String,
        code: String,
    },
}

/// `wrapped_file` unwrapped by the HSM's key.
#[derive(Debug)]
pub struct WrappedKey {
    pub wrapped_file: PathBuf,
    pub pkcs11: Pkcs11Config,
}

impl KeySource for WrappedKey {
    fn load(&self) -> Result<MasterKey, String> {
        self.unwrap_key().map_err(|e| e.to_string())
    }
}

impl WrappedKey {
    fn unwrap_key(&self) -> Result<MasterKey, Pkcs11Error> {
        let file = self.wrapped_file.display().to_string();
        let text = std::fs::read_to_string(&self.wrapped_file).map_err(|e| Pkcs11Error::File {
            file: file.clone(),
            reason: format!("cannot be read: {e}"),
        })?;
        let wrapped = WrappedFile::parse(&text).map_err(|reason| Pkcs11Error::File {
            file: file.clone(),
            reason,
        })?;
        let hsm = &self.pkcs11;
        let pin = hsm.pin()?;
        token::with_session(hsm, &pin, false, |session| {
            let key = find_key(session, hsm)?;
            let unwrap_failed = |code: String| Pkcs11Error::Unwrap {
                file: file.clone(),
                key_label: hsm.key_label.clone(),
                token_label: hsm.token_label.clone(),
                code,
            };
            let plaintext = token::open(session, key, &wrapped)?.map_err(unwrap_failed)?;
            MasterKey::from_slice(&plaintext).map_err(|_| {
                unwrap_failed(format!("it unwraps to {} bytes, not 32", plaintext.len()))
            })
        })
    }
}

fn find_key(
    session: &cryptoki::session::Session,
    hsm: &Pkcs11Config,
) -> Result<cryptoki::object::ObjectHandle, Pkcs11Error> {
    token::find_aes_key(session, &hsm.key_label)?.ok_or_else(|| no_key(hsm))
}

fn no_key(hsm: &Pkcs11Config) -> Pkcs11Error {
    Pkcs11Error::Key {
        key_label: hsm.key_label.clone(),
        reason: format!(
            "no AES key with this label on token {:?} (create one with `pgcloak keygen --wrap-pkcs11 --create-kek`, or see README \"Master keys in an HSM\")",
            hsm.token_label
        ),
    }
}

/// Whether [`wrap`] found the wrapping key or created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kek {
    Found,
    Created,
}

/// Wraps `key` with the HSM key of `config` (creating an AES-256 key with that label
/// first when `create` and there is none), checks that the result unwraps to `key`, and
/// returns the wrapped file's text.
pub fn wrap(
    config: &Pkcs11Config,
    key: &MasterKey,
    create: bool,
) -> Result<(String, Kek), Pkcs11Error> {
    let pin = config.pin()?;
    token::with_session(config, &pin, create, |session| {
        let (kek, made) = match token::find_aes_key(session, &config.key_label)? {
            Some(kek) => (kek, Kek::Found),
            None if create => (
                token::create_aes_key(session, &config.key_label)?,
                Kek::Created,
            ),
            None => return Err(no_key(config)),
        };
        let wrapped = token::seal(session, kek, key.bytes())?;
        let round_trip = token::open(session, kek, &wrapped)?;
        if round_trip.as_deref().map(Vec::as_slice) != Ok(key.bytes().as_slice()) {
            return Err(Pkcs11Error::Hsm {
                step: "checking the wrapped key".into(),
                reason: "it does not unwrap to the key just wrapped".into(),
            });
        }
        Ok((wrapped.to_text(), made))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_or_pin_or_file_is_named() {
        let config = Pkcs11Config {
            module: "libpgcloak-no-such-module.so".into(),
            token_label: "t".into(),
            key_label: "k".into(),
            pin_env: "PGCLOAK_PKCS11_TEST_PIN_A".into(),
        };
        let dir = std::env::temp_dir().join(format!("pgcloak-pkcs11-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.wrapped");
        let file = WrappedFile {
            iv: [0; wrapped_file::IV_LEN],
            sealed: vec![0; wrapped_file::SEALED_LEN],
        };
        std::fs::write(&path, file.to_text()).unwrap();
        let source = WrappedKey {
            wrapped_file: path.clone(),
            pkcs11: config.clone(),
        };
        let err = source.load().unwrap_err();
        assert!(err.contains("PGCLOAK_PKCS11_TEST_PIN_A"), "{err}");
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("PGCLOAK_PKCS11_TEST_PIN_A", "1234") };
        let err = source.load().unwrap_err();
        assert!(
            err.contains("PKCS#11 module libpgcloak-no-such-module.so cannot be loaded")
                && err.contains("/usr/lib/softhsm"),
            "{err}"
        );
        assert!(!err.contains("1234"), "{err}");
        let missing = WrappedKey {
            wrapped_file: dir.join("missing.wrapped"),
            pkcs11: config,
        };
        let err = missing.load().unwrap_err();
        assert!(
            err.contains("missing.wrapped") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn a_relative_module_path_follows_the_config_file() {
        let config = |module: &str| Pkcs11Config {
            module: module.into(),
            token_label: "t".into(),
            key_label: "k".into(),
            pin_env: "P".into(),
        };
        let base = Path::new("/etc/pgcloak");
        let module = |m: &str| config(m).relative_to(base).module;
        assert_eq!(module("libsofthsm2.so"), Path::new("libsofthsm2.so"));
        assert_eq!(module("lib/x.so"), Path::new("/etc/pgcloak/lib/x.so"));
        assert_eq!(module("/usr/lib/x.so"), Path::new("/usr/lib/x.so"));
    }
}
