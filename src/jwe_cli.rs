//! `pgcloak jwe`: the party's side of the sidecar on the command line, so the whole flow can
//! be tried with curl: make key pairs, encrypt (and sign) a record, make a bearer token,
//! decrypt a fetched record.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use pgcloak::sidecar::jose;

#[derive(Subcommand)]
pub enum JweCommand {
    /// Write a key pair: DIR/NAME.pem (private, mode 0600) and DIR/NAME.pub.pem.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "sidecar")]
        name: String,
        #[arg(long, value_enum, default_value = "rsa")]
        r#type: KeyType,
        /// RSA key size.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
    },
    /// Read JSON on stdin and print a JWE encrypted to --to; with --sign-with, the JSON is
    /// first signed as a JWS whose kid is --kid (what /v1/ingest expects), with a random
    /// `jti`, `iat` and `exp` added to a JSON object so that the record is accepted once.
    Encrypt {
        /// The recipient's public key (PEM).
        #[arg(long)]
        to: PathBuf,
        /// The sender's private key (PEM).
        #[arg(long, requires = "kid")]
        sign_with: Option<PathBuf>,
        /// The party id put in the signature's header.
        #[arg(long, requires = "sign_with")]
        kid: Option<String>,
        /// Print the flattened JSON serialization (application/jose+json) instead of compact.
        #[arg(long)]
        json: bool,
        /// Seconds the signed record stays valid (`exp`; the sidecar accepts at most 300);
        /// 0 adds no claims, and the record can then be posted more than once.
        #[arg(long, default_value_t = 240)]
        ttl: i64,
    },
    /// Print a bearer token for GET /v1/records: a JWT with kid = sub = --kid.
    Token {
        #[arg(long)]
        sign_with: PathBuf,
        #[arg(long)]
        kid: String,
        /// Lifetime in seconds (the sidecar accepts at most 300).
        #[arg(long, default_value_t = 240)]
        ttl: i64,
    },
    /// Read a compact JWE on stdin and print its plaintext.
    Decrypt {
        /// The recipient's private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KeyType {
    Rsa,
    /// P-256 (ES256 signatures, ECDH-ES encryption).
    Ec,
    /// Ed25519 (EdDSA signatures only).
    Ed25519,
}

pub fn run(command: JweCommand) -> Result<(), String> {
    match command {
        JweCommand::Keygen {
            out,
            name,
            r#type,
            bits,
        } => keygen(&out, &name, r#type, bits),
        JweCommand::Encrypt {
            to,
            sign_with,
            kid,
            json,
            ttl,
        } => {
            let input = read_stdin()?;
            let value = serde_json::from_slice::<serde_json::Value>(&input)
                .map_err(|e| format!("stdin is not JSON: {e}"))?;
            let encrypter =
                jose::encrypter(&read(&to)?).map_err(|e| format!("{}: {e}", to.display()))?;
            let (plaintext, nested) = match (sign_with, kid) {
                (Some(key), Some(kid)) => {
                    let payload = match value {
                        serde_json::Value::Object(record) if ttl > 0 => {
                            with_claims(record, ttl)?.into_bytes()
                        }
                        _ => input,
                    };
                    (sign(&key, &kid, &payload)?.into_bytes(), true)
                }
                _ => (input, false),
            };
            let jwe = jose::encrypt(&plaintext, encrypter.as_ref(), nested, json)
                .map_err(|e| e.to_string())?;
            println!("{jwe}");
            Ok(())
        }
        JweCommand::Token {
            sign_with,
            kid,
            ttl,
        } => {
            let now = now()?;
            let claims = serde_json::json!({ "sub": kid, "iat": now, "exp": now + ttl });
            println!("{}", sign(&sign_with, &kid, claims.to_string().as_bytes())?);
            Ok(())
        }
        JweCommand::Decrypt { key } => {
            let server_key = jose::ServerKey::from_pem(&read(&key)?)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            let plaintext = server_key
                .decrypt_compact(&read_stdin()?)
                .map_err(|e| e.to_string())?;
            let mut stdout = std::io::stdout();
            stdout
                .write_all(&plaintext)
                .and_then(|()| stdout.write_all(b"\n"))
                .map_err(|e| e.to_string())
        }
    }
}

fn now() -> Result<i64, String> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|e| e.to_string())
}

/// The record with a random `jti`, `iat` now and `exp` in `ttl` seconds, where it has none.
fn with_claims(
    mut record: serde_json::Map<String, serde_json::Value>,
    ttl: i64,
) -> Result<String, String> {
    let mut jti = [0u8; 16];
    openssl::rand::rand_bytes(&mut jti).map_err(|e| format!("no random bytes: {e}"))?;
    let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
    let now = now()?;
    for (name, value) in [
        ("jti", serde_json::Value::from(jti)),
        ("iat", now.into()),
        ("exp", (now + ttl).into()),
    ] {
        record.entry(name).or_insert(value);
    }
    serde_json::to_string(&record).map_err(|e| e.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(input)
}

fn sign(key: &Path, kid: &str, payload: &[u8]) -> Result<String, String> {
    let signer = jose::signer(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))?;
    jose::sign(payload, signer.as_ref(), kid).map_err(|e| e.to_string())
}

fn keygen(dir: &Path, name: &str, key_type: KeyType, bits: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let ssl = |e: openssl::error::ErrorStack| format!("cannot generate the key: {e}");
    let key = match key_type {
        KeyType::Rsa => {
            if bits < 2048 {
                return Err("--bits must be at least 2048".into());
            }
            PKey::from_rsa(Rsa::generate(bits).map_err(ssl)?).map_err(ssl)?
        }
        KeyType::Ec => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ssl)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(ssl)?).map_err(ssl)?
        }
        KeyType::Ed25519 => PKey::generate_ed25519().map_err(ssl)?,
    };
    let private = key.private_key_to_pem_pkcs8().map_err(ssl)?;
    let public = key.public_key_to_pem().map_err(ssl)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let private_path = dir.join(format!("{name}.pem"));
    let public_path = dir.join(format!("{name}.pub.pem"));
    let write_err =
        |path: &Path, e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private_path)
        .and_then(|mut f| f.write_all(&private))
        .map_err(|e| write_err(&private_path, e))?;
    std::fs::write(&public_path, public).map_err(|e| write_err(&public_path, e))?;
    println!("private key: {}", private_path.display());
    println!("public key:  {}", public_path.display());
    Ok(())
}
