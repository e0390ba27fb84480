//! The RFC 7677 test vector on both ends, the proxy's relay of a ClientKey from one
//! exchange to another, and the refusals: wrong password, tampered proof, unknown user,
//! channel-binding mismatches and downgrades, malformed messages.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;
use crate::auth::verifier::Verifier;

const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_salt() -> Vec<u8> {
    STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap()
}

fn rfc_verifier() -> Verifier {
    Verifier::from_password("pencil", &rfc_salt(), 4096)
}

/// A cheap verifier (few iterations) for tests that run many exchanges.
fn verifier(password: &str) -> Verifier {
    Verifier::from_password(password, b"0123456789abcdef", 16)
}

fn client_key(password: &str) -> ClientKey {
    ClientKey::from_password(password, b"0123456789abcdef", 16)
}

#[test]
fn server_end_reproduces_rfc_7677() {
    let mut server = ServerExchange::new(rfc_verifier(), None);
    let first = server
        .client_first_with_nonce(SCRAM_SHA_256, CLIENT_FIRST.as_bytes(), SERVER_NONCE)
        .unwrap();
    assert_eq!(first, SERVER_FIRST);
    let (last, key) = server.client_final(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(last, SERVER_FINAL);
    assert!(rfc_verifier().matches(&key));
    assert!(rfc_verifier().matches(&ClientKey::from_password("pencil", &rfc_salt(), 4096)));
}

#[test]
fn client_end_reproduces_rfc_7677() {
    let key = ClientKey::from_password("pencil", &rfc_salt(), 4096);
    let mut client = ClientExchange::new(key, rfc_verifier(), None).unwrap();
    let (mechanism, first) = client
        .client_first_with_nonce(&[SCRAM_SHA_256], "user", CLIENT_NONCE)
        .unwrap();
    assert_eq!((mechanism, first.as_str()), (SCRAM_SHA_256, CLIENT_FIRST));
    let last = client.server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(last, CLIENT_FINAL);
    client.server_final(SERVER_FINAL.as_bytes()).unwrap();
}

/// Runs a whole exchange; the error of whichever step failed.
fn login(
    client: &mut ClientExchange,
    server: &mut ServerExchange,
) -> Result<ClientKey, ScramError> {
    let (mechanism, first) = client.client_first(server.mechanisms())?;
    let server_first = server.client_first(mechanism, first.as_bytes())?;
    let last = client.server_first(server_first.as_bytes())?;
    let (server_final, key) = server.client_final(last.as_bytes())?;
    client.server_final(server_final.as_bytes())?;
    Ok(key)
}

#[test]
fn recovered_client_key_logs_in_to_a_second_server() {
    // client → pgcloak: the client knows the password.
    let mut client = ClientExchange::new(client_key("pw"), verifier("pw"), None).unwrap();
    let mut proxy_server = ServerExchange::new(verifier("pw"), None);
    let recovered = login(&mut client, &mut proxy_server).unwrap();
    // pgcloak → Postgres: only the recovered key and the verifier.
    let mut proxy_client = ClientExchange::new(recovered, verifier("pw"), None).unwrap();
    let mut postgres = ServerExchange::new(verifier("pw"), None);
    let key = login(&mut proxy_client, &mut postgres).unwrap();
    assert!(verifier("pw").matches(&key));
}

/// A client that knows `password` (the servers in these tests hold the verifier of "pw").
fn client_with_password(password: &str, binding: Option<Vec<u8>>) -> ClientExchange {
    ClientExchange::new(client_key(password), verifier(password), binding).unwrap()
}

#[test]
fn wrong_password_fails_at_client_final() {
    let mut client = client_with_password("not-pw", None);
    let mut server = ServerExchange::new(verifier("pw"), None);
    let (mechanism, first) = client.client_first(server.mechanisms()).unwrap();
    let server_first = server.client_first(mechanism, first.as_bytes()).unwrap();
    let last = client.server_first(server_first.as_bytes()).unwrap();
    assert_eq!(
        server.client_final(last.as_bytes()).unwrap_err(),
        ScramError::WrongPassword
    );
    assert_eq!(ScramError::WrongPassword.sqlstate(), "28P01");
    // The exchange is over.
    assert_eq!(
        server.client_final(last.as_bytes()).unwrap_err(),
        ScramError::OutOfOrder
    );
}

#[test]
fn unknown_user_fails_like_a_wrong_password() {
    let secret = b"server secret";
    let salt_of = |user: &str| {
        let mut mock = ServerExchange::for_unknown_user(secret, user, None);
        let first = mock.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
        let salt = first.split(',').nth(1).unwrap().to_owned();
        assert!(first.ends_with(&format!(",i={MOCK_ITERATIONS}")));
        salt
    };
    // The same salt at every attempt, as a real user's, and a different one per user.
    assert_eq!(salt_of("nobody"), salt_of("nobody"));
    assert_ne!(salt_of("nobody"), salt_of("somebody"));

    // A well-formed client-final fails with the error a wrong password gets.
    let mut client = client_with_password("pw", None);
    let mut mock = ServerExchange::for_unknown_user(secret, "nobody", None);
    let (mechanism, first) = client.client_first(mock.mechanisms()).unwrap();
    let server_first = mock.client_first(mechanism, first.as_bytes()).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let last = format!("c=biws,{nonce},p={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        mock.client_final(last.as_bytes()).unwrap_err(),
        ScramError::WrongPassword
    );
}

#[test]
fn tampered_proof_fails() {
    let mut client = client_with_password("pw", None);
    let mut server = ServerExchange::new(verifier("pw"), None);
    let (mechanism, first) = client.client_first(server.mechanisms()).unwrap();
    let server_first = server.client_first(mechanism, first.as_bytes()).unwrap();
    let last = client.server_first(server_first.as_bytes()).unwrap();
    let (without_proof, proof) = last.rsplit_once(",p=").unwrap();
    let mut proof = STANDARD.decode(proof).unwrap();
    proof[0] ^= 1;
    let tampered = format!("{without_proof},p={}", STANDARD.encode(proof));
    assert_eq!(
        server.client_final(tampered.as_bytes()).unwrap_err(),
        ScramError::WrongPassword
    );
}

#[test]
fn forged_server_signature_fails_on_the_client() {
    let mut client = client_with_password("pw", None);
    let mut server = ServerExchange::new(verifier("pw"), None);
    let (mechanism, first) = client.client_first(server.mechanisms()).unwrap();
    let server_first = server.client_first(mechanism, first.as_bytes()).unwrap();
    client.server_first(server_first.as_bytes()).unwrap();
    let forged = format!("v={}", STANDARD.encode([9u8; 32]));
    assert_eq!(
        client.server_final(forged.as_bytes()),
        Err(ScramError::ServerSignatureMismatch)
    );
}

#[test]
fn channel_binding_with_matching_data_works() {
    let binding = vec![0xab; 32];
    let mut client = client_with_password("pw", Some(binding.clone()));
    let mut server = ServerExchange::new(verifier("pw"), Some(binding));
    assert_eq!(server.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    let (mechanism, first) = client.client_first(server.mechanisms()).unwrap();
    assert_eq!(mechanism, SCRAM_SHA_256_PLUS);
    assert!(first.starts_with("p=tls-server-end-point,,n=,r="));
    let server_first = server.client_first(mechanism, first.as_bytes()).unwrap();
    let last = client.server_first(server_first.as_bytes()).unwrap();
    let (server_final, _) = server.client_final(last.as_bytes()).unwrap();
    client.server_final(server_final.as_bytes()).unwrap();
}

#[test]
fn channel_binding_with_other_data_fails() {
    // A man in the middle terminating TLS: the client sees another certificate.
    let mut client = client_with_password("pw", Some(vec![1; 32]));
    let mut server = ServerExchange::new(verifier("pw"), Some(vec![2; 32]));
    assert_eq!(
        login(&mut client, &mut server).unwrap_err(),
        ScramError::ChannelBindingMismatch
    );
}

#[test]
fn y_flag_while_plus_is_offered_is_a_downgrade() {
    // The client binds, but saw only SCRAM-SHA-256 (PLUS stripped on the way).
    let mut client = client_with_password("pw", Some(vec![1; 32]));
    let (mechanism, first) = client.client_first(&[SCRAM_SHA_256]).unwrap();
    assert!(first.starts_with("y,,"));
    let mut server = ServerExchange::new(verifier("pw"), Some(vec![1; 32]));
    assert_eq!(
        server.client_first(mechanism, first.as_bytes()),
        Err(ScramError::ChannelBindingDowngrade)
    );
    // Without binding on the server, `y` is fine.
    let mut server = ServerExchange::new(verifier("pw"), None);
    server.client_first(mechanism, first.as_bytes()).unwrap();
}

#[test]
fn binding_requests_the_server_cannot_serve_fail() {
    let mut server = ServerExchange::new(verifier("pw"), None);
    assert_eq!(server.mechanisms(), [SCRAM_SHA_256]);
    assert_eq!(
        server.client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
        Err(ScramError::InvalidMechanism)
    );
    let mut server = ServerExchange::new(verifier("pw"), None);
    assert_eq!(
        server.client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
        Err(ScramError::UnexpectedChannelBinding)
    );
    let mut server = ServerExchange::new(verifier("pw"), Some(vec![1; 32]));
    assert_eq!(
        server.client_first(SCRAM_SHA_256_PLUS, b"n,,n=,r=abc"),
        Err(ScramError::MissingChannelBinding)
    );
    let mut server = ServerExchange::new(verifier("pw"), Some(vec![1; 32]));
    assert_eq!(
        server.client_first(SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc"),
        Err(ScramError::UnsupportedChannelBindingType)
    );
}

#[test]
fn gs2_header_must_be_repeated_in_client_final() {
    // client-first says `n`, client-final's c= claims `y`: the proof covers it, but the
    // header check catches it first.
    let mut server = ServerExchange::new(verifier("pw"), None);
    let first = server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
    let nonce = first.split(',').next().unwrap();
    let last = format!("c=eSws,{nonce},p={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        server.client_final(last.as_bytes()),
        Err(ScramError::ChannelBindingMismatch)
    );
}

#[test]
fn malformed_client_first_messages_are_refused() {
    let cases: [(&[u8], ScramError); 10] = [
        (b"n,a=admin,n=,r=abc", ScramError::AuthzidNotSupported),
        (b"n,,m=ext,n=,r=abc", ScramError::UnsupportedExtension),
        (
            b"x,,n=,r=abc",
            ScramError::Malformed("client-first-message has an invalid channel-binding flag"),
        ),
        (
            b"n,,r=abc",
            ScramError::Malformed("client-first-message has no user name (n=)"),
        ),
        (
            b"n,,n=",
            ScramError::Malformed("client-first-message has no nonce (r=)"),
        ),
        (
            b"n,,n=,r=",
            ScramError::Malformed("client-first-message has an invalid nonce"),
        ),
        (
            b"n,,n=,r=abc,1",
            ScramError::Malformed("client-first-message has an invalid attribute"),
        ),
        (
            b"n",
            ScramError::Malformed("client-first-message has no gs2 header"),
        ),
        (
            b"n,",
            ScramError::Malformed("client-first-message has an incomplete gs2 header"),
        ),
        (
            b"n,,n=\0,r=abc",
            ScramError::Malformed("client-first-message is not text"),
        ),
    ];
    for (message, error) in cases {
        let mut server = ServerExchange::new(verifier("pw"), None);
        assert_eq!(
            server.client_first(SCRAM_SHA_256, message),
            Err(error),
            "{}",
            String::from_utf8_lossy(message)
        );
    }
    let mut server = ServerExchange::new(verifier("pw"), None);
    assert_eq!(
        server.client_first("PLAIN", b"n,,n=,r=abc"),
        Err(ScramError::InvalidMechanism)
    );
    // Extensions after the nonce are allowed, and the user name is ignored.
    let mut server = ServerExchange::new(verifier("pw"), None);
    server
        .client_first(SCRAM_SHA_256, b"n,,n=someone=2Celse,r=abc,x=ext")
        .unwrap();
}

#[test]
fn malformed_client_final_messages_are_refused() {
    let proof = STANDARD.encode([0u8; 32]);
    let cases = [
        (
            "c=biws,r=abcdef".to_owned(),
            ScramError::Malformed("client-final-message has no proof (p=)"),
        ),
        (
            "c=biws,r=abcdef,p=AAAA".to_owned(),
            ScramError::Malformed("client-final-message has an invalid proof"),
        ),
        (
            format!("c=biws,r=abcdeX,p={proof}"),
            ScramError::NonceMismatch,
        ),
        (
            format!("r=abcdef,c=biws,p={proof}"),
            ScramError::Malformed("client-final-message has no channel binding (c=)"),
        ),
        (
            format!("c=!!,r=abcdef,p={proof}"),
            ScramError::Malformed("client-final-message has invalid channel-binding data"),
        ),
        (
            format!("c=biws,r=abcdef,1,p={proof}"),
            ScramError::Malformed("client-final-message has an invalid attribute"),
        ),
    ];
    for (message, error) in cases {
        let mut server = ServerExchange::new(verifier("pw"), None);
        server
            .client_first_with_nonce(SCRAM_SHA_256, b"n,,n=,r=abc", "def")
            .unwrap();
        assert_eq!(
            server.client_final(message.as_bytes()).unwrap_err(),
            error,
            "{message}"
        );
    }
}

#[test]
fn client_checks_the_server_first_message() {
    let start = || {
        let mut client = client_with_password("pw", None);
        let (_, first) = client
            .client_first_with_nonce(&[SCRAM_SHA_256], "", "abc")
            .unwrap();
        assert_eq!(first, "n,,n=,r=abc");
        client
    };
    let salt = STANDARD.encode(b"0123456789abcdef");
    let cases = [
        (format!("r=abc,s={salt},i=16"), ScramError::NonceMismatch),
        (format!("r=xyzdef,s={salt},i=16"), ScramError::NonceMismatch),
        (
            format!("r=abcdef,s={salt},i=17"),
            ScramError::VerifierMismatch,
        ),
        (
            format!("r=abcdef,s={},i=16", STANDARD.encode(b"other salt")),
            ScramError::VerifierMismatch,
        ),
        (
            format!("r=abcdef,s={salt}"),
            ScramError::Malformed("server-first-message has no iteration count (i=)"),
        ),
        (
            format!("r=abcdef,s={salt},i=-1"),
            ScramError::Malformed("server-first-message has an invalid iteration count"),
        ),
        (
            format!("m=x,r=abcdef,s={salt},i=16"),
            ScramError::UnsupportedExtension,
        ),
    ];
    for (message, error) in cases {
        assert_eq!(
            start().server_first(message.as_bytes()),
            Err(error),
            "{message}"
        );
    }
    let mut client = start();
    client
        .server_first(format!("r=abcdef,s={salt},i=16").as_bytes())
        .unwrap();
    assert_eq!(
        client.server_final(b"e=invalid-proof"),
        Err(ScramError::ServerError("invalid-proof".to_owned()))
    );
}

#[test]
fn client_refuses_a_key_that_is_not_the_verifiers_and_missing_mechanisms() {
    assert!(matches!(
        ClientExchange::new(client_key("other"), verifier("pw"), None),
        Err(ScramError::KeyMismatch)
    ));
    let mut client = client_with_password("pw", None);
    assert_eq!(
        client.client_first(&["SCRAM-SHA-1"]),
        Err(ScramError::MechanismNotOffered)
    );
}
