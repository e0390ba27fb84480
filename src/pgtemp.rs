//! A throwaway PostgreSQL cluster for the integration tests (`tests/*.rs`) and `pgcloak demo`.
//!
//! [`PgTemp::start`] runs `initdb` into a fresh temporary directory, starts `postgres` as a
//! direct child process on a free loopback port and waits until it accepts connections.
//! Dropping the [`PgTemp`] stops the server and deletes the directory. Durability is switched
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
}

impl PgTempBuilder {
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

/// A TCP port on 127.0.0.1 that was free a moment ago (for tests, benches and the demo).
pub fn free_port() -> Result<u16, PgTempError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PgTempError::FreePort)?;
    let port = listener.local_addr().map_err(PgTempError::FreePort)?.port();
    Ok(port)
}

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// initdb and postgres from the same directory: the newest /usr/lib/postgresql/<v>/bin, else
/// the first PATH entry holding both.
fn find_binaries() -> Result<Binaries, PgTempError> {
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    let mut dirs: Vec<PathBuf> = versioned.into_iter().map(|(_, dir)| dir).collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }

    let has = |dir: &Path, name: &str| is_executable(&dir.join(name));
    if let Some(dir) = dirs
        .iter()
        .find(|dir| has(dir, "initdb") && has(dir, "postgres"))
    {
        return Ok(Binaries {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
        });
    }
    let binary = if dirs.iter().any(|dir| has(dir, "initdb")) {
        "postgres"
    } else {
        "initdb"
    };
    Err(PgTempError::BinaryNotFound { binary })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// The user to run PostgreSQL as: `None` (ourselves) unless we are root.
fn server_owner() -> Result<Option<Owner>, PgTempError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let path = Path::new("/etc/passwd");
    let passwd = fs::read_to_string(path).map_err(io_err("read", path))?;
    passwd_entry(&passwd, "postgres")
        .map(Some)
        .ok_or(PgTempError::NoPostgresUser)
}

/// uid and gid of `user` in /etc/passwd text (`name:password:uid:gid:gecos:home:shell`).
fn passwd_entry(passwd: &str, user: &str) -> Option<Owner> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Owner { uid, gid })
    })
}

/// Creates `<temp>/pgtemp-<pid>-<counter>-<nanos>`, private to the server's owner (who must
/// be able to enter it: it holds the data directory and the socket directory).
fn create_base_dir(owner: Option<Owner>) -> Result<PathBuf, PgTempError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("pgtemp-{}-{n}-{nanos}", std::process::id()));
        match create_owned_dir(&dir, owner) {
            // Left over from an earlier process with our pid: try the next name.
            Err(PgTempError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            Ok(()) => return Ok(dir),
        }
    }
}

/// A new mode-0700 directory owned by `owner` (PostgreSQL insists on 0700 for its data dir).
fn create_owned_dir(path: &Path, owner: Option<Owner>) -> Result<(), PgTempError> {
    fs::create_dir(path).map_err(io_err("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io_err("set permissions of", path))?;
    give_to(path, owner)
}

/// A new mode-0600 file owned by `owner`.
fn write_owned_file(path: &Path, contents: &str, owner: Option<Owner>) -> Result<(), PgTempError> {
    fs::write(path, contents).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("set permissions of", path))?;
    give_to(path, owner)
}

fn give_to(path: &Path, owner: Option<Owner>) -> Result<(), PgTempError> {
    match owner {
        Some(Owner { uid, gid }) => {
            chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
        }
        None => Ok(()),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the URL's userinfo.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::NoTls;

    async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
        let client = connect(url).await?;
        Ok(client.query_one("SELECT 1", &[]).await?.get(0))
    }

    #[tokio::test]
    async fn starts_and_accepts_the_superuser_password() {
        let pg = PgTemp::start().unwrap();
        assert!(pg.is_running());
        assert_eq!(pg.host(), "127.0.0.1");
        assert_eq!(pg.superuser(), "postgres");
        assert_eq!(pg.password(), "postgres");
        assert_eq!(
            pg.url("postgres"),
            format!(
                "postgresql://postgres:postgres@127.0.0.1:{}/postgres",
                pg.port()
            )
        );
        assert_eq!(select_one(&pg.url("postgres")).await.unwrap(), 1);

        // TCP really uses scram-sha-256: a wrong password is refused.
        let wrong = format!(
            "postgresql://postgres:nope@127.0.0.1:{}/postgres",
            pg.port()
        );
        assert!(select_one(&wrong).await.is_err());
    }

    #[tokio::test]
    async fn builder_options_apply() {
        let pg = PgTemp::builder()
            .superuser_password("p@ss/w:rd %x")
            .hba_line("host all trustme 127.0.0.1/32 trust")
            .setting("max_connections", "7")
            .start()
            .unwrap();
        let admin = connect(&pg.url("postgres")).await.unwrap();
        let max: String = admin
            .query_one("SHOW max_connections", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(max, "7");
        admin
            .batch_execute("CREATE ROLE trustme LOGIN")
            .await
            .unwrap();
        let trusted = format!("postgresql://trustme@127.0.0.1:{}/postgres", pg.port());
        assert_eq!(select_one(&trusted).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn stop_and_restart_on_the_same_port() {
        let mut pg = PgTemp::start().unwrap();
        let port = pg.port();
        let client = connect(&pg.url("postgres")).await.unwrap();
        client
            .batch_execute("CREATE TABLE kept (x int)")
            .await
            .unwrap();

        pg.stop().unwrap();
        assert!(!pg.is_running());
        pg.stop().unwrap(); // idempotent
        assert!(select_one(&pg.url("postgres")).await.is_err());

        pg.restart().unwrap();
        assert!(pg.is_running());
        assert_eq!(pg.port(), port);
        let client = connect(&pg.url("postgres")).await.unwrap();
        client.batch_execute("SELECT * FROM kept").await.unwrap();

        pg.restart().unwrap(); // restarting a running server works too
        assert_eq!(select_one(&pg.url("postgres")).await.unwrap(), 1);
        let log = fs::read_to_string(pg.log_path()).unwrap();
        assert!(log.contains("database system is ready"), "{log}");
    }

    #[test]
    fn restart_reports_a_taken_port() {
        let mut pg = PgTemp::start().unwrap();
        pg.stop().unwrap();
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, pg.port())).unwrap();
        let err = pg.restart().unwrap_err();
        assert!(
            matches!(err, PgTempError::PortInUse { port } if port == pg.port()),
            "{err}"
        );
        assert!(!pg.is_running());
        drop(squatter);
        pg.restart().unwrap();
        assert!(pg.is_running());
    }

    #[test]
    fn drop_stops_the_server_and_removes_the_directory() {
        let pg = PgTemp::start().unwrap();
        let base = pg.base.clone();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port()));
        assert!(base.join("data/PG_VERSION").exists());
        drop(pg);
        assert!(!base.exists());
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn server_dies_with_the_thread_that_started_it() {
        let (pid, port, base) = std::thread::spawn(|| {
            let pg = PgTemp::start().unwrap();
            let pid = pg.child.lock().unwrap().as_ref().unwrap().id();
            let found = (pid, pg.port(), pg.base.clone());
            std::mem::forget(pg); // no Drop: only PDEATHSIG can stop it
            found
        })
        .join()
        .unwrap();
        // Reap it ourselves (its Child was forgotten), polling so a failure cannot hang.
        let mut status = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: waiting for our own child; status is a valid out-pointer.
            let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if reaped == pid as libc::pid_t {
                break;
            }
            assert!(Instant::now() < deadline, "postgres outlived its thread");
            std::thread::sleep(POLL_INTERVAL);
        }
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
        // Orphaned backends exit on their own once they notice the postmaster is gone.
        std::thread::sleep(Duration::from_millis(300));
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn parses_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            passwd_entry(passwd, "postgres"),
            Some(Owner { uid: 101, gid: 104 })
        );
        assert_eq!(passwd_entry(passwd, "post"), None);
    }

    #[test]
    fn percent_encodes_userinfo() {
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(percent_encode("p@ss/w:rd %"), "p%40ss%2Fw%3Ard%20%25");
    }
}
