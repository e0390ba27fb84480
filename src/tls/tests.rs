use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

#[path = "../../tests/common/certs.rs"]
mod certs;
use certs::{Ca, Leaf};

fn scratch() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pgcloak-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client_config(cert: PathBuf, key: PathBuf) -> ClientTlsConfig {
    ClientTlsConfig {
        cert_file: cert,
        key_file: key,
        mode: ClientTlsMode::Require,
        client_ca_file: None,
        client_cert: ClientCertMode::Optional,
    }
}

#[test]
fn a_valid_certificate_loads_relative_to_the_config() {
    let dir = scratch();
    let ca = Ca::new("test ca");
    ca.issue(&dir, "server", "pgcloak.test", &["localhost"], Leaf::Server);
    let config = client_config("server.crt".into(), "server.key".into());
    let tls = ServerTls::load(&config, &dir).unwrap();
    assert!(
        tls.summary.subject.contains("pgcloak.test"),
        "{}",
        tls.summary.subject
    );
    assert!(!tls.certificate.is_empty());
}

#[test]
fn bad_certificates_and_keys_are_named_with_their_file() {
    let dir = scratch();
    let ca = Ca::new("test ca");
    let (expired, expired_key) = ca.issue(&dir, "old", "old", &["localhost"], Leaf::ExpiredServer);
    let (cert, _) = ca.issue(&dir, "a", "a", &["localhost"], Leaf::Server);
    let (_, other_key) = ca.issue(&dir, "b", "b", &["localhost"], Leaf::Server);
    let err = ServerTls::load(&client_config(expired.clone(), expired_key), &dir).unwrap_err();
    assert_eq!(err.key, "tls.cert_file");
    assert!(
        err.message.contains("expired") && err.message.contains("old.crt"),
        "{err}"
    );
    let err = ServerTls::load(&client_config(cert.clone(), other_key), &dir).unwrap_err();
    assert_eq!(err.key, "tls.key_file");
    assert!(err.message.contains("is not the private key"), "{err}");
    let err = ServerTls::load(
        &client_config(dir.join("missing.crt"), dir.join("b.key")),
        &dir,
    )
    .unwrap_err();
    assert!(
        err.message.contains("cannot read") && err.message.contains("missing.crt"),
        "{err}"
    );
    std::fs::write(dir.join("empty.crt"), "nothing here\n").unwrap();
    let err = ServerTls::load(
        &client_config(dir.join("empty.crt"), dir.join("b.key")),
        &dir,
    )
    .unwrap_err();
    assert!(err.message.contains("holds no certificate"), "{err}");
    let mut config = client_config(cert, dir.join("a.key"));
    config.client_cert = ClientCertMode::Require;
    let err = ServerTls::load(&config, &dir).unwrap_err();
    assert_eq!(err.key, "tls.client_cert");
}

fn upstream(mode: UpstreamTlsMode, ca: Option<PathBuf>, name: Option<&str>) -> UpstreamTlsConfig {
    UpstreamTlsConfig {
        mode,
        ca_file: ca,
        server_name: name.map(str::to_owned),
        cert_file: None,
        key_file: None,
    }
}

/// A server that answers one SSLRequest with `answer`, then (after S) a TLS handshake with
/// `server`'s certificate, then echoes one byte.
async fn fake_postgres(answer: u8, server: Option<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        tcp.read_exact(&mut request).await.unwrap();
        assert_eq!(request, crate::protocol::startup::SSL_REQUEST);
        tcp.write_all(&[answer]).await.unwrap();
        if let Some(server) = server {
            if let Ok(mut tls) = server.acceptor.accept(tcp).await {
                let mut byte = [0u8; 1];
                if tls.read_exact(&mut byte).await.is_ok() {
                    let _ = tls.write_all(&byte).await;
                }
            }
        }
    });
    addr
}

async fn try_upstream(
    config: &UpstreamTlsConfig,
    answer: u8,
    server: Option<ServerTls>,
) -> Result<&'static str, UpstreamTlsError> {
    let tls = UpstreamTls::load(config, "localhost", Path::new("/")).unwrap();
    let addr = fake_postgres(answer, server).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    Ok(match tls.negotiate(tcp).await? {
        upstream::UpstreamStream::Left(_) => "plaintext",
        upstream::UpstreamStream::Right(mut tls) => {
            tls.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            "tls"
        }
    })
}

#[tokio::test]
async fn upstream_modes_follow_libpq() {
    let dir = scratch();
    let ca = Ca::new("db ca");
    let ca_file = ca.write(&dir, "ca");
    let other_ca = Ca::new("other ca").write(&dir, "other-ca");
    ca.issue(&dir, "db", "db", &["localhost"], Leaf::Server);
    let server = || {
        Some(ServerTls::load(&client_config(dir.join("db.crt"), dir.join("db.key")), &dir).unwrap())
    };
    use UpstreamTlsMode::*;

    let full = upstream(VerifyFull, Some(ca_file.clone()), None);
    assert_eq!(try_upstream(&full, b'S', server()).await.unwrap(), "tls");
    let wrong_name = upstream(VerifyFull, Some(ca_file.clone()), Some("db.example.com"));
    let err = try_upstream(&wrong_name, b'S', server()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not valid for the host name \"db.example.com\""),
        "{err}"
    );
    let verify_ca = upstream(VerifyCa, Some(ca_file.clone()), Some("db.example.com"));
    assert_eq!(
        try_upstream(&verify_ca, b'S', server()).await.unwrap(),
        "tls"
    );
    let unknown_ca = upstream(VerifyFull, Some(other_ca.clone()), None);
    let err = try_upstream(&unknown_ca, b'S', server()).await.unwrap_err();
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    let require = upstream(Require, None, None);
    assert_eq!(try_upstream(&require, b'S', server()).await.unwrap(), "tls");

    // N: prefer goes on in plaintext; every stricter mode fails.
    let prefer = upstream(Prefer, None, None);
    assert_eq!(
        try_upstream(&prefer, b'N', None).await.unwrap(),
        "plaintext"
    );
    for mode in [Require, VerifyCa, VerifyFull] {
        let config = upstream(mode, Some(ca_file.clone()), None);
        let err = try_upstream(&config, b'N', None).await.unwrap_err();
        assert!(matches!(err, UpstreamTlsError::NotOffered(_)), "{err}");
    }
}
