//! JOSE for the sidecar: opening an ingest (decrypt the JWE with the server's key, verify the
//! nested JWS with the party's key), checking bearer tokens, and encrypting responses to a
//! party. Also the key loading and signing/encrypting helpers `pgcloak jwe` and the tests use.
//!
//! Headers are inspected before josekit is called, so each failure gets its own status:
//! a body that is no JWE at all (400) differs from one encrypted to another key (400,
//! "undecryptable"), an unsigned payload (401) from a forged signature (401), and only the
//! algorithms a key can really use are tried (no `none`, no HMAC with a public key).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use josekit::jwe::{self, JweContext, JweDecrypter, JweEncrypter, JweHeader};
use josekit::jws::{self, JwsHeader, JwsSigner, JwsVerifier};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use serde_json::{Map, Value};

use super::claims::{self, TimeError};
use super::config::Party;
use super::error::{ApiError, Reason};

/// Content encryptions accepted on ingest.
pub const ACCEPTED_ENC: [&str; 3] = ["A128GCM", "A256GCM", "A128CBC-HS256"];
/// Content encryption of responses.
const RESPONSE_ENC: &str = "A256GCM";

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

    fn decrypter(&self, alg: &str) -> Option<&dyn JweDecrypter> {
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
    encrypter: Option<Box<dyn JweEncrypter>>,
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

    fn verifier(&self, alg: &str) -> Option<&dyn JwsVerifier> {
        let found = self.verifiers.iter().find(|(name, _)| *name == alg);
        found.map(|(_, verifier)| verifier.as_ref())
    }

    fn accepted(&self) -> String {
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

/// How an ingest body is serialized, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JweForm {
    Compact,
    Json,
}

/// A verified ingest: the party that signed it and the record it sent.
pub struct Ingest {
    pub party: String,
    pub record: Map<String, Value>,
}

/// A JOSE failure, with the party when the signature's `kid` named a configured one.
pub struct Refused {
    pub party: Option<String>,
    pub error: ApiError,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused { party: None, error }
    }
}

/// Decrypts an ingest body, verifies the party's signature inside and parses the record.
pub fn open_ingest(
    body: &[u8],
    form: JweForm,
    key: &ServerKey,
    parties: &HashMap<String, Party>,
) -> Result<Ingest, Refused> {
    // curl --data-binary @file sends the file's final newline too.
    let body = body.trim_ascii();
    let header = jwe_header(body, form)?;
    let claim = |name: &str| header.get(name).and_then(Value::as_str);
    let Some(alg) = claim("alg") else {
        return Err(not_jwe("the JWE header has no `alg`").into());
    };
    let Some(decrypter) = key.decrypter(alg) else {
        let message = format!(
            "JWE alg {alg} is not accepted for this server's key (use one of {})",
            key.algorithms().join(", ")
        );
        return Err(ApiError::new(Reason::UnsupportedAlgorithm, message).into());
    };
    match claim("enc") {
        Some(enc) if ACCEPTED_ENC.contains(&enc) => {}
        Some(enc) => {
            let message = format!(
                "JWE enc {enc} is not accepted (use one of {})",
                ACCEPTED_ENC.join(", ")
            );
            return Err(ApiError::new(Reason::UnsupportedAlgorithm, message).into());
        }
        None => return Err(not_jwe("the JWE header has no `enc`").into()),
    }
    if header.contains_key("zip") {
        let message = "compressed JWE (`zip`) is not accepted";
        return Err(ApiError::new(Reason::UnsupportedAlgorithm, message).into());
    }
    if let Some(cty) = claim("cty") {
        if !cty.eq_ignore_ascii_case("JWT") {
            let message = format!("JWE cty must be JWT (a signed JWT inside), not {cty}");
            return Err(ApiError::new(Reason::Unsigned, message).into());
        }
    }
    let mut context = JweContext::new();
    context.remove_compression("DEF");
    let decrypted = match form {
        JweForm::Compact => context.deserialize_compact(body, decrypter),
        JweForm::Json => context.deserialize_json(body, decrypter),
    };
    let Ok((plaintext, _)) = decrypted else {
        let message = "the JWE cannot be decrypted with this server's key (encrypted to another key, or altered)";
        return Err(ApiError::new(Reason::Undecryptable, message).into());
    };
    let (party, payload) = verify_jws(&plaintext, parties, "the JWE's payload")?;
    match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(record)) => Ok(Ingest {
            party: party.id.clone(),
            record,
        }),
        _ => Err(Refused {
            party: Some(party.id.clone()),
            error: ApiError::new(
                Reason::NotObject,
                "the signed payload is not a JSON object of column → value",
            ),
        }),
    }
}

fn not_jwe(message: &str) -> ApiError {
    ApiError::new(Reason::NotJwe, format!("the body is not a JWE: {message}"))
}

fn decode_json_part(part: &[u8]) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The JWE's header (protected, shared unprotected and per-recipient merged), checking the
/// structure of the serialization on the way.
fn jwe_header(body: &[u8], form: JweForm) -> Result<Map<String, Value>, ApiError> {
    match form {
        JweForm::Compact => {
            let body = body.trim_ascii();
            let parts: Vec<&[u8]> = body.split(|&b| b == b'.').collect();
            if parts.len() != 5 {
                return Err(not_jwe(
                    "compact serialization has five dot-separated parts",
                ));
            }
            let b64 = |p: &[u8]| {
                p.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if !parts.iter().all(|p| b64(p)) || parts[2].is_empty() || parts[3].is_empty() {
                return Err(not_jwe("its parts are not base64url"));
            }
            decode_json_part(parts[0]).ok_or_else(|| not_jwe("its header is not base64url JSON"))
        }
        JweForm::Json => {
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
                return Err(not_jwe("a JSON-serialized JWE is a JSON object"));
            };
            if !object.get("ciphertext").is_some_and(Value::is_string) {
                return Err(not_jwe("the JSON object has no `ciphertext`"));
            }
            let mut header = match object.get("protected") {
                Some(Value::String(p)) => decode_json_part(p.as_bytes())
                    .ok_or_else(|| not_jwe("`protected` is not base64url JSON"))?,
                Some(_) => return Err(not_jwe("`protected` is not a string")),
                None => Map::new(),
            };
            let recipient = match object.get("recipients") {
                Some(Value::Array(list)) if list.len() == 1 => list[0].get("header"),
                Some(_) => return Err(not_jwe("exactly one recipient is accepted")),
                None => object.get("header"),
            };
            for extra in [object.get("unprotected"), recipient].into_iter().flatten() {
                if let Value::Object(map) = extra {
                    for (k, v) in map {
                        header.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
            Ok(header)
        }
    }
}

/// Verifies a compact JWS signed by a configured party: the party and the payload. `what`
/// names the token in messages.
fn verify_jws<'p>(
    jws: &[u8],
    parties: &'p HashMap<String, Party>,
    what: &str,
) -> Result<(&'p Party, Vec<u8>), Refused> {
    let jws = jws.trim_ascii();
    let unsigned = || {
        ApiError::new(
            Reason::Unsigned,
            format!("{what} is not signed: it must be a compact JWS signed by the party (kid = party id)"),
        )
    };
    if jws.first() == Some(&b'{') {
        return Err(unsigned().into());
    }
    let parts: Vec<&[u8]> = jws.split(|&b| b == b'.').collect();
    if parts.len() != 3 {
        return Err(unsigned().into());
    }
    let header = decode_json_part(parts[0]).ok_or_else(unsigned)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    if alg.eq_ignore_ascii_case("none") || parts[2].is_empty() {
        return Err(unsigned().into());
    }
    let Some(kid) = header.get("kid").and_then(Value::as_str) else {
        let message = format!("{what}'s JWS header has no `kid` naming the party");
        return Err(ApiError::new(Reason::UnknownParty, message).into());
    };
    let Some(party) = parties.get(kid) else {
        return Err(ApiError::new(
            Reason::UnknownParty,
            format!("{what} is signed by an unknown party"),
        )
        .into());
    };
    let refused = |error: ApiError| Refused {
        party: Some(party.id.clone()),
        error,
    };
    let Some(verifier) = party.keys.verifier(alg) else {
        let message = format!(
            "JWS alg {alg} is not accepted for party {}'s key (use {})",
            party.id,
            party.keys.accepted()
        );
        return Err(refused(ApiError::new(Reason::BadSignature, message)));
    };
    match jws::deserialize_compact(jws, verifier) {
        Ok((payload, _)) => Ok((party, payload)),
        Err(_) => Err(refused(ApiError::new(
            Reason::BadSignature,
            format!(
                "{what}'s signature does not verify with party {}'s key",
                party.id
            ),
        ))),
    }
}

/// Checks an `Authorization` header value: a Bearer JWT signed by a party, `kid` and `sub`
/// both the party id, `exp` required, in the future and at most 5 minutes ahead. `now`:
/// seconds since the Unix epoch.
pub fn verify_bearer<'p>(
    authorization: Option<&str>,
    parties: &'p HashMap<String, Party>,
    now: i64,
) -> Result<&'p Party, Refused> {
    let Some(value) = authorization else {
        return Err(ApiError::new(
            Reason::MissingToken,
            "missing `Authorization: Bearer <JWT>`",
        )
        .into());
    };
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::new(
                Reason::MissingToken,
                "the Authorization header is not `Bearer <JWT>`",
            )
            .into())
        }
    };
    let (party, payload) =
        verify_jws(token.as_bytes(), parties, "the bearer token").map_err(|mut r| {
            // Token failures share one reason each: missing/forged/expired.
            if r.error.reason != Reason::UnknownParty {
                r.error.reason = Reason::BadToken;
            }
            r
        })?;
    let bad = |reason: Reason, message: String| Refused {
        party: Some(party.id.clone()),
        error: ApiError::new(reason, message),
    };
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(bad(
            Reason::BadToken,
            "the bearer token's payload is not a JSON object".into(),
        ));
    };
    if claims.get("sub").and_then(Value::as_str) != Some(party.id.as_str()) {
        return Err(bad(
            Reason::BadToken,
            "the bearer token's `sub` must be the party id (its `kid`)".into(),
        ));
    }
    match claims::check_times(&claims, now) {
        Ok(Some(_)) => Ok(party),
        Ok(None) => Err(bad(
            Reason::BadToken,
            "the bearer token has no numeric `exp`".into(),
        )),
        Err(error @ TimeError::Expired) => {
            Err(bad(Reason::ExpiredToken, error.message("the bearer token")))
        }
        Err(error) => Err(bad(Reason::BadToken, error.message("the bearer token"))),
    }
}

/// Encrypts a response to `party` as a compact JWE (RSA-OAEP-256 or ECDH-ES, A256GCM).
pub fn encrypt_response(party: &Party, json: &[u8]) -> Result<String, ApiError> {
    let Some(encrypter) = &party.keys.encrypter else {
        let message = format!(
            "party {} has no key to encrypt responses to: set sidecar.parties.{}.encryption_key_file",
            party.id, party.id
        );
        return Err(ApiError::new(Reason::NoEncryptionKey, message));
    };
    let mut header = JweHeader::new();
    header.set_content_encryption(RESPONSE_ENC);
    header.set_content_type("application/json");
    jwe::serialize_compact(json, &header, encrypter.as_ref())
        .map_err(|_| ApiError::internal("cannot encrypt the response"))
}

#[cfg(test)]
#[path = "jose_tests.rs"]
mod tests;
