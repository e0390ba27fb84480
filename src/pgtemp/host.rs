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
