//! Load on the JWE sidecar: 8 concurrent senders post valid 3-column records (RSA-2048
//! RSA-OAEP-256 + A256GCM around an RS256-signed JWS) to `pgcloak serve`, running as its own
//! process in front of a throwaway Postgres; reports requests/s and p50/p99 latency, and the
//! CPU each process used. With `perf` on PATH (and PERF=0 not set) it also samples the
//! pgcloak process and reports the share of its CPU spent in OpenSSL's libcrypto (RSA).
//!
//! Run: `cargo bench --bench sidecar_load` (DURATION=seconds, default 15; SENDERS, default 8).
//! The bodies are made before the clock starts, so the senders spend almost no CPU of their
//! own; on a 2-core machine the sender, pgcloak and Postgres still share the cores.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::{free_port, PgTemp};
use pgcloak::sidecar::jose;

const PASSWORD: &str = "bench-pw";
const SCHEMA: &str =
    "CREATE TABLE users (id serial PRIMARY KEY, email text, first_name text, last_name text)";

fn main() {
    let duration = Duration::from_secs(env_number("DURATION", 15));
    let senders = env_number("SENDERS", 8) as usize;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    runtime.block_on(async { connect(&pg).await.batch_execute(SCHEMA).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("pgcloak-sidecar-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = write_rsa_pair(&dir, "sidecar");
    let party = write_rsa_pair(&dir, "partner-a");
    let port = free_port().unwrap();
    let config = dir.join("pgcloak.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{}\"\nupstream: {{ host: 127.0.0.1, port: {} }}\n\
             keys: {{ master_key_env: BENCH_MASTER_KEY }}\n\
             tables:\n  users: {{ email: deterministic, first_name: randomized, last_name: randomized }}\n\
             sidecar:\n  listen: \"127.0.0.1:{port}\"\n  database: postgres\n  user: postgres\n  \
             password_env: BENCH_PG_PASSWORD\n  private_key_file: sidecar.pem\n  parties:\n    \
             partner-a:\n      public_key_file: partner-a.pub.pem\n      require_jti: true\n      \
             tables: {{ users: [email, first_name, last_name] }}\n",
            free_port().unwrap(),
            pg.port()
        ),
    )
    .unwrap();
    let serve = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BENCH_MASTER_KEY", MasterKey::generate().to_base64())
        .env("BENCH_PG_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let serve = KillOnDrop(serve);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = runtime.block_on(async {
        for _ in 0..100 {
            let health = http.get(format!("{base}/healthz")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(ready, "pgcloak serve did not become healthy");

    // Every body carries its own `jti` and is sent once: enough for the warm-up and the run
    // at well over the measured rate.
    let count = 60_000;
    eprintln!("making {count} JWE bodies…");
    let bodies = Arc::new(make_bodies(&server, &party, count));

    let url = format!("{base}/v1/ingest/users");
    eprintln!("warming up…");
    let next = AtomicUsize::new(0);
    runtime.block_on(load(
        &http,
        &url,
        &bodies,
        &next,
        senders,
        Duration::from_secs(2),
    ));
    let before_rows = row_count(&runtime, &pg);
    let perf = start_perf(serve.0.id(), duration);
    let cpu_before = (process_cpu(serve.0.id()), postgres_cpu(&pg));
    eprintln!(
        "measuring for {}s with {senders} senders…",
        duration.as_secs()
    );
    let start = Instant::now();
    let result = runtime.block_on(load(&http, &url, &bodies, &next, senders, duration));
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = (process_cpu(serve.0.id()), postgres_cpu(&pg));
    let stored = row_count(&runtime, &pg) - before_rows;

    let mut latencies = result.latencies;
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let ok = latencies.len();
    println!("sidecar ingest, RSA-2048 (RSA-OAEP-256 + A256GCM, RS256), {senders} senders, {elapsed:.1} s");
    println!(
        "  requests: {ok} × 201, {} failed; rows stored: {stored}",
        result.failures
    );
    println!("  throughput: {:.0} req/s", ok as f64 / elapsed);
    println!(
        "  latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(quantile(0.50)),
        ms(quantile(0.99)),
        ms(latencies[ok - 1])
    );
    let pgcloak_cpu = cpu_after.0 - cpu_before.0;
    let postgres_cpu = cpu_after.1 - cpu_before.1;
    println!(
        "  CPU during the run: pgcloak {:.0}% of a core, postgres {:.0}% (of 2 cores = 200%)",
        100.0 * pgcloak_cpu / elapsed,
        100.0 * postgres_cpu / elapsed
    );
    let rsa = rsa_private_op(&server);
    let rsa_cores = rsa.as_secs_f64() * ok as f64 / elapsed;
    println!(
        "  RSA-2048 OAEP decryption: {:.0} µs per operation on one core here, so ~{:.0}% of a core \
         at this rate: {:.0}% of pgcloak's CPU, {:.0}% of pgcloak's and postgres's together",
        rsa.as_secs_f64() * 1e6,
        100.0 * rsa_cores,
        100.0 * rsa_cores * elapsed / pgcloak_cpu,
        100.0 * rsa_cores * elapsed / (pgcloak_cpu + postgres_cpu)
    );
    if let Some(perf) = perf {
        report_perf(perf);
    }
    drop(serve);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(result.failures, 0, "some ingests failed");
    assert_eq!(stored as usize, ok, "rows stored differ from 201 answers");
}

/// `pgcloak serve`, stopped (SIGTERM, then waited for) however the bench ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

struct LoadResult {
    latencies: Vec<Duration>,
    failures: usize,
}

/// `senders` tasks post bodies (from `next` on, each once) until `duration` has passed.
async fn load(
    http: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<String>>,
    next: &AtomicUsize,
    senders: usize,
    duration: Duration,
) -> LoadResult {
    let deadline = Instant::now() + duration;
    let tasks = (0..senders).map(|_| async {
        let mut latencies = Vec::new();
        let mut failures = 0;
        while Instant::now() < deadline {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(body) = bodies.get(i) else {
                panic!(
                    "all {} bodies sent before the time was up; make more",
                    bodies.len()
                );
            };
            let start = Instant::now();
            let response = http
                .post(url)
                .header("content-type", "application/jose")
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 201 => {
                    let _ = r.bytes().await;
                    latencies.push(start.elapsed());
                }
                Ok(r) => {
                    failures += 1;
                    eprintln!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("request failed: {e}");
                }
            }
        }
        (latencies, failures)
    });
    let mut result = LoadResult {
        latencies: Vec::new(),
        failures: 0,
    };
    for (latencies, failures) in futures::future::join_all(tasks).await {
        result.latencies.extend(latencies);
        result.failures += failures;
    }
    result
}

/// Signed, encrypted 3-column records, made on both cores.
fn make_bodies(server: &Path, party: &Path, count: usize) -> Vec<String> {
    let server_pub = std::fs::read(server.with_extension("pub.pem")).unwrap();
    let party_key = std::fs::read(party).unwrap();
    let threads = 2;
    // Every record is single-use (`jti`), valid for the longest the sidecar accepts.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let chunks: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (server_pub, party_key) = (&server_pub, &party_key);
                scope.spawn(move || {
                    let encrypter = jose::encrypter(server_pub).unwrap();
                    let signer = jose::signer(party_key).unwrap();
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let record = serde_json::json!({
                                "email": format!("user{i}@example.com"),
                                "first_name": format!("First{i}"),
                                "last_name": "Lastname",
                                "jti": format!("bench-{i}"),
                                "exp": exp,
                            });
                            let jws = jose::sign(
                                record.to_string().as_bytes(),
                                signer.as_ref(),
                                "partner-a",
                            )
                            .unwrap();
                            jose::encrypt(jws.as_bytes(), encrypter.as_ref(), true, false).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    chunks.into_iter().flatten().collect()
}

/// The time of one RSA-OAEP decryption with the server's key (what the sidecar does per
/// ingest to unwrap the content key), averaged over 500 on this thread.
fn rsa_private_op(server: &Path) -> Duration {
    let key = openssl::rsa::Rsa::private_key_from_pem(&std::fs::read(server).unwrap()).unwrap();
    let padding = openssl::rsa::Padding::PKCS1_OAEP;
    let mut wrapped = vec![0; key.size() as usize];
    let n = key.public_encrypt(&[7; 32], &mut wrapped, padding).unwrap();
    let mut out = vec![0; key.size() as usize];
    let rounds = 500;
    let start = Instant::now();
    for _ in 0..rounds {
        key.private_decrypt(&wrapped[..n], &mut out, padding)
            .unwrap();
    }
    start.elapsed() / rounds
}

fn row_count(runtime: &tokio::runtime::Runtime, pg: &PgTemp) -> i64 {
    runtime.block_on(async {
        let sql = "SELECT count(*) FROM users";
        connect(pg).await.query_one(sql, &[]).await.unwrap().get(0)
    })
}

async fn connect(pg: &PgTemp) -> tokio_postgres::Client {
    let url = pg.url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn write_rsa_pair(dir: &Path, name: &str) -> PathBuf {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let private = dir.join(format!("{name}.pem"));
    std::fs::write(&private, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.pub.pem")),
        key.public_key_to_pem().unwrap(),
    )
    .unwrap();
    private
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User + system CPU seconds of a process (all its threads), from /proc.
fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// CPU seconds of the bench's Postgres cluster: its postmaster (first line of
/// postmaster.pid) and every process it started (backends, background workers).
fn postgres_cpu(pg: &PgTemp) -> f64 {
    let pid_file =
        std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap_or_default();
    let Some(postmaster) = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return 0.0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let children: f64 = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent(pid) == Some(postmaster))
        .map(process_cpu)
        .sum();
    children + process_cpu(postmaster)
}

/// `perf record` on the pgcloak process for the run, when perf is there.
fn start_perf(pid: u32, duration: Duration) -> Option<(Child, PathBuf)> {
    if std::env::var("PERF").as_deref() == Ok("0") {
        return None;
    }
    let data =
        std::env::temp_dir().join(format!("pgcloak-sidecar-bench-{}.perf", std::process::id()));
    let child = Command::new("perf")
        .args(["record", "-q", "-F", "999", "-o"])
        .arg(&data)
        .args([
            "-p",
            &pid.to_string(),
            "--",
            "sleep",
            &duration.as_secs().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, data))
}

/// The share of the pgcloak process's samples per shared object (libcrypto: RSA, AES, SHA;
/// its symbols are stripped, so [`rsa_private_op`] splits out RSA's part).
fn report_perf((mut child, data): (Child, PathBuf)) {
    let _ = child.wait();
    let report = |sort: &str| {
        let output = Command::new("perf")
            .args(["report", "--stdio", "--sort", sort, "-i"])
            .arg(&data)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let rows = |text: &str, n: usize| -> Vec<String> {
        let numbered = text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()));
        numbered
            .take(n)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    if let Some(text) = report("dso") {
        println!("  perf, pgcloak process, share of samples by object:");
        rows(&text, 5).iter().for_each(|row| println!("    {row}"));
    }
    let _ = std::fs::remove_file(&data);
}
