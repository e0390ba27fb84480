//! A throwaway PostgreSQL cluster for the integration tests (`tests/*.rs`) and `pgcloak demo`.
//!
//! [`PgTemp::start`] runs `initdb` into a fresh temporary directory, starts `postgres` as a
//! direct child process on a free loopback port and waits until it accepts connections.
//! Dropping the [`PgTemp`] stops the server and deletes the directory; the directories of
//! processes killed before that (SIGKILL) are deleted by the next start. Durability is switched
//! off throughout (`initdb --no-sync`, `fsync=off`, ...): the data is meant to be thrown away,
//! and several clusters start in parallel on small CI machines.
//!
//! PostgreSQL refuses to run as root, so when we are root `initdb` and `postgres` run as the
//! `postgres` OS user (set on the child directly, so the server stays our own child).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod host;

pub use host::free_port;
use host::{
    create_base_dir, create_owned_dir, find_binaries, percent_encode, remove_stale_dirs,
    server_owner, write_owned_file, Owner,
};

const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
const DEFAULT_PASSWORD: &str = "postgres";
/// How long a starting server may take before we give up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Grace period for a fast shutdown (`stop`) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace period for an immediate shutdown (`drop`) before SIGKILL.
const DROP_TIMEOUT: Duration = Duration::from_secs(5);
/// The free port we pick can be taken before postgres binds it: one try plus three retries.
const PORT_ATTEMPTS: usize = 4;
/// Lines of server log quoted in startup errors.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "cannot find the PostgreSQL `{binary}` binary in /usr/lib/postgresql/*/bin or on PATH; \
         install it with `apt-get install postgresql` (or put its bin dir on PATH, e.g. \
         /usr/lib/postgresql/15/bin)"
    )]
    BinaryNotFound { binary: &'static str },
    #[error(
        "running as root, but /etc/passwd has no `postgres` user to run PostgreSQL as \
         (PostgreSQL refuses to run as root); install the postgresql package or create the user"
    )]
    NoPostgresUser,
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot find a free TCP port on 127.0.0.1: {0}")]
    FreePort(io::Error),
    #[error("cannot run {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("initdb failed ({status}):\n{output}")]
    InitdbFailed { status: ExitStatus, output: String },
    #[error("PostgreSQL cannot listen on port {port}: address already in use")]
    PortInUse { port: u16 },
    #[error("PostgreSQL exited during startup ({status}); end of {}:\n{tail}", log.display())]
    ServerExited {
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "PostgreSQL did not accept connections on port {port} within {}s; end of {}:\n{tail}",
        waited.as_secs(), log.display()
    )]
    NotReady {
        port: u16,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot {action} PostgreSQL (pid {pid}): {source}")]
    Process {
        action: &'static str,
        pid: u32,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PgTempError + 'a {
    move |source| PgTempError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Configures a [`PgTemp`] before [`start`](PgTempBuilder::start).
#[derive(Debug, Clone)]
pub struct PgTempBuilder {
    password: String,
    hba_lines: Vec<String>,
    settings: Vec<(String, String)>,
    /// PEM certificate chain and key: the server runs with `ssl=on`.
    tls: Option<(String, String)>,
}

impl PgTempBuilder {
    /// Serve TLS with this PEM certificate chain and private key (`ssl=on`). Combine with
    /// `hba_line("hostssl ...")` lines to refuse plaintext clients.
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// The superuser's password for TCP connections (default `postgres`). It must not contain
    /// a newline: initdb reads only the first line of its password file.
    pub fn superuser_password(mut self, pw: &str) -> Self {
        self.password = pw.to_owned();
        self
    }

    /// An extra pg_hba.conf line, placed before the defaults (first match wins in pg_hba.conf,
    /// so these override the default scram-sha-256 rule). Lines keep the order of the calls.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// An extra server setting, passed as `-c name=value` (e.g. `max_connections`).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Creates the cluster and starts the server; returns once it accepts connections.
    ///
    /// Blocking (std only), so it can be called from a `#[tokio::test]` body. The server is
    /// killed if the calling thread exits (see [`PgTemp`]).
    pub fn start(self) -> Result<PgTemp, PgTempError> {
        let binaries = find_binaries()?;
        let owner = server_owner()?;
        for dir in remove_stale_dirs(owner) {
            tracing::info!(dir = %dir.display(), "removed a stale throwaway PostgreSQL directory");
        }
        let base = create_base_dir(owner)?;
        // Built before anything can fail, so that Drop removes the directory on every error.
        let mut pg = PgTemp {
            data_dir: base.join("data"),
            base,
            postgres_bin: binaries.postgres,
            owner,
            password: self.password,
            settings: self.settings,
            port: 0,
            child: Mutex::new(None),
        };
        pg.init(&binaries.initdb, &self.hba_lines)?;
        if let Some((cert, key)) = &self.tls {
            // Postgres wants its key readable by the server's user only.
            write_owned_file(&pg.data_dir.join("server.crt"), cert, owner)?;
            write_owned_file(&pg.data_dir.join("server.key"), key, owner)?;
            for (name, value) in [
                ("ssl", "on"),
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                pg.settings.push((name.to_owned(), value.to_owned()));
            }
        }
        pg.launch_on_free_port()?;
        Ok(pg)
    }
}

/// A running throwaway PostgreSQL server; dropping it stops the server and deletes its files.
///
/// The server dies with the *thread* that started it (or restarted it): it is spawned with
/// `PR_SET_PDEATHSIG = SIGKILL`, so a test process that is killed, or a test thread that
/// panics past its cleanup, cannot leave a postgres behind. Tests start it from their own
/// thread (a `#[tokio::test]` body runs on the test thread), so this is what we want; do not
/// start one from a short-lived helper thread.
#[derive(Debug)]
pub struct PgTemp {
    /// The temporary directory holding everything: `data/`, `sock/` and `postgres.log`.
    base: PathBuf,
    data_dir: PathBuf,
    postgres_bin: PathBuf,
    /// The OS user the server runs as when we are root; `None` means ourselves.
    owner: Option<Owner>,
    password: String,
    settings: Vec<(String, String)>,
    port: u16,
    /// The postmaster. A Mutex only so that `is_running(&self)` can poll it.
    child: Mutex<Option<Child>>,
}

impl PgTemp {
    pub fn builder() -> PgTempBuilder {
        PgTempBuilder {
            password: DEFAULT_PASSWORD.to_owned(),
            hba_lines: Vec::new(),
            tls: None,
            settings: Vec::new(),
        }
    }

    /// A cluster with the default settings: `PgTemp::builder().start()`.
    pub fn start() -> Result<PgTemp, PgTempError> {
        PgTemp::builder().start()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`, with the password percent-encoded.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@{HOST}:{}/{db}",
            percent_encode(&self.password),
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log (its stdout and stderr, across restarts); worth printing when a test
    /// fails.
    pub fn log_path(&self) -> PathBuf {
        self.base.join("postgres.log")
    }

    /// Fast shutdown (SIGINT: sessions are terminated, no waiting for clients), escalating to
    /// SIGKILL after 10 s. Does nothing if the server is not running.
    pub fn stop(&mut self) -> Result<(), PgTempError> {
        self.shutdown(libc::SIGINT, STOP_TIMEOUT)
    }

    /// Stops the server if it runs, then starts it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), PgTempError> {
        self.stop()?;
        self.launch()
    }

    /// Whether the postmaster is alive (false after `stop`, or if it exited on its own).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// A command for a PostgreSQL program, run as the cluster's owner.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.base)
            .stdin(Stdio::null())
            // Untranslated messages: we look for "Address already in use" in the log.
            .env("LC_ALL", "C");
        if let Some(owner) = self.owner {
            cmd.uid(owner.uid).gid(owner.gid);
        }
        cmd
    }

    /// Runs initdb and writes pg_hba.conf.
    fn init(&self, initdb: &Path, hba_lines: &[String]) -> Result<(), PgTempError> {
        create_owned_dir(&self.data_dir, self.owner)?;
        create_owned_dir(&self.base.join("sock"), self.owner)?;

        let pwfile = self.base.join("pwfile");
        write_owned_file(&pwfile, &format!("{}\n", self.password), self.owner)?;
        let mut pwfile_arg = OsString::from("--pwfile=");
        pwfile_arg.push(&pwfile);
        let output = self
            .command(initdb)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(pwfile_arg)
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
            .output();
        // Removed whatever happened: the password should not outlive initdb on disk.
        let _ = fs::remove_file(&pwfile);
        let output = output.map_err(|source| PgTempError::Spawn {
            program: initdb.to_owned(),
            source,
        })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            if text.trim().is_empty() {
                text = String::from_utf8_lossy(&output.stdout).into_owned();
            }
            return Err(PgTempError::InitdbFailed {
                status: output.status,
                output: text.trim_end().to_owned(),
            });
        }

        let mut hba = String::new();
        for line in hba_lines {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str("local all all trust\n");
        hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
        hba.push_str("host all all ::1/128 scram-sha-256\n");
        // initdb created the file as the owner; truncating it in place keeps that ownership.
        let hba_path = self.data_dir.join("pg_hba.conf");
        fs::write(&hba_path, hba).map_err(io_err("write", &hba_path))
    }

    fn launch_on_free_port(&mut self) -> Result<(), PgTempError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            match self.launch() {
                Err(e @ PgTempError::PortInUse { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(PgTempError::PortInUse { port: self.port }))
    }

    /// Spawns the postmaster on `self.port` and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), PgTempError> {
        let log_path = self.log_path();
        // Appended to, so that the log of a restarted server keeps the earlier runs.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let log_start = log
            .metadata()
            .map_err(io_err("read metadata of", &log_path))?
            .len();
        let log_for_stderr = log.try_clone().map_err(io_err("duplicate", &log_path))?;

        let mut socket_dirs = OsString::from("unix_socket_directories=");
        socket_dirs.push(self.base.join("sock"));
        let mut cmd = self.command(&self.postgres_bin);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", &format!("listen_addresses={HOST}")])
            .arg("-c")
            .arg(socket_dirs)
            .args(["-c", "logging_collector=off"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"]);
        for (name, value) in &self.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        // Never inherit our stdout/stderr: a server outliving us would hold the test
        // harness's pipe open and hang CI.
        cmd.stdout(log).stderr(log_for_stderr);
        // Our own process group, so that Ctrl-C in a terminal (`pgcloak demo`) reaches only
        // pgcloak, which then shuts down in order: proxy first, then this server. Dying with
        // us is handled by PDEATHSIG below, not by the process group.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. std runs this
        // after setuid/setgid, which would otherwise clear the death signal. There is no race
        // with the parent thread exiting: spawn() blocks until the child has exec'd.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| PgTempError::Spawn {
            program: self.postgres_bin.clone(),
            source,
        })?;
        let pid = child.id();
        *self.child_mut() = Some(child);

        let result = self.wait_ready(pid, log_start);
        if result.is_err() {
            // Whatever state it is in, a server that failed to start is of no use.
            if let Some(mut child) = self.child_mut().take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        result
    }

    /// Polls until postmaster.pid says "ready" and the port accepts a TCP connection, or the
    /// server exits, or READY_TIMEOUT passes.
    fn wait_ready(&mut self, pid: u32, log_start: u64) -> Result<(), PgTempError> {
        let started = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            let exited = match self.child_mut().as_mut().map(Child::try_wait) {
                Some(Ok(status)) => status,
                Some(Err(source)) => {
                    return Err(PgTempError::Process {
                        action: "check on",
                        pid,
                        source,
                    })
                }
                None => None,
            };
            if let Some(status) = exited {
                let log = read_from(&self.log_path(), log_start);
                if log.contains("Address already in use") {
                    return Err(PgTempError::PortInUse { port: self.port });
                }
                return Err(PgTempError::ServerExited {
                    status,
                    log: self.log_path(),
                    tail: tail(&log),
                });
            }
            if pid_file_ready(&pid_file, pid)
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(PgTempError::NotReady {
                    port: self.port,
                    waited: READY_TIMEOUT,
                    log: self.log_path(),
                    tail: tail(&read_from(&self.log_path(), log_start)),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` to the postmaster, waits up to `grace` for it to exit, then SIGKILLs it.
    fn shutdown(&mut self, signal: libc::c_int, grace: Duration) -> Result<(), PgTempError> {
        let Some(mut child) = self.child_mut().take() else {
            return Ok(());
        };
        let pid = child.id();
        let result = signal_and_wait(&mut child, signal, grace);
        if !matches!(result, Ok(true)) {
            tracing::warn!(pid, "PostgreSQL did not shut down in time; killing it");
            // Our child and not yet reaped, so the pid cannot have been reused.
            let _ = child.kill();
            child.wait().map_err(|source| PgTempError::Process {
                action: "wait for",
                pid,
                source,
            })?;
        }
        result.map(|_| ())
    }
}

impl Drop for PgTemp {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): the data is deleted next, so the shutdown checkpoint
        // of a fast shutdown would be wasted time.
        if let Err(e) = self.shutdown(libc::SIGQUIT, DROP_TIMEOUT) {
            tracing::warn!(error = %e, "cannot stop the throwaway PostgreSQL");
        }
        if fs::remove_dir_all(&self.base).is_err() {
            // After a SIGKILL, backends may still be writing for a moment.
            std::thread::sleep(Duration::from_millis(200));
            if let Err(e) = fs::remove_dir_all(&self.base) {
                tracing::warn!(dir = %self.base.display(), error = %e,
                    "cannot remove the throwaway PostgreSQL directory");
            }
        }
    }
}

/// Sends `signal` and waits up to `grace`; Ok(true) once the child has exited.
fn signal_and_wait(
    child: &mut Child,
    signal: libc::c_int,
    grace: Duration,
) -> Result<bool, PgTempError> {
    let pid = child.id();
    let err = |action| {
        move |source| PgTempError::Process {
            action,
            pid,
            source,
        }
    };
    if child.try_wait().map_err(err("check on"))?.is_some() {
        return Ok(true); // already gone (crashed or killed): nothing to stop
    }
    let raw_pid = libc::pid_t::try_from(pid)
        .map_err(|e| err("signal")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    if unsafe { libc::kill(raw_pid, signal) } == -1 {
        return Err(err("signal")(io::Error::last_os_error()));
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().map_err(err("wait for"))?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(false)
}

/// Whether `<data>/postmaster.pid` belongs to `pid` and says "ready" on its status line (the
/// 8th), which postgres writes once it accepts connections. Checking the pid matters after a
/// SIGKILL, which leaves a stale file from the previous run behind.
fn pid_file_ready(path: &Path, pid: u32) -> bool {
    let Ok(contents) = fs::read_to_string(path) else {
        return false;
    };
    let lines: Vec<&str> = contents.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// The log text written since byte `start`, or an explanation if it cannot be read.
fn read_from(path: &Path, start: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests;
