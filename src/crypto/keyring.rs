//! The keyring: every configured column's derived keys and ready-to-use cipher, and the
//! encrypt / decrypt operations on envelopes.
//!
//! Built once at startup from the master key and the column list, then shared read-only
//! (`Send + Sync`, no locks). The ciphers are ready per column: AES-256-GCM with its key
//! schedule and GHASH key, AES-256-SIV ([`super::siv`]) with both key schedules and the
//! column's associated data already folded into S2V.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::derive::{self, Deriver, GCM_KEY_LEN, SIV_KEY_LEN};
use super::envelope::{self, HEADER_LEN, KID_LEN, NONCE_LEN, TAG_LEN};
use super::siv::ColumnSiv;
use super::{nonce, CryptoError, MasterKey, Mode};

/// Keys and ciphers of every configured column, under every configured master key and in
/// both modes (a column whose mode changed still reads its old envelopes). Cheap to share in
/// an `Arc`.
pub struct Keyring {
    entries: Vec<Entry>,
    by_column: HashMap<String, ColumnKeys, foldhash::fast::RandomState>,
    by_kid: HashMap<[u8; KID_LEN], usize, foldhash::fast::RandomState>,
    /// Master key names, the current one first (`Entry::key` indexes this).
    key_names: Vec<String>,
}

/// The entries of one column (or of the column whose keys it shares).
#[derive(Clone)]
struct ColumnKeys {
    /// Where new values are written: the current master key, the configured mode.
    write: usize,
    /// The configured mode under every master key, the current one first.
    every_key: Vec<usize>,
}

/// One (master key, column, mode).
struct Entry {
    /// The column identity the keys were derived for.
    column: String,
    mode: Mode,
    /// Index into `Keyring::key_names`.
    key: usize,
    /// `pgc1$<m>$<kid>$`, the first 16 bytes of every envelope of this column.
    header: [u8; HEADER_LEN],
    /// Header followed by the column identity: authenticated with every value.
    ad: Vec<u8>,
    cipher: Cipher,
}

impl Entry {
    /// The 8-character key id inside the header.
    fn kid(&self) -> &[u8] {
        &self.header[7..7 + KID_LEN]
    }
}

enum Cipher {
    Gcm(Box<Aes256Gcm>),
    /// AES-SIV under the column's 512-bit key, with its associated data; wiped on drop.
    Siv(Box<ColumnSiv>),
}

impl Keyring {
    /// Derives keys for every configured column under one master key. `columns`: (identity
    /// `schema.table.column`, mode). The identity is used exactly as given (the caller
    /// normalises its case); if a column is listed twice, the first listing wins.
    pub fn new(master: &MasterKey, columns: &[(String, Mode)]) -> Keyring {
        let (keyring, _) = Keyring::build(&[("default", master)], columns);
        keyring
    }

    /// Derives keys for every column under every master key of `keys` (the first is the
    /// current one, which new values are written under). Two keys giving the same key id
    /// for a column are an error naming both (their envelopes could not be told apart).
    pub fn with_keys(
        keys: &[(&str, &MasterKey)],
        columns: &[(String, Mode)],
    ) -> Result<Keyring, String> {
        match Keyring::build(keys, columns) {
            (keyring, None) => Ok(keyring),
            (_, Some(collision)) => Err(collision),
        }
    }

    fn build(keys: &[(&str, &MasterKey)], columns: &[(String, Mode)]) -> (Keyring, Option<String>) {
        let mut keyring = Keyring {
            entries: Vec::with_capacity(columns.len() * keys.len() * 2),
            by_column: HashMap::with_capacity_and_hasher(columns.len(), Default::default()),
            by_kid: HashMap::with_capacity_and_hasher(
                columns.len() * keys.len() * 2,
                Default::default(),
            ),
            key_names: keys.iter().map(|(name, _)| (*name).to_owned()).collect(),
        };
        let mut collision = None;
        let derivers: Vec<Deriver> = keys
            .iter()
            .map(|(_, master)| Deriver::new(master))
            .collect();
        for (column, mode) in columns {
            if keyring.by_column.contains_key(column) {
                continue;
            }
            let mut every_key = Vec::with_capacity(keys.len());
            for (key, deriver) in derivers.iter().enumerate() {
                for entry_mode in [*mode, mode.other()] {
                    let index = keyring.entries.len();
                    let entry = Entry::derive(deriver, column, entry_mode, key);
                    let mut kid = [0; KID_LEN];
                    kid.copy_from_slice(entry.kid());
                    if let Some(&other) = keyring.by_kid.get(&kid) {
                        let other = &keyring.entries[other];
                        collision.get_or_insert(format!(
                            "master keys {} and {} give the same key id for {} and {}: give each name its own key (`pgcloak keygen`)",
                            keyring.key_names[other.key], keyring.key_names[key], other.column, column
                        ));
                    } else {
                        keyring.by_kid.insert(kid, index);
                    }
                    keyring.entries.push(entry);
                    if entry_mode == *mode {
                        every_key.push(index);
                    }
                }
            }
            let Some(&write) = every_key.first() else {
                continue;
            };
            keyring
                .by_column
                .insert(column.clone(), ColumnKeys { write, every_key });
        }
        (keyring, collision)
    }

    /// Makes `column` use the keys of `same_key_as` (already in the keyring): values of
    /// either column decrypt in the other, and deterministic ciphertexts of equal values are
    /// equal across both. Does nothing if `same_key_as` is unknown or `column` has keys.
    pub fn share(&mut self, column: &str, same_key_as: &str) {
        if let Some(keys) = self.by_column.get(same_key_as).cloned() {
            self.by_column.entry(column.to_owned()).or_insert(keys);
        }
    }

    /// The mode a column is configured with, if it is configured.
    pub fn mode(&self, column: &str) -> Option<Mode> {
        self.entry(column).ok().map(|entry| entry.mode)
    }

    /// The key id (8 characters) of a configured column, as printed in its envelopes.
    pub fn key_id(&self, column: &str) -> Option<&str> {
        std::str::from_utf8(self.entry(column).ok()?.kid()).ok()
    }

    /// Encrypts a value of `column` into envelope text. Fails if the column is not in the
    /// keyring. NULL is not a value: the caller never passes it here.
    pub fn encrypt(&self, column: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut text = Vec::new();
        self.encrypt_into(column, plaintext, &mut text)?;
        // ASCII by construction: the header, then base64url.
        String::from_utf8(text).map_err(|_| CryptoError::Encrypt)
    }

    /// [`Keyring::encrypt`], appending the envelope text to `out` (bulk paths: no string
    /// per value).
    pub fn encrypt_into(
        &self,
        column: &str,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let entry = self.entry(column)?;
        let nonce = match entry.mode {
            Mode::Randomized => nonce::random_nonce()?,
            Mode::Deterministic => [0; NONCE_LEN], // unused: AES-SIV takes no nonce
        };
        out.reserve(envelope::envelope_len(plaintext.len(), entry.mode));
        entry.seal_into(&nonce, plaintext, out)
    }

    /// The ciphertexts an equality search for `plaintext` in a deterministic `column` must
    /// match: one under each master key (the current one first), since a value may still
    /// be stored under any of them until `pgcloak rotate` is done.
    pub fn search_ciphertexts(
        &self,
        column: &str,
        plaintext: &[u8],
    ) -> Result<Vec<String>, CryptoError> {
        let keys = self.keys(column)?;
        keys.every_key
            .iter()
            .map(|&index| self.entries[index].seal(&[0; NONCE_LEN], plaintext))
            .collect()
    }

    /// Randomized encryption with a caller-chosen nonce, for the test vectors only: reusing a
    /// GCM nonce under one key is catastrophic.
    #[cfg(test)]
    pub(crate) fn encrypt_with_nonce(
        &self,
        column: &str,
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<String, CryptoError> {
        self.entry(column)?.seal(nonce, plaintext)
    }

    /// The name of the master key an envelope was written under, if it is one of this
    /// keyring's (whatever column it belongs to).
    pub fn key_name(&self, envelope: &[u8]) -> Option<&str> {
        let parsed = envelope::parse(envelope).ok()?;
        let entry = &self.entries[*self.by_kid.get(&parsed.kid)?];
        Some(&self.key_names[entry.key])
    }

    /// The column whose key an envelope names (the owner of a shared key), if it is one of
    /// this keyring's: says which column's type a value of unknown source has.
    pub fn column_of(&self, envelope: &[u8]) -> Option<&str> {
        let parsed = envelope::parse(envelope).ok()?;
        Some(&self.entries[*self.by_kid.get(&parsed.kid)?].column)
    }

    /// Whether an envelope of `column` is written as a new one would be: under the current
    /// master key and in the column's configured mode. False for anything else, plaintext
    /// included.
    pub fn is_current(&self, envelope: &[u8], column: &str) -> bool {
        let (Ok(parsed), Ok(keys)) = (envelope::parse(envelope), self.keys(column)) else {
            return false;
        };
        self.entries[keys.write].kid() == parsed.kid
    }

    /// `pgc1$<m>$<kid>$`: how every envelope written for `column` now begins (current key,
    /// configured mode), for finding the values a rotation must rewrite.
    pub fn current_header(&self, column: &str) -> Option<String> {
        let entry = self.entry(column).ok()?;
        Some(String::from_utf8_lossy(&entry.header).into_owned())
    }

    /// The names of the master keys, the current one first.
    pub fn key_names(&self) -> &[String] {
        &self.key_names
    }

    /// Decrypts an envelope. `expected_column`: `Some` when the caller knows the source column;
    /// then an envelope whose key id names another column is [`CryptoError::WrongColumn`].
    /// `None`: decrypt with whichever configured column the key id names (views, UNION, ...).
    pub fn decrypt(
        &self,
        envelope: &[u8],
        expected_column: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut buffer = Zeroizing::new(Vec::with_capacity(envelope.len() / 4 * 3 + 3));
        self.decrypt_into(envelope, expected_column, &mut buffer)?;
        Ok(buffer)
    }

    /// [`Keyring::decrypt`], appending the plaintext to `out` (bulk paths: no buffer per
    /// value). On error `out` is left as it was.
    pub fn decrypt_into(
        &self,
        envelope: &[u8],
        expected_column: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let start = out.len();
        let result = self.open_into(envelope, expected_column, out);
        if result.is_err() {
            out[start..].fill(0);
            out.truncate(start);
        }
        result
    }

    fn open_into(
        &self,
        envelope: &[u8],
        expected_column: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let parsed = envelope::parse(envelope)?;
        // Structure first: a malformed value is reported as such whichever column it names.
        let start = out.len();
        envelope::decode_payload(parsed.payload, out)?;
        let found = self
            .by_kid
            .get(&parsed.kid)
            .map(|&index| &self.entries[index]);
        let entry = match (expected_column, found) {
            (Some(expected), found) => {
                let owner = &self.entries[self.keys(expected)?.write].column;
                match found {
                    Some(entry) if entry.column == *owner => entry,
                    Some(entry) => {
                        return Err(CryptoError::WrongColumn {
                            expected: expected.to_owned(),
                            found: entry.column.clone(),
                        })
                    }
                    None => return Err(CryptoError::UnknownKey),
                }
            }
            (None, Some(entry)) => entry,
            (None, None) => return Err(CryptoError::UnknownKey),
        };
        if parsed.mode != entry.mode {
            // The key id was derived with the mode: this header was altered.
            return Err(CryptoError::Decrypt);
        }
        entry.open(out, start)
    }

    /// The entry new values of `column` are written with.
    fn entry(&self, column: &str) -> Result<&Entry, CryptoError> {
        Ok(&self.entries[self.keys(column)?.write])
    }

    fn keys(&self, column: &str) -> Result<&ColumnKeys, CryptoError> {
        self.by_column
            .get(column)
            .ok_or_else(|| CryptoError::UnknownColumn(column.to_owned()))
    }
}

impl Entry {
    fn derive(deriver: &Deriver, column: &str, mode: Mode, key: usize) -> Entry {
        let kid = deriver.kid(mode, column);
        let header = derive::header(mode, &kid);
        let ad = derive::associated_data(&header, column);
        let cipher = match mode {
            Mode::Randomized => {
                let key = deriver.column_key::<GCM_KEY_LEN>(mode, column);
                Cipher::Gcm(Box::new(Aes256Gcm::new(Array::cast_from_core(&key))))
            }
            Mode::Deterministic => {
                let key = deriver.column_key::<SIV_KEY_LEN>(mode, column);
                Cipher::Siv(Box::new(ColumnSiv::new(&key, &ad)))
            }
        };
        Entry {
            column: column.to_owned(),
            mode,
            key,
            header,
            ad,
            cipher,
        }
    }

    /// Encrypts into envelope text. `nonce` is used by randomized columns only.
    fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut text = Vec::with_capacity(envelope::envelope_len(plaintext.len(), self.mode));
        self.seal_into(nonce, plaintext, &mut text)?;
        // The header is ASCII by construction (prefix, mode letter, base64url key id), the
        // rest is base64url.
        String::from_utf8(text).map_err(|_| CryptoError::Encrypt)
    }

    /// [`Entry::seal`], appending the envelope text to `out`.
    fn seal_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let mut raw = Vec::with_capacity(envelope::raw_len(plaintext.len(), self.mode));
        match &self.cipher {
            Cipher::Gcm(cipher) => {
                raw.extend_from_slice(nonce);
                raw.extend_from_slice(plaintext);
                let tag = cipher
                    .encrypt_inout_detached(
                        Array::cast_from_core(nonce),
                        &self.ad,
                        raw[NONCE_LEN..].as_mut().into(),
                    )
                    .map_err(|_| CryptoError::Encrypt)?;
                raw.extend_from_slice(&tag);
            }
            Cipher::Siv(siv) => {
                raw.extend_from_slice(&[0; TAG_LEN]);
                raw.extend_from_slice(plaintext);
                let tag = siv.encrypt(&mut raw[TAG_LEN..]);
                raw[..TAG_LEN].copy_from_slice(&tag);
            }
        }
        // `raw` now holds only ciphertext (encrypted in place, never reallocated).
        out.extend_from_slice(&self.header);
        let start = out.len();
        out.resize(
            start + base64::encoded_len(raw.len(), false).unwrap_or(0),
            0,
        );
        URL_SAFE_NO_PAD
            .encode_slice(&raw, &mut out[start..])
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(())
    }

    /// Decrypts the decoded payload in `out[from..]` in place, leaving exactly the
    /// plaintext there.
    fn open(&self, out: &mut Vec<u8>, from: usize) -> Result<(), CryptoError> {
        let too_short = CryptoError::Malformed("payload too short");
        let buffer = &mut out[from..];
        let len = buffer.len();
        let (start, end) = match &self.cipher {
            Cipher::Gcm(cipher) => {
                let (nonce, rest) = buffer
                    .split_first_chunk_mut::<NONCE_LEN>()
                    .ok_or(too_short.clone())?;
                let (message, tag) = rest.split_last_chunk_mut::<TAG_LEN>().ok_or(too_short)?;
                cipher
                    .decrypt_inout_detached(
                        Array::cast_from_core(nonce),
                        &self.ad,
                        message.into(),
                        Array::cast_from_core(tag),
                    )
                    .map_err(|_| CryptoError::Decrypt)?;
                (NONCE_LEN, len - TAG_LEN)
            }
            Cipher::Siv(siv) => {
                let (tag, message) = buffer.split_first_chunk_mut::<TAG_LEN>().ok_or(too_short)?;
                siv.decrypt(tag, message)
                    .map_err(|_| CryptoError::Decrypt)?;
                (TAG_LEN, len)
            }
        };
        buffer.copy_within(start..end, 0);
        out.truncate(from + end - start);
        Ok(())
    }
}

impl fmt::Debug for Keyring {
    /// Column identities, modes and key ids (all public); never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<String> = self
            .entries
            .iter()
            .map(|entry| {
                let kid = String::from_utf8_lossy(entry.kid());
                let key = &self.key_names[entry.key];
                format!("{} ({}, key {key}, kid {kid})", entry.column, entry.mode)
            })
            .collect();
        f.debug_struct("Keyring")
            .field("columns", &columns)
            .finish()
    }
}
