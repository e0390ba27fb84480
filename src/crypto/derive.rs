//! Key derivation: the exact HKDF-SHA256 salt and info strings that turn the master key into
//! per-column, per-mode encryption keys and key ids, and the associated data each value is
//! bound to. Changing any string here changes every key: they are part of the stored format
//! (see docs/FORMAT.md, which has test vectors that pin them).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::envelope::{ENVELOPE_PREFIX, HEADER_LEN, KID_LEN};
use super::master::MasterKey;
use super::Mode;

/// HKDF-Extract salt (fixed, public: domain separation from other uses of the master key).
pub(crate) const HKDF_SALT: &[u8] = b"pgcloak/v1 hkdf salt";

/// The key version every key is derived with today. Rotation will add versions (FORMAT.md).
pub(crate) const KEY_VERSION: u32 = 1;

/// Key id: this many HKDF output bytes, printed as 8 base64url characters.
const KID_BYTES: usize = 6;

/// AES-256-GCM key length.
pub(crate) const GCM_KEY_LEN: usize = 32;
/// AES-SIV (CMAC-AES-256 + CTR-AES-256) key length: 512 bits.
pub(crate) const SIV_KEY_LEN: usize = 64;

/// The HKDF info string: `pgcloak/v1 <purpose> mode=<mode> version=<n> column=<identity>`.
///
/// The column identity is the only free-form field and comes last, and no other field can
/// contain a space, so distinct (purpose, mode, version, column) give distinct strings.
pub(crate) fn info(purpose: &str, mode: Mode, version: u32, column: &str) -> String {
    format!("pgcloak/v1 {purpose} mode={mode} version={version} column={column}")
}

/// HKDF-Extract of the master key; expand it once per column key and key id.
pub(crate) struct Deriver(Hkdf<Sha256>);

impl Deriver {
    pub(crate) fn new(master: &MasterKey) -> Deriver {
        Deriver(Hkdf::<Sha256>::new(Some(HKDF_SALT), master.bytes()))
    }

    /// `N` key bytes for the column and mode (32 for randomized, 64 for deterministic).
    pub(crate) fn column_key<const N: usize>(
        &self,
        mode: Mode,
        column: &str,
    ) -> Zeroizing<[u8; N]> {
        let mut key = Zeroizing::new([0u8; N]);
        self.expand(&info("key", mode, KEY_VERSION, column), key.as_mut_slice());
        key
    }

    /// The 8-character key id of the column and mode: base64url of 6 HKDF output bytes.
    pub(crate) fn kid(&self, mode: Mode, column: &str) -> [u8; KID_LEN] {
        let mut raw = [0u8; KID_BYTES];
        self.expand(&info("kid", mode, KEY_VERSION, column), &mut raw);
        let mut kid = [0u8; KID_LEN];
        // 6 bytes are exactly 8 base64 characters, without padding.
        let written = URL_SAFE_NO_PAD.encode_slice(raw, &mut kid);
        debug_assert_eq!(written, Ok(KID_LEN));
        kid
    }

    fn expand(&self, info: &str, out: &mut [u8]) {
        // HKDF-SHA256 can produce up to 255 * 32 bytes; we ask for at most 64.
        let result = self.0.expand(info.as_bytes(), out);
        debug_assert!(result.is_ok());
    }
}

/// The envelope header `pgc1$<m>$<kid>$` (16 ASCII bytes).
pub(crate) fn header(mode: Mode, kid: &[u8; KID_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [b'$'; HEADER_LEN];
    header[..ENVELOPE_PREFIX.len()].copy_from_slice(ENVELOPE_PREFIX.as_bytes());
    header[5] = mode.tag();
    header[7..7 + KID_LEN].copy_from_slice(kid);
    header
}

/// Associated data authenticated with every value: the 16-byte header followed by the column
/// identity. It binds format version, mode, key id and column; the header has a fixed length,
/// so the concatenation is unambiguous.
pub(crate) fn associated_data(header: &[u8; HEADER_LEN], column: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(HEADER_LEN + column.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(column.as_bytes());
    ad
}
