//! The keyring: every configured column's derived keys and ready-to-use cipher, and the
//! encrypt / decrypt operations on envelopes.
//!
//! Built once at startup from the master key and the column list, then shared read-only
//! (`Send + Sync`, no locks). AES-256-GCM instances (expanded key schedule and GHASH key) are
//! precomputed per column. `aes_siv::siv::Siv` (RFC 5297 without a nonce, as Tink uses it)
//! needs `&mut self` and is not `Clone`, so for deterministic columns the 64-byte key is kept
//! and a `Siv` is built per call (~55 ns: it expands the CMAC key; the CTR key is expanded per
//! call inside `Siv` anyway). `Aes256SivAead` takes `&self` but appends a nonce header to S2V,
//! which is not the deterministic construction.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use aes_siv::siv::Aes256Siv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::derive::{self, Deriver, GCM_KEY_LEN, SIV_KEY_LEN};
use super::envelope::{self, HEADER_LEN, KID_LEN, NONCE_LEN, TAG_LEN};
use super::{nonce, CryptoError, MasterKey, Mode};

/// Keys and ciphers of every configured column. Cheap to share in an `Arc`.
pub struct Keyring {
    entries: Vec<Entry>,
    by_column: HashMap<String, usize>,
    by_kid: HashMap<[u8; KID_LEN], usize>,
}

/// One configured column.
struct Entry {
    column: String,
    mode: Mode,
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
    /// The 512-bit AES-SIV key (MAC half, then CTR half); wiped on drop.
    Siv(Zeroizing<[u8; SIV_KEY_LEN]>),
}

impl Keyring {
    /// Derives keys for every configured column. `columns`: (identity `schema.table.column`,
    /// mode). The identity is used exactly as given (the caller normalises its case); if a
    /// column is listed twice, the first listing wins.
    pub fn new(master: &MasterKey, columns: &[(String, Mode)]) -> Keyring {
        let deriver = Deriver::new(master);
        let mut keyring = Keyring {
            entries: Vec::with_capacity(columns.len()),
            by_column: HashMap::with_capacity(columns.len()),
            by_kid: HashMap::with_capacity(columns.len()),
        };
        for (column, mode) in columns {
            if keyring.by_column.contains_key(column) {
                continue;
            }
            let kid = deriver.kid(*mode, column);
            let header = derive::header(*mode, &kid);
            let cipher = match mode {
                Mode::Randomized => {
                    let key = deriver.column_key::<GCM_KEY_LEN>(*mode, column);
                    Cipher::Gcm(Box::new(Aes256Gcm::new(Array::cast_from_core(&key))))
                }
                Mode::Deterministic => {
                    Cipher::Siv(deriver.column_key::<SIV_KEY_LEN>(*mode, column))
                }
            };
            let index = keyring.entries.len();
            keyring.entries.push(Entry {
                column: column.clone(),
                mode: *mode,
                header,
                ad: derive::associated_data(&header, column),
                cipher,
            });
            keyring.by_column.insert(column.clone(), index);
            // A 48-bit key id collision between two columns (probability ~n²/2^49) would only
            // make the second column's values undecryptable without a known source column.
            keyring.by_kid.entry(kid).or_insert(index);
        }
        keyring
    }

    /// Makes `column` use the keys of `same_key_as` (already in the keyring): values of
    /// either column decrypt in the other, and deterministic ciphertexts of equal values are
    /// equal across both. Does nothing if `same_key_as` is unknown or `column` has keys.
    pub fn share(&mut self, column: &str, same_key_as: &str) {
        if let Some(&index) = self.by_column.get(same_key_as) {
            self.by_column.entry(column.to_owned()).or_insert(index);
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
        let entry = self.entry(column)?;
        let nonce = match entry.mode {
            Mode::Randomized => nonce::random_nonce()?,
            Mode::Deterministic => [0; NONCE_LEN], // unused: AES-SIV takes no nonce
        };
        entry.seal(&nonce, plaintext)
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

    /// Decrypts an envelope. `expected_column`: `Some` when the caller knows the source column;
    /// then an envelope whose key id names another column is [`CryptoError::WrongColumn`].
    /// `None`: decrypt with whichever configured column the key id names (views, UNION, ...).
    pub fn decrypt(
        &self,
        envelope: &[u8],
        expected_column: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let parsed = envelope::parse(envelope)?;
        // Structure first: a malformed value is reported as such whichever column it names.
        let mut buffer = Zeroizing::new(Vec::with_capacity(parsed.payload.len() / 4 * 3 + 3));
        envelope::decode_payload(parsed.payload, &mut buffer)?;
        let entry = match expected_column {
            Some(expected) => {
                let entry = self.entry(expected)?;
                if entry.kid() != parsed.kid {
                    return Err(match self.by_kid.get(&parsed.kid) {
                        Some(&other) => CryptoError::WrongColumn {
                            expected: expected.to_owned(),
                            found: self.entries[other].column.clone(),
                        },
                        None => CryptoError::UnknownKey,
                    });
                }
                entry
            }
            None => match self.by_kid.get(&parsed.kid) {
                Some(&index) => &self.entries[index],
                None => return Err(CryptoError::UnknownKey),
            },
        };
        if parsed.mode != entry.mode {
            // The key id was derived with the mode: this header was altered.
            return Err(CryptoError::Decrypt);
        }
        entry.open(&mut buffer)?;
        Ok(buffer)
    }

    fn entry(&self, column: &str) -> Result<&Entry, CryptoError> {
        match self.by_column.get(column) {
            Some(&index) => Ok(&self.entries[index]),
            None => Err(CryptoError::UnknownColumn(column.to_owned())),
        }
    }
}

impl Entry {
    /// Encrypts into envelope text. `nonce` is used by randomized columns only.
    fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Result<String, CryptoError> {
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
            Cipher::Siv(key) => {
                raw.extend_from_slice(&[0; TAG_LEN]);
                raw.extend_from_slice(plaintext);
                let tag = Aes256Siv::new(Array::cast_from_core(key))
                    .encrypt_inout_detached([&self.ad], raw[TAG_LEN..].as_mut().into())
                    .map_err(|_| CryptoError::Encrypt)?;
                raw[..TAG_LEN].copy_from_slice(&tag);
            }
        }
        // `raw` now holds only ciphertext (encrypted in place, never reallocated).
        let mut text = String::with_capacity(envelope::envelope_len(plaintext.len(), self.mode));
        // The header is ASCII by construction (prefix, mode letter, base64url key id).
        text.extend(self.header.iter().map(|&b| char::from(b)));
        URL_SAFE_NO_PAD.encode_string(&raw, &mut text);
        Ok(text)
    }

    /// Decrypts the decoded payload in place, leaving exactly the plaintext in `buffer`.
    fn open(&self, buffer: &mut Vec<u8>) -> Result<(), CryptoError> {
        let too_short = CryptoError::Malformed("payload too short");
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
            Cipher::Siv(key) => {
                let (tag, message) = buffer.split_first_chunk_mut::<TAG_LEN>().ok_or(too_short)?;
                Aes256Siv::new(Array::cast_from_core(key))
                    .decrypt_inout_detached([&self.ad], message.into(), Array::cast_from_core(tag))
                    .map_err(|_| CryptoError::Decrypt)?;
                (TAG_LEN, len)
            }
        };
        buffer.copy_within(start..end, 0);
        buffer.truncate(end - start);
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
                format!("{} ({}, kid {kid})", entry.column, entry.mode)
            })
            .collect();
        f.debug_struct("Keyring")
            .field("columns", &columns)
            .finish()
    }
}
