//! Unit tests of the JOSE checks that need no server: key kinds, JWE structure, bearer times.

use super::*;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use std::collections::{BTreeSet, HashMap};

fn pem_pair() -> (Vec<u8>, Vec<u8>) {
    let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    (
        key.private_key_to_pem_pkcs8().unwrap(),
        key.public_key_to_pem().unwrap(),
    )
}

fn parties(public: &[u8]) -> HashMap<String, Party> {
    let party = Party {
        id: "p".into(),
        keys: PartyKeys::from_pem(public, None)
            .map_err(|(_, e)| e)
            .unwrap(),
        tables: HashMap::from([(
            super::super::TableName::parse("t").unwrap(),
            BTreeSet::new(),
        )]),
        require_jti: false,
    };
    HashMap::from([("p".to_owned(), party)])
}

fn reason(result: Result<&Party, Refused>) -> Reason {
    match result {
        Ok(_) => panic!("accepted"),
        Err(refused) => refused.error.reason,
    }
}

#[test]
fn bearer_times_are_checked_with_bounded_skew() {
    let (private, public) = pem_pair();
    let parties = parties(&public);
    let signer = signer(&private).unwrap();
    let now = 1_700_000_000;
    let bearer = |claims: Value| {
        let token = sign(claims.to_string().as_bytes(), signer.as_ref(), "p").unwrap();
        format!("Bearer {token}")
    };
    let check = |claims: Value| verify_bearer(Some(&bearer(claims)), &parties, now);
    assert!(check(json_claims("p", now + 300)).is_ok());
    assert!(
        check(json_claims("p", now - 10)).is_ok(),
        "within the clock skew"
    );
    assert_eq!(
        reason(check(json_claims("p", now - 31))),
        Reason::ExpiredToken
    );
    assert_eq!(reason(check(json_claims("p", now + 331))), Reason::BadToken);
    assert_eq!(reason(check(json_claims("q", now + 60))), Reason::BadToken);
    let mut early = json_claims("p", now + 60);
    early["nbf"] = (now + 120).into();
    assert_eq!(reason(check(early)), Reason::BadToken);
    assert_eq!(
        reason(verify_bearer(None, &parties, now)),
        Reason::MissingToken
    );
    let lower = bearer(json_claims("p", now + 60)).replacen("Bearer", "bearer", 1);
    assert!(
        verify_bearer(Some(&lower), &parties, now).is_ok(),
        "the scheme is case-insensitive"
    );
}

fn json_claims(sub: &str, exp: i64) -> Value {
    serde_json::json!({ "sub": sub, "exp": exp })
}

#[test]
fn jwe_structure_is_checked_before_decryption() {
    let not_jwe = |body: &str, form| jwe_header(body.as_bytes(), form).unwrap_err().reason;
    assert_eq!(not_jwe("a.b.c", JweForm::Compact), Reason::NotJwe);
    assert_eq!(
        not_jwe("e30.a.b..d", JweForm::Compact),
        Reason::NotJwe,
        "no ciphertext"
    );
    assert_eq!(not_jwe("!!.a.b.c.d", JweForm::Compact), Reason::NotJwe);
    assert_eq!(not_jwe("[1]", JweForm::Json), Reason::NotJwe);
    assert_eq!(
        not_jwe(r#"{"protected":"e30"}"#, JweForm::Json),
        Reason::NotJwe
    );
    let two = r#"{"ciphertext":"a","recipients":[{},{}]}"#;
    assert_eq!(not_jwe(two, JweForm::Json), Reason::NotJwe);
    // Header fields merge: protected first, then shared and per-recipient unprotected.
    let protected = URL_SAFE_NO_PAD.encode(r#"{"enc":"A256GCM"}"#);
    let body =
        format!(r#"{{"protected":"{protected}","ciphertext":"a","header":{{"alg":"RSA-OAEP"}}}}"#);
    let header = jwe_header(body.as_bytes(), JweForm::Json).unwrap();
    assert_eq!(header["alg"], "RSA-OAEP");
    assert_eq!(header["enc"], "A256GCM");
}

#[test]
fn keys_are_sorted_by_what_they_can_do() {
    let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let server = ServerKey::from_pem(&rsa.private_key_to_pem_pkcs8().unwrap()).unwrap();
    assert_eq!(server.algorithms(), ["RSA-OAEP", "RSA-OAEP-256"]);
    let (ec_private, ec_public) = pem_pair();
    let server = ServerKey::from_pem(&ec_private).unwrap();
    assert_eq!(
        server.algorithms(),
        ["ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW"]
    );
    assert!(
        ServerKey::from_pem(&ec_public).is_err(),
        "a public key cannot decrypt"
    );
    let ed = PKey::generate_ed25519().unwrap();
    let ed_public = ed.public_key_to_pem().unwrap();
    let keys = PartyKeys::from_pem(&ed_public, None)
        .map_err(|(_, e)| e)
        .unwrap();
    assert_eq!(keys.accepted(), "EdDSA");
    assert!(
        keys.encrypter.is_none(),
        "Ed25519 cannot receive encryption"
    );
    let (which, _) = PartyKeys::from_pem(&ed_public, Some(&ed_public))
        .err()
        .unwrap();
    assert_eq!(which, "encryption_key_file");
}
