//! One logged-in session on one token of a PKCS#11 module, and the few operations pgcloak
//! asks of it: find (or create) the AES wrapping key, encrypt and decrypt with AES-GCM.
//!
//! [`with_session`] loads the module, initializes it, finds the token, logs in, runs the
//! caller's work and then logs out, closes the session and finalizes the module, on
//! success and on every error, so a load at start leaves nothing open.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use zeroize::Zeroizing;

use super::wrapped_file::{WrappedFile, AAD, IV_LEN};
use super::{Pkcs11Config, Pkcs11Error};

/// The GCM tag length in bits (the full 16 bytes, [`super::wrapped_file::TAG_LEN`]).
const TAG_BITS: Ulong = Ulong::new(128);

/// Directories tried, in order, for a module given by bare file name that the dynamic
/// loader does not find itself: Debian installs SoftHSM2 and most PKCS#11 modules outside
/// the loader's path.
pub fn module_dirs() -> Vec<PathBuf> {
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    vec![
        PathBuf::from("/usr/lib/softhsm"),
        PathBuf::from(format!("{multiarch}/softhsm")),
        PathBuf::from(format!("{multiarch}/pkcs11")),
        PathBuf::from(&multiarch),
        PathBuf::from("/usr/local/lib/softhsm"),
        PathBuf::from("/usr/local/lib"),
    ]
}

/// Loads the module: a path with a `/` as given; a bare file name the way the dynamic loader
/// finds it (LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib), then in [`module_dirs`].
fn load_module(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let first = match Pkcs11::new(module) {
        Ok(ctx) => return Ok(ctx),
        Err(e) => e,
    };
    let bare = module.components().count() == 1 && !module.is_absolute();
    if bare {
        for dir in module_dirs() {
            let candidate = dir.join(module);
            if candidate.exists() {
                if let Ok(ctx) = Pkcs11::new(&candidate) {
                    return Ok(ctx);
                }
            }
        }
    }
    let searched = if bare {
        let dirs: Vec<String> = module_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        format!(" (searched the loader's path and {})", dirs.join(", "))
    } else {
        String::new()
    };
    Err(Pkcs11Error::Module {
        module: module.display().to_string(),
        reason: format!("{}{searched}", describe(&first)),
    })
}

/// An error's text without cryptoki's generic prefixes.
fn describe(error: &Error) -> String {
    match error {
        Error::LibraryLoading(e) => e.to_string(),
        Error::Pkcs11(rv, function) => format!("C_{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// Runs `work` in a logged-in session on `config`'s token (read-write when `rw`, to create
/// a key), then cleans up whatever happened.
pub fn with_session<R>(
    config: &Pkcs11Config,
    pin: &AuthPin,
    rw: bool,
    work: impl FnOnce(&Session) -> Result<R, Pkcs11Error>,
) -> Result<R, Pkcs11Error> {
    let ctx = load_module(&config.module)?;
    // Another part of this process may have initialized the module: use it, leave it be.
    let finalize = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => true,
        Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
        Err(e) => {
            return Err(Pkcs11Error::Module {
                module: config.module.display().to_string(),
                reason: format!("C_Initialize failed: {}", describe(&e)),
            })
        }
    };
    let result = in_token(&ctx, config, pin, rw, work);
    if finalize {
        // Nothing to do about a failing C_Finalize at this point: the key is loaded or not.
        let _ = ctx.finalize();
    }
    result
}

fn in_token<R>(
    ctx: &Pkcs11,
    config: &Pkcs11Config,
    pin: &AuthPin,
    rw: bool,
    work: impl FnOnce(&Session) -> Result<R, Pkcs11Error>,
) -> Result<R, Pkcs11Error> {
    let token_label = config.token_label.as_str();
    let hsm = |step: &str, e: Error| Pkcs11Error::Hsm {
        step: step.to_owned(),
        reason: describe(&e),
    };
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| hsm("listing the module's tokens", e))?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.label() == token_label {
            found = Some(slot);
            break;
        }
        labels.push(format!("{:?}", info.label()));
    }
    let Some(slot) = found else {
        return Err(Pkcs11Error::NoToken {
            module: config.module.display().to_string(),
            token_label: token_label.to_owned(),
            others: if labels.is_empty() {
                "it has no initialized token".into()
            } else {
                format!("its tokens: {}", labels.join(", "))
            },
        });
    };
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| hsm("opening a session", e))?;
    // Login state is per application, not per session: another session of this process
    // may already be logged in, and then stays so.
    let logged_in_here = match session.login(UserType::User, Some(pin)) {
        Ok(()) => true,
        Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => false,
        Err(Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            return Err(Pkcs11Error::Login {
                token_label: token_label.to_owned(),
                reason: format!(
                    "wrong PIN (from the environment variable {})",
                    config.pin_env
                ),
            })
        }
        Err(Error::Pkcs11(RvError::PinLocked, _)) => {
            return Err(Pkcs11Error::Login {
                token_label: token_label.to_owned(),
                reason: "the user PIN is locked (too many wrong PINs): the token's SO must reset it".into(),
            })
        }
        Err(Error::Pkcs11(RvError::UserPinNotInitialized, _)) => {
            return Err(Pkcs11Error::Login {
                token_label: token_label.to_owned(),
                reason: "the token has no user PIN yet (initialize it with softhsm2-util --init-token or pkcs11-tool --init-pin)".into(),
            })
        }
        Err(e) => {
            return Err(Pkcs11Error::Login {
                token_label: token_label.to_owned(),
                reason: describe(&e),
            })
        }
    };
    let result = work(&session);
    // Errors here change nothing: finalizing the module ends the login and the session too.
    if logged_in_here {
        let _ = session.logout();
    }
    let _ = session.close();
    result
}

/// The AES key labelled `label` on the session's token; `None` when there is none.
pub fn find_aes_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|e| Pkcs11Error::Hsm {
            step: format!("looking for the AES key {label:?}"),
            reason: describe(&e),
        })?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(Pkcs11Error::Key {
            key_label: label.to_owned(),
            reason: format!(
                "{} AES keys have this label: give the wrapping key a unique label",
                found.len()
            ),
        }),
    }
}

/// Generates an AES-256 key on the token that never leaves it (sensitive, not extractable),
/// usable only to encrypt and decrypt.
pub fn create_aes_key(session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::ValueLen(Ulong::new(32)),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| Pkcs11Error::Hsm {
            step: format!("creating the AES-256 key {label:?}"),
            reason: describe(&e),
        })
}

/// Encrypts `plaintext` (the master key) with `key` under a fresh random IV.
pub fn seal(
    session: &Session,
    key: ObjectHandle,
    plaintext: &[u8],
) -> Result<WrappedFile, Pkcs11Error> {
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv).map_err(|e| Pkcs11Error::Hsm {
        step: "drawing an IV".into(),
        reason: e.to_string(),
    })?;
    let mut iv_param = iv;
    let params = gcm_params(&mut iv_param)?;
    let sealed = session
        .encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(|e| Pkcs11Error::Hsm {
            step: "wrapping the master key (C_Encrypt with CKM_AES_GCM)".into(),
            reason: describe(&e),
        })?;
    Ok(WrappedFile { iv, sealed })
}

/// Decrypts a wrapped file with `key`; the plaintext lives only in a zeroizing buffer.
/// `Err(code)`: the tag did not verify (not this key's file, or a changed file), with the
/// module's return code.
pub fn open(
    session: &Session,
    key: ObjectHandle,
    file: &WrappedFile,
) -> Result<Result<Zeroizing<Vec<u8>>, String>, Pkcs11Error> {
    let mut iv = file.iv;
    let params = gcm_params(&mut iv)?;
    match session.decrypt(&Mechanism::AesGcm(params), key, &file.sealed) {
        Ok(plaintext) => Ok(Ok(Zeroizing::new(plaintext))),
        // SoftHSM2 2.6 reports a GCM tag mismatch as CKR_GENERAL_ERROR, others as
        // CKR_ENCRYPTED_DATA_INVALID.
        Err(
            e @ Error::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
                _,
            ),
        ) => Ok(Err(describe(&e))),
        Err(e) => Err(Pkcs11Error::Hsm {
            step: "unwrapping the master key (C_Decrypt with CKM_AES_GCM)".into(),
            reason: describe(&e),
        }),
    }
}

fn gcm_params(iv: &mut [u8; IV_LEN]) -> Result<GcmParams<'_>, Pkcs11Error> {
    GcmParams::new(iv, AAD, TAG_BITS).map_err(|e| Pkcs11Error::Hsm {
        step: "preparing CKM_AES_GCM".into(),
        reason: describe(&e),
    })
}
