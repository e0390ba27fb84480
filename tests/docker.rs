//! The docker files, checked without a Docker engine (none runs on these machines):
//! docker/setup.sh run for real (its certificates, master key, password and file modes),
//! docker/pgcloak.docker.yaml loaded by pgcloak with those files, the compose file's shape
//! (ports on 127.0.0.1, healthchecks, secrets, the data volume), the Dockerfile's dummy
//! targets against Cargo.toml, and `docker compose config` where a compose CLI is installed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// docker/setup.sh DIR; its stdout.
fn setup(dir: &Path) -> String {
    let out = Command::new(repo("docker/setup.sh"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "setup.sh: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn setup_makes_certificates_and_secrets_that_pgcloak_and_postgres_can_use() {
    let dir = common::fresh_dir("docker-setup");
    let first = setup(&dir);
    assert!(first.contains("made"), "{first}");
    let key = std::fs::read_to_string(dir.join("secrets/pgcloak_master_key")).unwrap();
    // A second run keeps every file: a new master key could not read the old one's data.
    let second = setup(&dir);
    assert!(!second.contains("made"), "{second}");
    let again = std::fs::read_to_string(dir.join("secrets/pgcloak_master_key")).unwrap();
    assert_eq!(key, again);

    // uid 10001 in the pgcloak container reads the key; the directory keeps host users out.
    assert_eq!(mode(&dir.join("secrets")), 0o700);
    assert_eq!(mode(&dir.join("secrets/pgcloak_master_key")), 0o444);
    assert_eq!(mode(&dir.join("certs")), 0o755);
    assert_eq!(mode(&dir.join("certs/ca.crt")), 0o444);
    assert_eq!(mode(&dir.join("certs/postgres.key")), 0o400);
    assert_eq!(mode(&dir.join("certs/ca.key")), 0o400);

    // The postgres service's certificate chains to the CA and names "postgres".
    use openssl::x509::X509;
    let pem = |name: &str| std::fs::read(dir.join("certs").join(name)).unwrap();
    let ca = X509::from_pem(&pem("ca.crt")).unwrap();
    let server = X509::from_pem(&pem("postgres.crt")).unwrap();
    assert!(server.verify(&ca.public_key().unwrap()).unwrap());
    let names: Vec<String> = server
        .subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|name| name.dnsname().map(str::to_owned))
        .collect();
    assert_eq!(names, ["postgres"]);
    let password = std::fs::read_to_string(dir.join("secrets/postgres_password")).unwrap();
    assert_eq!(password.trim().len(), 32);

    // The compose config, with the container paths of its files mapped to the ones made.
    let yaml = std::fs::read_to_string(repo("docker/pgcloak.docker.yaml"))
        .unwrap()
        .replace("/run/secrets/", &format!("{}/secrets/", dir.display()))
        .replace("/certs/", &format!("{}/certs/", dir.display()));
    let path = dir.join("pgcloak.yaml");
    let config = pgcloak::config::Config::parse(&yaml, &path).unwrap_or_else(|e| panic!("{e}"));
    let settings = config.settings(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(settings.upstream_tls.is_some());
    assert!(config.master_keys(&path).unwrap().is_some());
    assert!(config.policy(&path).unwrap().table(None, "users").is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compose_publishes_on_loopback_with_healthchecks_secrets_and_a_data_volume() {
    let text = std::fs::read_to_string(repo("docker/compose.yaml")).unwrap();
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 2);
    for (name, service) in services {
        for port in service["ports"].as_sequence().unwrap() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name:?}: {port}");
        }
        let check = service["healthcheck"]["test"].as_sequence();
        assert!(
            check.is_some_and(|c| !c.is_empty()),
            "{name:?} has no healthcheck"
        );
        assert!(service["secrets"].as_sequence().is_some(), "{name:?}");
    }
    let pgcloak = &compose["services"]["pgcloak"];
    let key = &compose["secrets"]["pgcloak_master_key"]["file"];
    assert_eq!(key.as_str(), Some("./secrets/pgcloak_master_key"));
    assert_eq!(
        pgcloak["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    let postgres = &compose["services"]["postgres"];
    let volumes = postgres["volumes"].as_sequence().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v.as_str() == Some("pgdata:/var/lib/postgresql/data")));
    assert!(compose["volumes"]
        .as_mapping()
        .unwrap()
        .contains_key("pgdata"));
    // The healthcheck's port is the one pgcloak listens on.
    let config = std::fs::read_to_string(repo("docker/pgcloak.docker.yaml")).unwrap();
    assert!(config.contains("listen: \"0.0.0.0:6432\""));
    assert!(text.contains("/dev/tcp/127.0.0.1/6432"));
}

/// `docker compose config` (or docker-compose's) on a copy with the files setup.sh makes:
/// run only where a compose CLI is installed (apt-get install docker-compose).
#[test]
fn compose_config_validates_where_a_compose_cli_is_installed() {
    let cli: Option<Vec<&str>> = [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|cli| {
            Command::new(cli[0])
                .args(&cli[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(cli) = cli else {
        eprintln!("no docker compose CLI: compose.yaml checked by shape only");
        return;
    };
    let dir = common::fresh_dir("docker-compose");
    let docker = dir.join("docker");
    std::fs::create_dir(&docker).unwrap();
    for file in ["compose.yaml", "pgcloak.docker.yaml", "init.sql"] {
        std::fs::copy(repo("docker").join(file), docker.join(file)).unwrap();
    }
    setup(&docker);
    let out = Command::new(cli[0])
        .args(&cli[1..])
        .arg("-f")
        .arg(docker.join("compose.yaml"))
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cli:?} config: {out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Dockerfile builds the dependencies against dummy targets: one for every target of
/// Cargo.toml, or that layer's `cargo build` fails.
#[test]
fn the_dockerfile_has_a_dummy_for_every_cargo_target() {
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let dockerfile = std::fs::read_to_string(repo("docker/Dockerfile")).unwrap();
    let mut benches = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bench) {
            benches.push(name.trim_matches('"').to_owned());
        }
    }
    assert!(!benches.is_empty());
    for bench in benches {
        let dummy = format!("> benches/{bench}.rs");
        assert!(dockerfile.contains(&dummy), "the Dockerfile lacks {dummy}");
    }
    for dummy in ["> src/main.rs", "touch src/lib.rs"] {
        assert!(dockerfile.contains(dummy), "the Dockerfile lacks {dummy}");
    }
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    for entry in [
        ".git",
        "target",
        "fuzz",
        "**/node_modules",
        "bench-results",
        "docker/secrets",
    ] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
