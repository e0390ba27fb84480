//! Parameter numbers outside $1..$65535 are refused before they index anything.

use super::*;

#[test]
fn parameter_zero_and_absurd_numbers_are_refused() {
    let range = "parameters are numbered from $1 to $65535";
    refusals(&[
        (
            "SELECT id FROM users WHERE email = $0",
            "uses $0 as a parameter for public.users.email",
        ),
        ("INSERT INTO users (email) VALUES ($0)", range),
        ("UPDATE users SET first_name = $0 WHERE id = 1", range),
        ("SELECT id FROM users WHERE email = ANY($0)", range),
        (
            "INSERT INTO users (email) SELECT * FROM UNNEST($0::text[])",
            range,
        ),
        ("SELECT id FROM users WHERE email = $65536", "uses $65536"),
        (
            "SELECT id FROM users WHERE email = $99999999999999999999999",
            "uses a number this large",
        ),
        ("SELECT id FROM users WHERE email IN ($1, $00)", range),
    ]);
    assert_eq!(params("SELECT id FROM users WHERE email = $65535").len(), 1);
    // Not bound for a PII column: Postgres itself reports it.
    plan("SELECT email FROM users WHERE id = $0");
}
