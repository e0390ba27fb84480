//! Registered JWT claims in a signed ingest payload, and the replay guard.
//!
//! A party's signed payload is a JSON object of column → value; the registered JWT claim
//! names (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`) in it are claims, not columns.
//! `exp` bounds how long a record may be posted (at most 5 minutes ahead, like a bearer
//! token); `jti` makes it single-use: the sidecar remembers (party, jti) until `exp` and
//! answers a second post of the same record 409. A party with `require_jti: true` must send
//! both. The guard lives in memory: it covers one sidecar process, across its restarts only
//! as far as `exp` has passed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};

use super::error::{ApiError, Reason};

/// Seconds a clock may be off either way.
pub const CLOCK_SKEW_SECONDS: i64 = 30;
/// How far ahead a bearer token's or a record's `exp` may be.
pub const MAX_LIFETIME_SECONDS: i64 = 300;
/// The longest `jti` accepted (it is kept in memory until `exp`).
const MAX_JTI_BYTES: usize = 256;
/// (party, jti) pairs remembered at most; beyond, ingests with a `jti` are refused (503)
/// rather than forgotten early.
const REPLAY_CAPACITY: usize = 1_000_000;

const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// Whether `name` is a registered JWT claim (and so never a column of a signed record).
pub fn is_registered(name: &str) -> bool {
    REGISTERED.contains(&name)
}

/// Why a token's or record's time claims do not hold.
#[derive(Debug, PartialEq, Eq)]
pub enum TimeError {
    NotNumber(&'static str),
    Expired,
    TooFarAhead,
    NotYetValid(&'static str),
}

impl TimeError {
    /// The message, about `what` ("the bearer token", "the record").
    pub fn message(&self, what: &str) -> String {
        match self {
            TimeError::NotNumber(name) => {
                format!("{what}'s `{name}` is not a number of seconds since the epoch")
            }
            TimeError::Expired => format!("{what} has expired (`exp`)"),
            TimeError::TooFarAhead => format!(
                "{what}'s `exp` is more than {MAX_LIFETIME_SECONDS} s ahead; make it short-lived"
            ),
            TimeError::NotYetValid(name) => format!("{what} is not valid yet (`{name}`)"),
        }
    }
}

/// Checks `exp` (within the lifetime), `nbf` and `iat` (not in the future) of a claims set;
/// returns `exp` if present. `now`: seconds since the Unix epoch.
pub fn check_times(claims: &Map<String, Value>, now: i64) -> Result<Option<i64>, TimeError> {
    let time = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|t| t.is_finite())
            .map(|t| Some(t as i64))
            .ok_or(TimeError::NotNumber(name)),
    };
    let exp = time("exp")?;
    if let Some(exp) = exp {
        if exp + CLOCK_SKEW_SECONDS <= now {
            return Err(TimeError::Expired);
        }
        if exp > now + MAX_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS {
            return Err(TimeError::TooFarAhead);
        }
    }
    for name in ["nbf", "iat"] {
        if time(name)?.is_some_and(|t| t > now + CLOCK_SKEW_SECONDS) {
            return Err(TimeError::NotYetValid(name));
        }
    }
    Ok(exp)
}

/// The replay-relevant claims of a record.
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    pub jti: Option<String>,
    pub exp: Option<i64>,
}

/// Takes the registered claims out of `record` (what is left are columns) and checks them
/// for `party` (its id, and whether it must send `jti`).
pub fn take(
    record: &mut Map<String, Value>,
    party: (&str, bool),
    now: i64,
) -> Result<Claims, ApiError> {
    let (party, require_jti) = party;
    let bad = |message: String| ApiError::new(Reason::BadClaims, message);
    let mut claims = Map::new();
    for name in REGISTERED {
        if let Some(value) = record.remove(name) {
            claims.insert(name.to_owned(), value);
        }
    }
    for name in ["iss", "sub"] {
        if let Some(value) = claims.get(name) {
            if value.as_str() != Some(party) {
                return Err(bad(format!(
                    "the record's `{name}` must be the party id (its `kid`)"
                )));
            }
        }
    }
    if claims.contains_key("aud") {
        return Err(bad(
            "the record's `aud` is not accepted: the sidecar names no audience; leave it out"
                .into(),
        ));
    }
    let exp = check_times(&claims, now).map_err(|e| bad(e.message("the record")))?;
    let jti = match claims.get("jti") {
        None => None,
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => {
            Some(jti.clone())
        }
        Some(_) => {
            return Err(bad(format!(
                "the record's `jti` must be a string of 1 to {MAX_JTI_BYTES} bytes"
            )))
        }
    };
    if jti.is_some() && exp.is_none() {
        return Err(bad(
            "the record's `jti` needs an `exp`, so that the sidecar knows how long to remember it"
                .into(),
        ));
    }
    if require_jti && jti.is_none() {
        return Err(bad(format!(
            "party {party} must send `jti` and `exp` in each record (replay protection)"
        )));
    }
    Ok(Claims { jti, exp })
}

/// The (party, jti) pairs of records accepted or being stored, each until its `exp`.
pub struct ReplayGuard {
    seen: Mutex<Seen>,
    capacity: usize,
}

#[derive(Default)]
struct Seen {
    until: HashMap<(String, String), i64>,
    /// Size at which expired entries are next dropped.
    prune_at: usize,
}

impl Default for ReplayGuard {
    fn default() -> ReplayGuard {
        ReplayGuard::with_capacity(REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: Mutex::default(),
            capacity,
        }
    }

    /// Holds (party, jti) until `exp`: Conflict if it is held already, Overloaded if the
    /// guard is full of unexpired pairs.
    pub fn reserve(&self, party: &str, jti: &str, exp: i64, now: i64) -> Result<(), ApiError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (party.to_owned(), jti.to_owned());
        if seen.until.get(&key).is_some_and(|&until| until > now) {
            return Err(ApiError::new(
                Reason::Replayed,
                format!("party {party} has already sent a record with this `jti`"),
            ));
        }
        if seen.until.len() >= seen.prune_at.max(1024).min(self.capacity) {
            seen.until.retain(|_, until| *until > now);
            seen.prune_at = seen.until.len() * 2;
            if seen.until.len() >= self.capacity {
                return Err(ApiError::new(
                    Reason::Overloaded,
                    "too many records with a `jti` in the last minutes; try again shortly",
                ));
            }
        }
        seen.until.insert(key, exp + CLOCK_SKEW_SECONDS);
        Ok(())
    }

    /// Forgets a reservation whose record was not stored, so the party may send it again.
    pub fn release(&self, party: &str, jti: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.until.remove(&(party.to_owned(), jti.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_claims_hold_within_the_window() {
        let ok = object(json!({ "exp": NOW + 200, "iat": NOW, "nbf": NOW - 5 }));
        assert_eq!(check_times(&ok, NOW), Ok(Some(NOW + 200)));
        assert_eq!(check_times(&Map::new(), NOW), Ok(None));
        for (claims, error) in [
            (json!({ "exp": NOW - 31 }), TimeError::Expired),
            (json!({ "exp": NOW + 331 }), TimeError::TooFarAhead),
            (json!({ "exp": "soon" }), TimeError::NotNumber("exp")),
            (json!({ "nbf": NOW + 60 }), TimeError::NotYetValid("nbf")),
            (json!({ "iat": NOW + 60 }), TimeError::NotYetValid("iat")),
        ] {
            assert_eq!(check_times(&object(claims), NOW), Err(error));
        }
    }

    #[test]
    fn registered_claims_are_taken_out_of_the_record_and_checked() {
        let mut record = object(json!({
            "email": "a@example.com", "jti": "r-1", "exp": NOW + 60, "iat": NOW, "iss": "p", "sub": "p"
        }));
        let claims = take(&mut record, ("p", true), NOW).unwrap();
        assert_eq!(
            claims,
            Claims {
                jti: Some("r-1".into()),
                exp: Some(NOW + 60)
            }
        );
        assert_eq!(Value::Object(record), json!({ "email": "a@example.com" }));
        // No claims at all: fine unless the party must send them.
        let mut plain = object(json!({ "email": "a@example.com" }));
        assert_eq!(
            take(&mut plain.clone(), ("p", false), NOW).unwrap().jti,
            None
        );
        let must = take(&mut plain, ("p", true), NOW).unwrap_err();
        assert!(
            must.message.contains("party p must send `jti` and `exp`"),
            "{}",
            must.message
        );
        for (claims, message) in [
            (json!({ "jti": "x" }), "needs an `exp`"),
            (
                json!({ "jti": 7, "exp": NOW + 10 }),
                "`jti` must be a string",
            ),
            (
                json!({ "jti": "", "exp": NOW + 10 }),
                "`jti` must be a string",
            ),
            (json!({ "iss": "q" }), "`iss` must be the party id"),
            (json!({ "sub": "q" }), "`sub` must be the party id"),
            (json!({ "aud": "pgcloak" }), "`aud` is not accepted"),
            (json!({ "exp": NOW - 100 }), "the record has expired"),
            (json!({ "exp": NOW + 3600 }), "more than 300 s ahead"),
        ] {
            let error = take(&mut object(claims), ("p", false), NOW).unwrap_err();
            assert_eq!(error.reason, Reason::BadClaims);
            assert!(error.message.contains(message), "{}", error.message);
        }
    }

    #[test]
    fn a_jti_is_held_until_exp_and_released_on_failure() {
        let guard = ReplayGuard::with_capacity(4);
        guard.reserve("a", "1", NOW + 100, NOW).unwrap();
        let again = guard.reserve("a", "1", NOW + 100, NOW + 50).unwrap_err();
        assert_eq!(again.reason, Reason::Replayed);
        // Another party's jti is its own.
        guard.reserve("b", "1", NOW + 100, NOW).unwrap();
        // After exp (and the clock skew) the pair is forgotten.
        guard.reserve("a", "1", NOW + 300, NOW + 131).unwrap();
        guard.release("b", "1");
        guard.reserve("b", "1", NOW + 100, NOW).unwrap();
        // Full of unexpired pairs: refused, not forgotten early.
        guard.reserve("a", "2", NOW + 100, NOW).unwrap();
        guard.reserve("a", "3", NOW + 100, NOW).unwrap();
        let full = guard.reserve("a", "4", NOW + 100, NOW).unwrap_err();
        assert_eq!(full.reason, Reason::Overloaded);
        // Once they expire there is room again.
        guard.reserve("a", "4", NOW + 500, NOW + 400).unwrap();
    }
}
