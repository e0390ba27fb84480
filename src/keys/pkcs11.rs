//! A master key stored wrapped (encrypted) by a key that never leaves an HSM, unwrapped at
//! start through the HSM's PKCS#11 module.

use std::path::PathBuf;

use serde::Deserialize;

use super::source::KeySource;
use crate::crypto::MasterKey;

/// `pkcs11:` of a wrapped master key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `libsofthsm2.so` or a full path.
    pub module: PathBuf,
    pub token_label: String,
    /// The label of the wrapping key (AES) on the token.
    pub key_label: String,
    /// The environment variable holding the token's user PIN.
    pub pin_env: String,
}

/// `wrapped_file` unwrapped by the HSM's key.
#[derive(Debug)]
pub struct WrappedKey {
    pub wrapped_file: PathBuf,
    pub pkcs11: Pkcs11Config,
}

impl KeySource for WrappedKey {
    fn load(&self) -> Result<MasterKey, String> {
        Err("PKCS#11 keys are not supported yet".into())
    }
}
