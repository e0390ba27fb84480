//! Fixtures shared by the targets: a fixed keyring and policy, so runs are reproducible.
#![allow(dead_code)]

use pgcloak::crypto::{Keyring, MasterKey, Mode};
use pgcloak::policy::Policy;

pub const EMAIL: &str = "public.users.email";
pub const FIRST_NAME: &str = "public.users.first_name";
pub const HOLDER: &str = "billing.cards.holder";

/// A master key of 32 bytes 0x00..0x1f (test only).
pub fn keyring() -> Keyring {
    let master = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .expect("fixed test key");
    Keyring::new(
        &master,
        &[
            (EMAIL.to_owned(), Mode::Deterministic),
            (FIRST_NAME.to_owned(), Mode::Randomized),
            (HOLDER.to_owned(), Mode::Randomized),
        ],
    )
}

/// The policy of the SQL tests: two PII tables, both modes.
pub fn policy() -> Policy {
    let yaml = "
users:
  email: deterministic
  first_name: randomized
  last_name: randomized
billing.cards:
  holder: randomized
";
    Policy::from_yaml(&serde_yaml::from_str(yaml).expect("fixed yaml")).expect("fixed policy")
}
