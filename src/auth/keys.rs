//! The SCRAM-SHA-256 key schedule of RFC 5802 section 3, and the ClientKey that pgcloak
//! recovers from a client's proof and reuses upstream.
//!
//! SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
//! ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = SHA-256(ClientKey)
//! ServerKey = HMAC(SaltedPassword, "Server Key")

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of a SHA-256 output, and so of every SCRAM-SHA-256 key, proof and signature.
pub const KEY_LEN: usize = 32;

/// A user's ClientKey: whoever holds it can log in as that user (it is what a password is
/// turned into), so it is wiped on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClientKey([u8; KEY_LEN]);

impl ClientKey {
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> ClientKey {
        ClientKey(bytes)
    }

    /// The ClientKey of `password` (see [`salted_password`] for SASLprep).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ClientKey {
        let salted = salted_password(password, salt, iterations);
        ClientKey(hmac(&salted[..], b"Client Key"))
    }

    /// SHA-256 of the key, as a verifier stores it.
    pub fn stored_key(&self) -> [u8; KEY_LEN] {
        sha256(&self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// In constant time, like every comparison of secrets here.
impl PartialEq for ClientKey {
    fn eq(&self, other: &ClientKey) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for ClientKey {}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

/// PBKDF2-HMAC-SHA-256 of the password, for verifiers and keys made from a known password
/// (tests, tools). SASLprep (RFC 4013) is not applied here: pass a normalised password.
/// Logins through pgcloak never come here: they carry proofs, never the password, so
/// SASLprep stays between the client and the verifier Postgres made (tests/deployment.rs).
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Zeroizing<[u8; KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out[..]);
    out
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

pub fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Equality in time independent of where the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_whole_slices() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn client_key_debug_hides_the_key() {
        let key = ClientKey::from_bytes([7; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "ClientKey(..)");
    }
}
