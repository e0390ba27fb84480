//! The `pgcloak` binary: `check`, `serve` with graceful shutdown and content-free logs, and
//! `demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, pgcloak_bin, try_connect, PASSWORD};
use pgcloak::pgtemp::{free_port, PgTemp};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgcloak-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `pgcloak serve` at trace level (with `env`), logging to `log`.
async fn serve(config: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut all = vec![("RUST_LOG", "trace")];
    all.extend_from_slice(env);
    common::serve_process(config, port, log, &all).await
}

#[test]
fn check_accepts_good_and_names_the_bad_key() {
    let dir = scratch_dir("check");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "listen: \"127.0.0.1:6432\"\nupstream:\n  host: db\n  port: 5432\n",
    )
    .unwrap();
    let out = Command::new(pgcloak_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: \"127.0.0.1:6432\"\nupstream:\n  host: db\n  prot: 5432\n",
    )
    .unwrap();
    let out = Command::new(pgcloak_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("unknown field `prot`"),
        "{stderr}"
    );

    let out = Command::new(pgcloak_bin())
        .args(["check", "--config"])
        .arg(dir.join("missing.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.yaml: cannot read the config file")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_loads_the_tls_files_and_names_a_bad_one() {
    use common::certs::{Ca, Leaf};
    let dir = scratch_dir("check-tls");
    let ca = Ca::new("cli test CA");
    ca.write(&dir, "ca");
    ca.issue(&dir, "proxy", "pgcloak.cli", &["localhost"], Leaf::Server);
    ca.issue(&dir, "old", "old", &["localhost"], Leaf::ExpiredServer);
    let run = |tls: &str| {
        let config = dir.join("tls.yaml");
        std::fs::write(
            &config,
            format!("listen: \"127.0.0.1:6432\"\nupstream:\n  host: localhost\n  tls: {{ mode: verify-full, ca_file: ca.crt }}\ntls:\n{tls}"),
        )
        .unwrap();
        Command::new(pgcloak_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run("  cert_file: proxy.crt\n  key_file: proxy.key\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tls: certificate of CN=pgcloak.cli"),
        "{stdout}"
    );
    assert!(stdout.contains("warning: TLS on both legs"), "{stdout}");
    let out = run("  cert_file: old.crt\n  key_file: old.key\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tls.yaml")
            && stderr.contains("tls.cert_file")
            && stderr.contains("old.crt")
            && stderr.contains("expired"),
        "{stderr}"
    );
    let out = run("  cert_file: proxy.crt\n  key_file: old.key\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("is not the private key"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shuts_down_gracefully_and_logs_no_content() {
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let dir = scratch_dir("serve");
    let port = free_port().unwrap();
    let config = dir.join("pgcloak.yaml");
    std::fs::write(
        &config,
        format!("listen: \"127.0.0.1:{port}\"\nupstream:\n  host: 127.0.0.1\n  port: {}\nshutdown_grace_seconds: 20\n", pg.port()),
    )
    .unwrap();
    let log = dir.join("pgcloak.log");
    let (mut child, url) = serve(&config, port, &log, &[]).await;

    let client = try_connect(&url).await.unwrap();
    let secret = "zebra-crossing-4242";
    let row = client
        .query_one(
            &format!("SELECT '{secret}'::text, $1::text"),
            &[&"param-value-9876"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), secret);

    signal(&child, libc::SIGTERM);
    // New connections are refused at once; the open session keeps working.
    assert!(
        eventually(Duration::from_secs(10), || async {
            try_connect(&url).await.is_err()
        })
        .await
    );
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited while a session was open"
    );
    drop(client);
    let status = wait_exit(&mut child, Duration::from_secs(15))
        .await
        .expect("pgcloak exits after its last session");
    assert!(status.success(), "exit status {status}");

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("session closed") && log.contains("SIGTERM"),
        "{log}"
    );
    assert!(
        !log.contains(secret) && !log.contains("param-value-9876"),
        "query content leaked into the log"
    );
    assert!(!log.contains(PASSWORD), "password leaked into the log");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `listen: "localhost:PORT"` is resolved (as `upstream.host: localhost` always was) and
/// serves clients that connect to localhost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_on_a_host_name() {
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let dir = scratch_dir("serve-localhost");
    let port = free_port().unwrap();
    let config = dir.join("pgcloak.yaml");
    let yaml = format!(
        "listen: \"localhost:{port}\"\nupstream:\n  host: localhost\n  port: {}\n",
        pg.port()
    );
    std::fs::write(&config, yaml).unwrap();
    let check = Command::new(pgcloak_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let mut child = common::spawn_serve(&config, &dir.join("pgcloak.log"), &[]);
    let url = format!("postgresql://postgres:{PASSWORD}@localhost:{port}/postgres");
    let served = eventually(Duration::from_secs(20), || async {
        try_connect(&url).await.is_ok()
    })
    .await;
    assert!(served, "no pgcloak on localhost:{port}");
    signal(&child, libc::SIGTERM);
    wait_exit(&mut child, Duration::from_secs(30))
        .await
        .expect("serve exits on SIGTERM");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pgcloak demo ARGS...` run outside the repository, once it has printed its banner: the
/// child, the psql URL through pgcloak and the throwaway Postgres's data directory.
async fn start_demo(args: &[&str]) -> (Child, String, PathBuf) {
    let mut child = Command::new(pgcloak_bin())
        .arg("demo")
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines)
        .await
        .expect("demo prints its banner")
        .unwrap();
    let psql_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("psql "))
        .expect("a psql command");
    let url = psql_line
        .trim()
        .trim_start_matches("psql ")
        .trim_matches('"')
        .to_owned();
    let data_dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("PostgreSQL data directory: "))
        .map(PathBuf::from)
        .expect("the demo names its data directory");
    assert!(data_dir.exists());
    (child, url, data_dir)
}

/// Ctrl-C: the demo exits 0 and removes its throwaway Postgres.
async fn interrupt_demo(mut child: Child, data_dir: &Path) {
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(30))
        .await
        .expect("demo exits on Ctrl-C");
    assert!(status.success(), "exit status {status}");
    assert!(
        !data_dir.exists(),
        "demo left {} behind",
        data_dir.display()
    );
}

/// The built-in config/demo.yaml (no --config, run outside the repository: an installed
/// binary runs from anywhere) on the port given with --port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_until_interrupted_and_cleans_up() {
    let port = free_port().unwrap();
    let (child, url, data_dir) = start_demo(&["--port", &port.to_string()]).await;
    assert!(url.contains(&format!("127.0.0.1:{port}")), "{url}");

    let out = common::psql(&url, &["-At", "-c", "SELECT 'through the demo'"]);
    assert_eq!(common::stdout(&out).trim(), "through the demo");
    // The built-in policy is on: config/demo.yaml's users.email is encrypted.
    let insert = "INSERT INTO users (email) VALUES ('ann@example.com')";
    common::stdout(&common::psql(&url, &["-At", "-c", insert]));
    interrupt_demo(child, &data_dir).await;
}

/// A taken port fails at once (before Postgres starts), naming the port and --port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_a_busy_port_names_the_port_and_the_flag() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut child = Command::new(pgcloak_bin())
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10))
        .await
        .expect("demo gives up on a busy port");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}: port {port} is already in use"))
            && stderr.contains("pgcloak demo --port N"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("starting a throwaway PostgreSQL"),
        "{stderr}"
    );
}

/// A demo killed with SIGKILL cannot clean up; the next demo removes what it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_demo_leaves_a_directory_the_next_start_removes() {
    let (mut killed, _, killed_data) = start_demo(&["--port", "0"]).await;
    signal(&killed, libc::SIGKILL);
    wait_exit(&mut killed, Duration::from_secs(10))
        .await
        .expect("SIGKILL ends the demo");
    // What it leaves (no assertion that it is there: a PgTemp that another test of this
    // process starts meanwhile may already have removed it).
    let left = killed_data.parent().unwrap().to_owned();
    // Its postmaster dies with it (PDEATHSIG); wait for that, as the next start checks.
    let pid_file = killed_data.join("postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).map_or(0, |t| {
        t.lines().next().unwrap_or("0").trim().parse().unwrap_or(0)
    });
    let gone = eventually(Duration::from_secs(10), || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        pid == 0
            || stat.is_empty()
            || stat
                .rsplit_once(") ")
                .is_some_and(|(_, s)| s.starts_with('Z'))
    })
    .await;
    assert!(gone, "the killed demo's postgres (pid {pid}) still runs");

    let (next, _, next_data) = start_demo(&["--port", "0"]).await;
    assert!(!left.exists(), "{} was not removed", left.display());
    interrupt_demo(next, &next_data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_workload_at_trace_level_logs_no_plaintext() {
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let direct = try_connect(&pg.url("postgres")).await.unwrap();
    direct
        .batch_execute(
            "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text)",
        )
        .await
        .unwrap();
    let dir = scratch_dir("trace");
    let port = free_port().unwrap();
    let config = dir.join("pgcloak.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"\nupstream:\n  host: 127.0.0.1\n  port: {}\nkeys:\n  master_key_env: PGCLOAK_TEST_MASTER_KEY\ntables:\n  users:\n    email: deterministic\n    first_name: randomized\n",
            pg.port()
        ),
    )
    .unwrap();
    let key = Command::new(pgcloak_bin()).arg("keygen").output().unwrap();
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap();
    let log = dir.join("pgcloak.log");
    let (mut child, url) = serve(
        &config,
        port,
        &log,
        &[("PGCLOAK_TEST_MASTER_KEY", key.trim())],
    )
    .await;

    let client = try_connect(&url).await.unwrap();
    let secrets = [
        "literal-mail@secret.example",
        "param-mail@secret.example",
        "Zebediah",
        "Quillon",
    ];
    client
        .batch_execute(&format!(
            "INSERT INTO users (email, first_name) VALUES ('{}', '{}')",
            secrets[0], secrets[2]
        ))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&secrets[1], &secrets[3]],
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT first_name FROM users WHERE email = $1",
            &[&secrets[1]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), secrets[3]);
    let refused = client
        .simple_query(&format!(
            "SELECT * FROM users WHERE first_name = '{}'",
            secrets[2]
        ))
        .await
        .unwrap_err();
    assert!(
        !refused.to_string().contains(secrets[2]),
        "the refusal echoes the value"
    );
    drop(client);

    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(15))
        .await
        .expect("pgcloak exits");
    assert!(status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("session closed"), "{log}");
    for secret in secrets {
        let line = log.lines().find(|l| l.contains(secret));
        assert!(
            line.is_none(),
            "{secret} appears in the trace log: {line:?}"
        );
    }
    // And Postgres holds only ciphertext.
    let stored: String = direct
        .query_one("SELECT email FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("pgc1$") && !stored.contains("secret"));
    std::fs::remove_dir_all(&dir).unwrap();
}
