//! The sidecar's JOSE keys: its own private key (PEM, RSA or EC), each party's public keys
//! as verifiers and encrypters, and the signing and encrypting helpers `pgcloak jwe`, the
//! tests and the benchmarks use to play a party.

use josekit::jwe::{self, JweContext, JweDecrypter, JweEncrypter, JweHeader};
use josekit::jws::{self, JwsHeader, JwsSigner, JwsVerifier};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use serde_json::Value;

use super::{jwe_header, JweForm};

/// Content encryptions accepted on ingest.
pub const ACCEPTED_ENC: [&str; 3] = ["A128GCM", "A256GCM", "A128CBC-HS256"];
/// Content encryption of responses.
pub(super) const RESPONSE_ENC: &str = "A256GCM";

/// A key problem, for config errors and the CLI.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

fn key_error(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

/// The server's private key, with a decrypter for every JWE `alg` it can serve.
pub struct ServerKey {
    decrypters: Vec<(&'static str, Box<dyn JweDecrypter>)>,
}

impl ServerKey {
    /// An RSA (>= 2048 bits) or EC (P-256/384/521) private key in PEM (PKCS#8 or traditional).
    pub fn from_pem(pem: &[u8]) -> Result<ServerKey, KeyError> {
        let key = private_key(pem)?;
        let pkcs8 = key
            .private_key_to_pem_pkcs8()
            .map_err(|e| key_error(format!("cannot re-encode the key: {e}")))?;
        let jose = |e: josekit::JoseError| key_error(e.to_string());
        let decrypters: Vec<(&'static str, Box<dyn JweDecrypter>)> = match key.id() {
            Id::RSA => {
                let bits = key.bits();
                if bits < 2048 {
                    return Err(key_error(format!(
                        "RSA key has {bits} bits; at least 2048 are needed"
                    )));
                }
                vec![
                    (
                        "RSA-OAEP",
                        Box::new(jwe::RSA_OAEP.decrypter_from_pem(&pkcs8).map_err(jose)?),
                    ),
                    (
                        "RSA-OAEP-256",
                        Box::new(jwe::RSA_OAEP_256.decrypter_from_pem(&pkcs8).map_err(jose)?),
                    ),
                ]
            }
            Id::EC => vec![
                (
                    "ECDH-ES",
                    Box::new(jwe::ECDH_ES.decrypter_from_pem(&pkcs8).map_err(jose)?),
                ),
                (
                    "ECDH-ES+A128KW",
                    Box::new(
                        jwe::ECDH_ES_A128KW
                            .decrypter_from_pem(&pkcs8)
                            .map_err(jose)?,
                    ),
                ),
                (
                    "ECDH-ES+A256KW",
                    Box::new(
                        jwe::ECDH_ES_A256KW
                            .decrypter_from_pem(&pkcs8)
                            .map_err(jose)?,
                    ),
                ),
            ],
            Id::X25519 => vec![(
                "ECDH-ES",
                Box::new(jwe::ECDH_ES.decrypter_from_pem(&pkcs8).map_err(jose)?),
            )],
            _ => return Err(key_error("expected an RSA or EC private key")),
        };
        Ok(ServerKey { decrypters })
    }

    /// Decrypts a compact JWE (any accepted `alg`/`enc`, no compression): for the CLI.
    pub fn decrypt_compact(&self, jwe: &[u8]) -> Result<Vec<u8>, KeyError> {
        let header = jwe_header(jwe, JweForm::Compact).map_err(|e| key_error(e.message))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let decrypter = self
            .decrypter(alg)
            .ok_or_else(|| key_error(format!("this key cannot decrypt JWE alg {alg:?}")))?;
        let mut context = JweContext::new();
        context.remove_compression("DEF");
        let (plaintext, _) = context
            .deserialize_compact(jwe.trim_ascii(), decrypter)
            .map_err(|_| key_error("the JWE cannot be decrypted with this key"))?;
        Ok(plaintext)
    }

    /// The JWE `alg` values this key decrypts.
    pub fn algorithms(&self) -> Vec<&'static str> {
        self.decrypters.iter().map(|(alg, _)| *alg).collect()
    }

    pub(super) fn decrypter(&self, alg: &str) -> Option<&dyn JweDecrypter> {
        let found = self.decrypters.iter().find(|(name, _)| *name == alg);
        found.map(|(_, decrypter)| decrypter.as_ref())
    }
}

/// A JWS algorithm name and its verifier.
type Verifier = (&'static str, Box<dyn JwsVerifier>);

/// A party's public keys: verifiers for the JWS algorithms its key can sign with, and an
/// encrypter for responses when it has a key that can receive them.
pub struct PartyKeys {
    verifiers: Vec<Verifier>,
    pub(super) encrypter: Option<Box<dyn JweEncrypter>>,
}

impl PartyKeys {
    /// `signing`: RSA, EC or Ed25519 public key PEM. `encryption`: a separate RSA, EC or
    /// X25519 public key for responses. The error names which of the two is wrong.
    pub fn from_pem(
        signing: &[u8],
        encryption: Option<&[u8]>,
    ) -> Result<PartyKeys, (&'static str, KeyError)> {
        let verifiers = verifiers(signing).map_err(|e| ("public_key_file", e))?;
        let encrypter = match encryption {
            Some(pem) => Some(encrypter(pem).map_err(|e| ("encryption_key_file", e))?),
            None => encrypter(signing).ok(),
        };
        Ok(PartyKeys {
            verifiers,
            encrypter,
        })
    }

    pub(super) fn verifier(&self, alg: &str) -> Option<&dyn JwsVerifier> {
        let found = self.verifiers.iter().find(|(name, _)| *name == alg);
        found.map(|(_, verifier)| verifier.as_ref())
    }

    pub(super) fn accepted(&self) -> String {
        let algs: Vec<&str> = self.verifiers.iter().map(|(alg, _)| *alg).collect();
        algs.join(", ")
    }
}

fn private_key(pem: &[u8]) -> Result<PKey<Private>, KeyError> {
    PKey::private_key_from_pem(pem)
        .map_err(|_| key_error("not a PEM private key (PKCS#8 or traditional RSA/EC)"))
}

fn public_key(pem: &[u8]) -> Result<PKey<Public>, KeyError> {
    if let Ok(key) = PKey::public_key_from_pem(pem) {
        return Ok(key);
    }
    let rsa = openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem)
        .map_err(|_| key_error("not a PEM public key (SubjectPublicKeyInfo or PKCS#1 RSA)"))?;
    PKey::from_rsa(rsa).map_err(|e| key_error(e.to_string()))
}

fn spki_pem(key: &PKey<Public>) -> Result<Vec<u8>, KeyError> {
    key.public_key_to_pem()
        .map_err(|e| key_error(format!("cannot re-encode the key: {e}")))
}

/// The JWS algorithm an EC key's curve signs with.
fn ec_alg(key_curve: Option<Nid>) -> Result<&'static str, KeyError> {
    match key_curve {
        Some(Nid::X9_62_PRIME256V1) => Ok("ES256"),
        Some(Nid::SECP384R1) => Ok("ES384"),
        Some(Nid::SECP521R1) => Ok("ES512"),
        _ => Err(key_error("EC keys must be on P-256, P-384 or P-521")),
    }
}

fn verifiers(pem: &[u8]) -> Result<Vec<Verifier>, KeyError> {
    let key = public_key(pem)?;
    let spki = spki_pem(&key)?;
    let jose = |e: josekit::JoseError| key_error(e.to_string());
    Ok(match key.id() {
        Id::RSA => {
            if key.bits() < 2048 {
                return Err(key_error(format!(
                    "RSA key has {} bits; at least 2048 are needed",
                    key.bits()
                )));
            }
            // josekit's PS256 takes an rsaEncryption key only in PKCS#1 form (from which it
            // builds the RSASSA-PSS parameters itself).
            let pkcs1 = (key.rsa().and_then(|rsa| rsa.public_key_to_pem_pkcs1()))
                .map_err(|e| key_error(format!("cannot re-encode the key: {e}")))?;
            let rs256 = jws::RS256.verifier_from_pem(&spki).map_err(jose)?;
            let ps256 = jws::PS256.verifier_from_pem(&pkcs1).map_err(jose)?;
            vec![("RS256", Box::new(rs256)), ("PS256", Box::new(ps256))]
        }
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
            let verifier: Box<dyn JwsVerifier> = match ec_alg(curve)? {
                "ES256" => Box::new(jws::ES256.verifier_from_pem(&spki).map_err(jose)?),
                "ES384" => Box::new(jws::ES384.verifier_from_pem(&spki).map_err(jose)?),
                _ => Box::new(jws::ES512.verifier_from_pem(&spki).map_err(jose)?),
            };
            vec![(ec_alg(curve)?, verifier)]
        }
        Id::ED25519 => vec![(
            "EdDSA",
            Box::new(jws::EdDSA.verifier_from_pem(&spki).map_err(jose)?),
        )],
        _ => return Err(key_error("expected an RSA, EC or Ed25519 public key")),
    })
}

/// An encrypter to a public key: RSA-OAEP-256 for RSA keys, ECDH-ES for EC and X25519 keys.
pub fn encrypter(pem: &[u8]) -> Result<Box<dyn JweEncrypter>, KeyError> {
    let key = public_key(pem)?;
    let spki = spki_pem(&key)?;
    let jose = |e: josekit::JoseError| key_error(e.to_string());
    match key.id() {
        Id::RSA => Ok(Box::new(
            jwe::RSA_OAEP_256.encrypter_from_pem(&spki).map_err(jose)?,
        )),
        Id::EC | Id::X25519 => Ok(Box::new(
            jwe::ECDH_ES.encrypter_from_pem(&spki).map_err(jose)?,
        )),
        Id::ED25519 => Err(key_error(
            "an Ed25519 key can only sign; give an RSA, EC or X25519 key to encrypt to",
        )),
        _ => Err(key_error("expected an RSA, EC or X25519 public key")),
    }
}

/// A signer for a private key, with the JWS algorithm it uses: RS256 for RSA, ES256/384/512
/// for EC by curve, EdDSA for Ed25519.
pub fn signer(pem: &[u8]) -> Result<Box<dyn JwsSigner>, KeyError> {
    let key = private_key(pem)?;
    let pkcs8 = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| key_error(format!("cannot re-encode the key: {e}")))?;
    let jose = |e: josekit::JoseError| key_error(e.to_string());
    match key.id() {
        Id::RSA => Ok(Box::new(jws::RS256.signer_from_pem(&pkcs8).map_err(jose)?)),
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
            Ok(match ec_alg(curve)? {
                "ES256" => Box::new(jws::ES256.signer_from_pem(&pkcs8).map_err(jose)?),
                "ES384" => Box::new(jws::ES384.signer_from_pem(&pkcs8).map_err(jose)?),
                _ => Box::new(jws::ES512.signer_from_pem(&pkcs8).map_err(jose)?),
            })
        }
        Id::ED25519 => Ok(Box::new(jws::EdDSA.signer_from_pem(&pkcs8).map_err(jose)?)),
        _ => Err(key_error("expected an RSA, EC or Ed25519 private key")),
    }
}

/// Signs `payload` as a compact JWS whose header `kid` is `kid`.
pub fn sign(payload: &[u8], signer: &dyn JwsSigner, kid: &str) -> Result<String, KeyError> {
    let mut header = JwsHeader::new();
    header.set_key_id(kid);
    jws::serialize_compact(payload, &header, signer).map_err(|e| key_error(e.to_string()))
}

/// Encrypts `plaintext` as a JWE with `enc` A256GCM; `cty: JWT` when it is a signed JWT.
pub fn encrypt(
    plaintext: &[u8],
    encrypter: &dyn JweEncrypter,
    nested_jwt: bool,
    json_form: bool,
) -> Result<String, KeyError> {
    let result = if json_form {
        let mut header = jwe::JweHeaderSet::new();
        header.set_content_encryption(RESPONSE_ENC, true);
        if nested_jwt {
            header.set_content_type("JWT", true);
        }
        jwe::serialize_flattened_json(plaintext, Some(&header), None, None, encrypter)
    } else {
        let mut header = JweHeader::new();
        header.set_content_encryption(RESPONSE_ENC);
        if nested_jwt {
            header.set_content_type("JWT");
        }
        jwe::serialize_compact(plaintext, &header, encrypter)
    };
    result.map_err(|e| key_error(e.to_string()))
}
