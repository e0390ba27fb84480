//! `pgcloak keygen`: a fresh master key, printed as base64, or wrapped by an HSM key
//! (`--wrap-pkcs11`) and written to a file, never printed.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use pgcloak::crypto::MasterKey;
use pgcloak::keys::pkcs11::{self, Kek, Pkcs11Config};

#[derive(Args)]
pub struct KeygenArgs {
    /// Wrap the new key with an AES key on a PKCS#11 token and write it to --out, instead of
    /// printing it.
    #[arg(long, requires_all = ["module", "token_label", "key_label", "pin_env", "out"])]
    wrap_pkcs11: bool,
    /// The PKCS#11 module (e.g. libsofthsm2.so or a full path).
    #[arg(long, requires = "wrap_pkcs11")]
    module: Option<PathBuf>,
    /// The label of the token holding the wrapping key.
    #[arg(long, requires = "wrap_pkcs11")]
    token_label: Option<String>,
    /// The label of the AES wrapping key on the token.
    #[arg(long, requires = "wrap_pkcs11")]
    key_label: Option<String>,
    /// The environment variable holding the token's user PIN.
    #[arg(long, requires = "wrap_pkcs11", value_name = "VAR")]
    pin_env: Option<String>,
    /// The wrapped key file to write (an existing file is never overwritten).
    #[arg(long, requires = "wrap_pkcs11", value_name = "FILE")]
    out: Option<PathBuf>,
    /// Create an AES-256 wrapping key with --key-label on the token when there is none
    /// (sensitive, not extractable).
    #[arg(long, requires = "wrap_pkcs11")]
    create_kek: bool,
}

pub fn run(args: KeygenArgs) -> Result<(), String> {
    let key = MasterKey::generate();
    let (Some(module), Some(token_label), Some(key_label), Some(pin_env), Some(out)) = (
        args.module,
        args.token_label,
        args.key_label,
        args.pin_env,
        args.out,
    ) else {
        println!("{}", key.to_base64());
        return Ok(());
    };
    if out.exists() {
        return Err(format!(
            "{} exists: pgcloak never overwrites a key file (choose another --out)",
            out.display()
        ));
    }
    let config = Pkcs11Config {
        module,
        token_label,
        key_label,
        pin_env,
    };
    let (text, kek) = pkcs11::wrap(&config, &key, args.create_kek).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    if kek == Kek::Created {
        println!(
            "created AES-256 key {:?} on token {:?} (sensitive, not extractable)",
            config.key_label, config.token_label
        );
    }
    let name = out
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .filter(|s| !s.is_empty())
        .unwrap_or("k1");
    println!(
        "wrote {} (a new master key wrapped by AES key {:?} on token {:?}); in the config:",
        out.display(),
        config.key_label,
        config.token_label
    );
    println!(
        "keys:\n  current: {name}\n  master_keys:\n    {name}:\n      wrapped_file: {}   # a relative path is read from the config file's directory\n      pkcs11: {{ module: {}, token_label: {}, key_label: {}, pin_env: {} }}",
        out.display(),
        config.module.display(),
        yaml_string(&config.token_label),
        yaml_string(&config.key_label),
        config.pin_env
    );
    Ok(())
}

/// A label as a YAML flow scalar: quoted unless plainly safe.
fn yaml_string(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}
