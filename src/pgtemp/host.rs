//! The host side of a throwaway cluster: where the server binaries are, which OS user runs
//! them, and directories and files owned by that user.

use super::*;

/// A TCP port on 127.0.0.1 that was free a moment ago (for tests, benches and the demo).
pub fn free_port() -> Result<u16, PgTempError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PgTempError::FreePort)?;
    let port = listener.local_addr().map_err(PgTempError::FreePort)?.port();
    Ok(port)
}

pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) postgres: PathBuf,
}

/// initdb and postgres from the same directory: the newest /usr/lib/postgresql/<v>/bin, else
/// the first PATH entry holding both.
pub(super) fn find_binaries() -> Result<Binaries, PgTempError> {
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

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The user to run PostgreSQL as: `None` (ourselves) unless we are root.
pub(super) fn server_owner() -> Result<Option<Owner>, PgTempError> {
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
pub(super) fn passwd_entry(passwd: &str, user: &str) -> Option<Owner> {
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
pub(super) fn create_base_dir(owner: Option<Owner>) -> Result<PathBuf, PgTempError> {
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

/// Removes the `<temp>/pgtemp-<pid>-...` directories that a process killed before its
/// cleanup left behind (a demo or test killed with SIGKILL: about 40 MB each), and returns
/// them. A directory is stale when it belongs to the server's owner, the process `<pid>`
/// that made it is gone, and so is the server named in its `data/postmaster.pid`; a
/// directory of a running demo or test (another pid namespace's aside) is never touched.
pub(super) fn remove_stale_dirs(owner: Option<Owner>) -> Vec<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = owner.map_or_else(|| unsafe { libc::geteuid() }, |o| o.uid);
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(creator_pid) else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: a link named like our directories is not followed.
        let ours = fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == uid);
        if !ours || pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let server = fs::read_to_string(path.join("data/postmaster.pid")).ok();
        let server = server
            .as_deref()
            .and_then(|t| t.lines().next()?.trim().parse().ok());
        if server.is_some_and(process_alive) {
            continue;
        }
        // Backends of a killed server may still be writing for a moment: one more try.
        let gone = fs::remove_dir_all(&path).is_ok() || {
            std::thread::sleep(Duration::from_millis(200));
            fs::remove_dir_all(&path).is_ok()
        };
        if gone {
            removed.push(path);
        }
    }
    removed
}

/// The pid in a directory name made by [`create_base_dir`] (`pgtemp-<pid>-<n>-<nanos>`).
pub(super) fn creator_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("pgtemp-")?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let rest: Vec<&str> = parts.collect();
    let digits = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    (rest.len() == 2 && rest.iter().all(digits)).then_some(pid)
}

/// Whether a process with this pid exists (EPERM: it does, as another user's).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true; // 0 and -1 would address process groups: never "gone"
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 }
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie (a killed demo's postmaster, not yet reaped by its new parent) is gone.
    exists && !is_zombie(pid)
}

/// Whether /proc says the process has exited but is not reaped yet (state `Z`).
fn is_zombie(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('Z')))
        .unwrap_or(false)
}

/// A new mode-0700 directory owned by `owner` (PostgreSQL insists on 0700 for its data dir).
pub(super) fn create_owned_dir(path: &Path, owner: Option<Owner>) -> Result<(), PgTempError> {
    fs::create_dir(path).map_err(io_err("create directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io_err("set permissions of", path))?;
    give_to(path, owner)
}

/// A new mode-0600 file owned by `owner`.
pub(super) fn write_owned_file(
    path: &Path,
    contents: &str,
    owner: Option<Owner>,
) -> Result<(), PgTempError> {
    fs::write(path, contents).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("set permissions of", path))?;
    give_to(path, owner)
}

pub(super) fn give_to(path: &Path, owner: Option<Owner>) -> Result<(), PgTempError> {
    match owner {
        Some(Owner { uid, gid }) => {
            chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
        }
        None => Ok(()),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the URL's userinfo.
pub(super) fn percent_encode(text: &str) -> String {
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
