//! The wrapped-key file: a master key encrypted on the HSM with AES-256-GCM, as two text
//! lines (documented in docs/FORMAT.md, "Wrapped master keys"):
//!
//! ```text
//! pgcloak-wrapped-key v1 pkcs11 aes-gcm
//! <standard base64 of iv (12 bytes) || ciphertext (32 bytes) || tag (16 bytes)>
//! ```
//!
//! Pure parsing and printing, no HSM: the first line makes a file of another kind (a plain
//! base64 key, a PEM file) a clear error before the HSM is opened.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The first line of every wrapped-key file of this version.
pub const HEADER: &str = "pgcloak-wrapped-key v1 pkcs11 aes-gcm";

/// The GCM associated data: binds the ciphertext to its purpose, so the HSM key's other
/// ciphertexts cannot be passed off as a pgcloak master key.
pub const AAD: &[u8] = b"pgcloak master key v1";

pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Ciphertext of the 32-byte master key plus the tag (GCM adds no padding).
pub const SEALED_LEN: usize = 32 + TAG_LEN;

/// The contents of a wrapped-key file. Nothing in it is secret without the HSM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedFile {
    pub iv: [u8; IV_LEN],
    /// GCM ciphertext followed by the 16-byte tag, as PKCS#11's CKM_AES_GCM returns it.
    pub sealed: Vec<u8>,
}

impl WrappedFile {
    /// The file's text (ends with a newline).
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(IV_LEN + self.sealed.len());
        bytes.extend_from_slice(&self.iv);
        bytes.extend_from_slice(&self.sealed);
        format!("{HEADER}\n{}\n", STANDARD.encode(bytes))
    }

    /// Parses a file's text; the error says what is wrong, never quoting the content.
    pub fn parse(text: &str) -> Result<WrappedFile, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let header = lines.next().unwrap_or("");
        if header != HEADER {
            return Err(match header.strip_prefix("pgcloak-wrapped-key ") {
                Some(_) => format!(
                    "is a wrapped key of another version or mechanism (this pgcloak reads `{HEADER}`)"
                ),
                None => format!(
                    "is not a pgcloak wrapped key (its first line must be `{HEADER}`; make one with `pgcloak keygen --wrap-pkcs11`)"
                ),
            });
        }
        let (Some(body), None) = (lines.next(), lines.next()) else {
            return Err("must hold exactly one base64 line after its first line".into());
        };
        let bytes = STANDARD
            .decode(body)
            .map_err(|_| "its second line is not valid standard base64".to_owned())?;
        if bytes.len() != IV_LEN + SEALED_LEN {
            return Err(format!(
                "decodes to {} bytes, expected {} (IV, wrapped key, tag)",
                bytes.len(),
                IV_LEN + SEALED_LEN
            ));
        }
        let (iv, sealed) = bytes.split_at(IV_LEN);
        let mut file = WrappedFile {
            iv: [0; IV_LEN],
            sealed: sealed.to_vec(),
        };
        file.iv.copy_from_slice(iv);
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_each_mistake() {
        let file = WrappedFile {
            iv: [7; IV_LEN],
            sealed: vec![9; SEALED_LEN],
        };
        let text = file.to_text();
        assert!(text.starts_with("pgcloak-wrapped-key v1 pkcs11 aes-gcm\n"));
        assert_eq!(WrappedFile::parse(&text).unwrap(), file);
        assert_eq!(
            WrappedFile::parse(&text.replace('\n', "\r\n")).unwrap(),
            file
        );
        let body = text.lines().nth(1).unwrap();
        let cases = [
            ("", "is not a pgcloak wrapped key"),
            (
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
                "is not a pgcloak wrapped key",
            ),
            (
                &format!("pgcloak-wrapped-key v2 pkcs11 aes-gcm\n{body}\n"),
                "another version",
            ),
            (&format!("{HEADER}\n"), "exactly one base64 line"),
            (&format!("{HEADER}\n{body}\n{body}\n"), "exactly one"),
            (&format!("{HEADER}\n*{body}\n"), "not valid standard base64"),
            (
                &format!("{HEADER}\n{}\n", STANDARD.encode([1; 59])),
                "59 bytes",
            ),
        ];
        for (text, expected) in cases {
            let err = WrappedFile::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(
                !err.contains("AAECAwQF") && !err.contains(&body[..12]),
                "{err}"
            );
        }
    }
}
