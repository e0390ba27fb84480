//! Where one master key comes from. Each source is one small type behind [`KeySource`], so
//! another (Vault Transit, a cloud KMS) is one more implementation.

use std::fmt;
use std::path::PathBuf;

use crate::crypto::MasterKey;

/// Loads one master key. Errors say what failed (the variable, the file, the HSM step) and
/// never contain key material.
pub trait KeySource: fmt::Debug + Send + Sync {
    fn load(&self) -> Result<MasterKey, String>;
}

/// Standard base64 of 32 bytes in an environment variable (`pgcloak keygen`).
#[derive(Debug)]
pub struct EnvKey {
    pub var: String,
}

impl KeySource for EnvKey {
    fn load(&self) -> Result<MasterKey, String> {
        let text = std::env::var(&self.var).map_err(|_| {
            format!(
                "environment variable {} is not set (make a key with `pgcloak keygen`)",
                self.var
            )
        })?;
        MasterKey::from_base64(&text).map_err(|e| e.to_string())
    }
}

/// Standard base64 of 32 bytes in a file.
#[derive(Debug)]
pub struct FileKey {
    pub path: PathBuf,
}

impl KeySource for FileKey {
    fn load(&self) -> Result<MasterKey, String> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.path).map_err(|e| read_error(&self.path, &e))?,
        );
        MasterKey::from_base64(&text).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// "cannot read PATH: ERROR", and for a permission error the uid and gid pgcloak runs as
/// (a container's user is often not the owner of a mounted key file).
fn read_error(path: &std::path::Path, error: &std::io::Error) -> String {
    let mut message = format!("cannot read {}: {error}", path.display());
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        message.push_str(&format!(
            "; pgcloak runs as uid {uid}, gid {gid}: make the file readable by it"
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_file_sources_name_what_is_missing() {
        let env = EnvKey {
            var: "PGCLOAK_KEY_SOURCE_TEST_UNSET".into(),
        };
        assert!(env
            .load()
            .unwrap_err()
            .contains("PGCLOAK_KEY_SOURCE_TEST_UNSET"));
        let file = FileKey {
            path: "/nonexistent/pgcloak-key".into(),
        };
        assert!(file
            .load()
            .unwrap_err()
            .contains("/nonexistent/pgcloak-key"));
        let dir = std::env::temp_dir().join(format!("pgcloak-keysrc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        std::fs::write(&path, format!("{}\n", MasterKey::generate().to_base64())).unwrap();
        FileKey { path: path.clone() }.load().unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let err = FileKey { path }.load().unwrap_err();
        assert!(
            err.contains("base64") && !err.contains("not a key"),
            "{err}"
        );
    }

    #[test]
    fn a_permission_error_names_the_uid_pgcloak_runs_as() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = read_error(std::path::Path::new("/run/secrets/k"), &denied);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert!(
            err.starts_with("cannot read /run/secrets/k: ")
                && err.contains(&format!("pgcloak runs as uid {uid}, gid ")),
            "{err}"
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!read_error(std::path::Path::new("k"), &missing).contains("uid"));
    }
}
