//! Listen addresses in the config file (`listen`, `sidecar.listen`, and any later `*.listen`
//! key): an IP address with a port, or a host name with a port that is resolved once, at
//! load time.
//!
//! A name is bound on the first address the system resolver returns for it (getaddrinfo's
//! order, as `getent ahosts NAME` prints it), not on all of them: `localhost` that resolves
//! to `::1` and `127.0.0.1` is bound on whichever comes first. To choose, write the address.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::ConfigError;

/// The address to bind for the listen key `key` (its dotted name, for messages) of the
/// config file `path`, whose value is `value`: `127.0.0.1:6432`, `[::1]:6432`,
/// `localhost:6432` or `0.0.0.0:0` (port 0: any free port).
pub fn listen_addr(value: &str, key: &str, path: &Path) -> Result<SocketAddr, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_owned(),
        message,
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let syntax = || {
        invalid(format!(
            "{value:?} is not an address:port or host:port such as \"127.0.0.1:6432\" or \"localhost:6432\""
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(syntax)?;
    let port: u16 = port.parse().map_err(|_| syntax())?;
    // A bracketed or bare IPv6 address that did not parse above is not a host name either.
    if host.is_empty() || host.contains([':', '[', ']', '/']) || host.trim() != host {
        return Err(syntax());
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve {host:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(format!("{host:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<SocketAddr, String> {
        listen_addr(value, "sidecar.listen", Path::new("pgcloak.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn addresses_are_taken_as_written() {
        assert_eq!(
            parse("127.0.0.1:6432").unwrap().to_string(),
            "127.0.0.1:6432"
        );
        assert_eq!(parse("[::1]:6432").unwrap().to_string(), "[::1]:6432");
        assert_eq!(parse("0.0.0.0:0").unwrap().port(), 0);
    }

    #[test]
    fn localhost_resolves_to_a_loopback_address() {
        let addr = parse("localhost:6432").unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 6432);
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_value() {
        for value in [
            "localhost",
            "localhost:",
            "localhost:99999",
            ":6432",
            "::1:6432x",
            "[::1]",
        ] {
            let err = parse(value).unwrap_err();
            assert!(
                err.starts_with("pgcloak.yaml: `sidecar.listen`: ")
                    && err.contains(&format!("{value:?} is not an address:port or host:port")),
                "{value}: {err}"
            );
        }
        let err = parse("no-such-host.invalid:6432").unwrap_err();
        assert!(
            err.starts_with(
                "pgcloak.yaml: `sidecar.listen`: cannot resolve \"no-such-host.invalid\""
            ),
            "{err}"
        );
    }
}
