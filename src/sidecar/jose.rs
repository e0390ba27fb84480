//! JOSE for the sidecar: opening an ingest (decrypt the JWE with the server's key, verify the
//! nested JWS with the party's key), checking bearer tokens, and encrypting responses to a
//! party. The key loading and the signing/encrypting helpers `pgcloak jwe` and the tests use
//! are in `jose_keys.rs`.
//!
//! Headers are inspected before josekit is called, so each failure gets its own status:
//! a body that is no JWE at all (400) differs from one encrypted to another key (400,
//! "undecryptable"), an unsigned payload (401) from a forged signature (401), and only the
//! algorithms a key can really use are tried (no `none`, no HMAC with a public key).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use josekit::jwe::{self, JweContext, JweHeader};
use josekit::jws;
use serde_json::{Map, Value};

use super::claims::{self, TimeError};
use super::config::Party;
use super::error::{ApiError, Reason};

#[path = "jose_keys.rs"]
mod keys;
pub use keys::*;

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
