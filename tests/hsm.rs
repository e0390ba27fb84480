//! Master keys wrapped by an HSM key, through SoftHSM2 (Debian's `softhsm2`): made with
//! `pgcloak keygen --wrap-pkcs11`, loaded through the config, validated by `pgcloak check`,
//! and each way an HSM cannot be used reported with the key's name and the cause.
//!
//! One token store in a temporary directory serves every test (SOFTHSM2_CONF points at it;
//! the global store is never touched). Without SoftHSM2 the tests skip, unless
//! PGCLOAK_REQUIRE_CLIENTS=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pgcloak::cloak::Cloak;
use pgcloak::keys::KeysConfig;
use pgcloak::pgtemp::{free_port, PgTemp};
use pgcloak::policy::Policy;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "pgcloak";
const KEK: &str = "kek";
const PIN: &str = "1234";
/// The PIN's variable for the subprocesses (set on each command, not in this process).
const PIN_VAR: &str = "PGCLOAK_HSM_TEST_PIN";

/// A token store with the token `pgcloak` (user PIN 1234) holding the AES key `kek`, and a
/// master key wrapped by it.
struct Hsm {
    dir: PathBuf,
    conf: PathBuf,
    /// `k3.wrapped`, made with `--create-kek` (which created `kek`).
    wrapped: PathBuf,
    /// What that keygen printed.
    keygen_stdout: String,
}

/// The shared token store, or None (each calling test recorded as skipped) without SoftHSM2.
fn hsm() -> Option<&'static Hsm> {
    static HSM: OnceLock<Option<Hsm>> = OnceLock::new();
    let hsm = HSM.get_or_init(start_hsm).as_ref();
    if hsm.is_none() {
        let what = format!("SoftHSM2 ({MODULE}, softhsm2-util)");
        common::skip::missing_client(&what, "apt-get install softhsm2");
    }
    hsm
}

fn start_hsm() -> Option<Hsm> {
    let util = Command::new("softhsm2-util").arg("--version").output();
    if !Path::new(MODULE).exists() || !util.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("pgcloak-hsm-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--pin", PIN, "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(init.status.success(), "softhsm2-util: {init:?}");
    let wrapped = dir.join("k3.wrapped");
    let out = keygen(&conf, &wrapped, KEK, PIN, &["--create-kek"]);
    let keygen_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "keygen: {out:?}");
    Some(Hsm {
        dir,
        conf,
        wrapped,
        keygen_stdout,
    })
}

/// Held around every use of the token store: SoftHSM2's file store rewrites the token file
/// on every login (right PIN or wrong), and a process reading it meanwhile may find no
/// initialized token.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TOKEN_STORE: Mutex<()> = Mutex::new(());
    TOKEN_STORE.lock().unwrap_or_else(|e| e.into_inner())
}

fn keygen(conf: &Path, out: &Path, key_label: &str, pin: &str, extra: &[&str]) -> Output {
    let _guard = one_at_a_time();
    Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(["keygen", "--wrap-pkcs11", "--module", "libsofthsm2.so"])
        .args(["--token-label", TOKEN, "--key-label", key_label])
        .args(["--pin-env", PIN_VAR, "--out"])
        .arg(out)
        .args(extra)
        .env("SOFTHSM2_CONF", conf)
        .env(PIN_VAR, pin)
        .output()
        .unwrap()
}

/// A config whose current key `k3` is `wrapped` under `pkcs11` (a YAML flow mapping).
fn write_config(hsm: &Hsm, name: &str, wrapped: &Path, pkcs11: &str) -> PathBuf {
    let path = hsm.dir.join(name);
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:6432\"\nupstream: {{ host: 127.0.0.1, port: 5432 }}\n\
             keys:\n  current: k3\n  master_keys:\n    k3:\n      wrapped_file: {}\n      pkcs11: {pkcs11}\n\
             tables:\n  users: {{ email: deterministic, name: randomized }}\n",
            wrapped.display()
        ),
    )
    .unwrap();
    path
}

fn pkcs11(module: &str, key_label: &str) -> String {
    format!(
        "{{ module: {module}, token_label: {TOKEN}, key_label: {key_label}, pin_env: {PIN_VAR} }}"
    )
}

fn check(hsm: &Hsm, config: &Path, pin: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgcloak"));
    command
        .args(["check", "--config"])
        .arg(config)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env_remove(PIN_VAR);
    if let Some(pin) = pin {
        command.env(PIN_VAR, pin);
    }
    let out = {
        let _guard = one_at_a_time();
        command.output().unwrap()
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn keygen_prints_a_config_that_check_accepts() {
    let Some(hsm) = hsm() else { return };
    assert!(
        hsm.keygen_stdout.contains("created AES-256 key \"kek\""),
        "{}",
        hsm.keygen_stdout
    );
    let text = std::fs::read_to_string(&hsm.wrapped).unwrap();
    assert!(
        text.starts_with("pgcloak-wrapped-key v1 pkcs11 aes-gcm\n"),
        "{text}"
    );
    // The printed `keys:` section, as is, in a config.
    let keys = &hsm.keygen_stdout[hsm.keygen_stdout.find("keys:\n").unwrap()..];
    let config = hsm.dir.join("printed.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:6432\"\nupstream: {{ host: 127.0.0.1, port: 5432 }}\n{keys}\
             tables:\n  users: {{ email: deterministic }}\n"
        ),
    )
    .unwrap();
    let (ok, output) = check(hsm, &config, Some(PIN));
    assert!(ok && output.contains(": OK"), "{output}");
    assert!(!output.contains(PIN), "{output}");
}

#[test]
fn keygen_never_overwrites_and_needs_the_wrapping_key() {
    let Some(hsm) = hsm() else { return };
    let before = std::fs::read_to_string(&hsm.wrapped).unwrap();
    let out = keygen(&hsm.conf, &hsm.wrapped, KEK, PIN, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exists") && stderr.contains("k3.wrapped"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&hsm.wrapped).unwrap(), before);

    let missing = hsm.dir.join("k9.wrapped");
    let out = keygen(&hsm.conf, &missing, "no-such-kek", PIN, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("\"no-such-kek\"")
            && stderr.contains("--create-kek"),
        "{stderr}"
    );
    assert!(!missing.exists());

    let plain = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .arg("keygen")
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim().len(), 44);
}

/// Each way the HSM cannot give the key fails `check`, naming the key and the cause, and
/// never printing the PIN.
#[test]
fn check_names_the_key_and_the_step_that_failed() {
    let Some(hsm) = hsm() else { return };
    let tampered = hsm.dir.join("tampered.wrapped");
    let text = std::fs::read_to_string(&hsm.wrapped).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    // Flip one base64 character of the ciphertext (not the IV: the first 16 characters).
    let mut body = body.trim().as_bytes().to_vec();
    body[30] = if body[30] == b'A' { b'B' } else { b'A' };
    std::fs::write(
        &tampered,
        format!("{header}\n{}\n", String::from_utf8(body).unwrap()),
    )
    .unwrap();
    let plain_key = hsm.dir.join("plain.key");
    std::fs::write(&plain_key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();

    let good = pkcs11("libsofthsm2.so", KEK);
    let wrapped = hsm.wrapped.as_path();
    // (case, wrapped file, pkcs11 section, PIN, what the message says)
    type Case<'a> = (&'a str, &'a Path, String, Option<&'a str>, &'a [&'a str]);
    let cases: [Case; 7] = [
        (
            "wrong PIN",
            wrapped,
            good.clone(),
            Some("9999"),
            &["login to token \"pgcloak\" failed: wrong PIN", PIN_VAR],
        ),
        (
            "no PIN",
            wrapped,
            good.clone(),
            None,
            &[PIN_VAR, "is not set"],
        ),
        (
            "missing module",
            wrapped,
            pkcs11("/nonexistent/libpkcs11.so", KEK),
            Some(PIN),
            &["PKCS#11 module /nonexistent/libpkcs11.so cannot be loaded"],
        ),
        (
            "unknown key label",
            wrapped,
            pkcs11("libsofthsm2.so", "no-such-kek"),
            Some(PIN),
            &["wrapping key \"no-such-kek\": no AES key with this label on token \"pgcloak\""],
        ),
        (
            "unknown token",
            wrapped,
            good.replace("token_label: pgcloak", "token_label: other"),
            Some(PIN),
            &["has no token labelled \"other\"", "its tokens: \"pgcloak\""],
        ),
        (
            "tampered file",
            &tampered,
            good.clone(),
            Some(PIN),
            &["unwrap failed", "tampered.wrapped", "or was changed"],
        ),
        (
            "not a wrapped file",
            &plain_key,
            good.clone(),
            Some(PIN),
            &["plain.key", "is not a pgcloak wrapped key"],
        ),
    ];
    for (i, (case, file, pkcs11, pin, expected)) in cases.into_iter().enumerate() {
        let config = write_config(hsm, &format!("bad{i}.yaml"), file, &pkcs11);
        let (ok, output) = check(hsm, &config, pin);
        assert!(!ok, "{case}: check passed:\n{output}");
        assert!(
            output.contains(&format!("{}: `keys.master_keys.k3`: ", config.display())),
            "{case}: {output}"
        );
        for fragment in expected {
            assert!(
                output.contains(fragment),
                "{case}: no {fragment:?} in {output}"
            );
        }
        if let Some(pin) = pin {
            assert!(
                !output.contains(pin),
                "{case}: the PIN is printed: {output}"
            );
        }
    }
}

/// Loading through the config unwraps the same key every time: what a keyring built from
/// one load encrypts, a keyring from another load decrypts. Two wrapped keys and a plain
/// one in one config: the module is opened and finalized once per wrapped key.
#[test]
fn the_unwrapped_key_is_the_wrapped_one() {
    let Some(hsm) = hsm() else { return };
    let k4 = hsm.dir.join("k4.wrapped");
    let out = keygen(&hsm.conf, &k4, KEK, PIN, &[]);
    assert!(out.status.success(), "{out:?}");
    let _guard = one_at_a_time();
    // SAFETY: set before this process first loads the PKCS#11 module; the names are this
    // test's own.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        std::env::set_var("PGCLOAK_HSM_TEST_INPROCESS_PIN", PIN);
        std::env::set_var(
            "PGCLOAK_HSM_TEST_INPROCESS_K1",
            pgcloak::crypto::MasterKey::generate().to_base64(),
        );
    }
    let pkcs11 = |file: &Path| {
        format!(
            "      wrapped_file: {}\n      pkcs11: {{ module: libsofthsm2.so, token_label: {TOKEN}, key_label: {KEK}, pin_env: PGCLOAK_HSM_TEST_INPROCESS_PIN }}\n",
            file.display()
        )
    };
    let yaml = format!(
        "current: k3\nmaster_keys:\n  k1: {{ env: PGCLOAK_HSM_TEST_INPROCESS_K1 }}\n  k3:\n{}  k4:\n{}",
        pkcs11(&hsm.wrapped),
        pkcs11(&k4)
    );
    let config: KeysConfig = serde_yaml::from_str(&yaml).unwrap();
    let first = config.load(&hsm.dir).unwrap();
    let second = config.load(&hsm.dir).unwrap();
    assert_eq!(first.current_name(), "k3");
    assert_eq!(first.len(), 3);
    for ((name_a, a), (name_b, b)) in first.iter().zip(second.iter()) {
        assert_eq!(name_a, name_b);
        assert!(a == b, "{name_a} unwrapped to another key");
    }
    let policy = || {
        let yaml = "users: { email: randomized, name: randomized }";
        Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    };
    let writer = Cloak::with_keys(policy(), &first).unwrap();
    let reader = Cloak::with_keys(policy(), &second).unwrap();
    let envelope = writer
        .keyring()
        .encrypt("public.users.name", b"Ada Lovelace")
        .unwrap();
    assert_eq!(writer.keyring().key_name(envelope.as_bytes()), Some("k3"));
    let plain = reader
        .keyring()
        .decrypt(envelope.as_bytes(), Some("public.users.name"))
        .unwrap();
    assert_eq!(plain.as_slice(), b"Ada Lovelace");
}

/// `pgcloak serve` with the HSM-wrapped key as its current key: values written through it
/// are envelopes in Postgres and plaintext through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_encrypts_with_the_unwrapped_key() {
    let Some(hsm) = hsm() else { return };
    let pg = PgTemp::builder()
        .superuser_password(common::PASSWORD)
        .start()
        .unwrap();
    let port = free_port().unwrap();
    let config = hsm.dir.join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"\nupstream: {{ host: 127.0.0.1, port: {} }}\n\
             keys:\n  current: k3\n  master_keys:\n    k3:\n      wrapped_file: {}\n      pkcs11: {}\n\
             tables:\n  users: {{ email: randomized }}\n",
            pg.port(),
            hsm.wrapped.display(),
            pkcs11("libsofthsm2.so", KEK)
        ),
    )
    .unwrap();
    let log = hsm.dir.join("serve.log");
    let conf = hsm.conf.to_str().unwrap();
    let child = {
        // The key is unwrapped before pgcloak listens: once it accepts, the HSM is done.
        let _guard = one_at_a_time();
        let child = common::spawn_serve(&config, &log, &[("SOFTHSM2_CONF", conf), (PIN_VAR, PIN)]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgcloak did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        KillOnDrop(child)
    };
    let url = format!(
        "postgresql://postgres:{}@127.0.0.1:{port}/postgres",
        common::PASSWORD
    );
    let client = common::connect(&url).await;
    client
        .batch_execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO users (id, email) VALUES (1, $1)",
            &[&"ada@example.com"],
        )
        .await
        .unwrap();
    let row = client
        .query_one("SELECT email FROM users WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "ada@example.com");
    let direct = common::connect(&pg.url("postgres")).await;
    let stored: String = direct
        .query_one("SELECT email FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("pgc1$"), "{stored}");
    drop(client);
    drop(child);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains(PIN) && !log.contains("ada@example.com"),
        "{log}"
    );
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
