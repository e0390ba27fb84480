//! A PgBouncer-style auth file: one `"user" "SCRAM-SHA-256$..."` per line, each field in
//! double quotes (`""` is a quote inside a field); blank lines and lines starting with `;`
//! or `#` are skipped. pgcloak only accepts SCRAM-SHA-256 verifiers here: an md5 hash or a
//! plain-text password is an error naming its line, never a silent downgrade.

use std::collections::HashMap;

use super::verifier::{Verifier, VerifierError};

/// What is wrong with an auth file, and on which line (1-based). Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth file line {line}: {problem}")]
pub struct AuthFileError {
    pub line: usize,
    pub problem: AuthFileProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFileProblem {
    #[error("expected the user name in double quotes")]
    ExpectedUser,
    #[error("expected the verifier in double quotes after the user name")]
    ExpectedVerifier,
    #[error("a quoted field is not closed")]
    Unterminated,
    #[error("the user name is empty")]
    EmptyUser,
    #[error("unexpected text after the verifier")]
    TrailingText,
    #[error("user {0:?} is listed twice")]
    Duplicate(String),
    #[error("the entry for user {user:?} is not usable: {error}")]
    Verifier { user: String, error: VerifierError },
}

/// The verifiers of an auth file's text, by user name.
pub fn parse_auth_file(text: &str) -> Result<HashMap<String, Verifier>, AuthFileError> {
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let fail = |problem| AuthFileError {
            line: index + 1,
            problem,
        };
        let Some((user, verifier)) = parse_line(line).map_err(fail)? else {
            continue;
        };
        let verifier = Verifier::parse(&verifier).map_err(|error| {
            fail(AuthFileProblem::Verifier {
                user: user.clone(),
                error,
            })
        })?;
        if users.contains_key(&user) {
            return Err(fail(AuthFileProblem::Duplicate(user)));
        }
        users.insert(user, verifier);
    }
    Ok(users)
}

/// One line: `None` for a blank or comment line, else the user and the verifier text.
fn parse_line(line: &str) -> Result<Option<(String, String)>, AuthFileProblem> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with(';') || rest.starts_with('#') {
        return Ok(None);
    }
    let (user, rest) = quoted(rest).ok_or(AuthFileProblem::ExpectedUser)??;
    if user.is_empty() {
        return Err(AuthFileProblem::EmptyUser);
    }
    let (verifier, rest) = quoted(rest.trim_start()).ok_or(AuthFileProblem::ExpectedVerifier)??;
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with(';') || rest.starts_with('#')) {
        return Err(AuthFileProblem::TrailingText);
    }
    Ok(Some((user, verifier)))
}

/// A `"..."` field at the start of `text` and what follows it; `None` if `text` does not
/// start with a quote.
fn quoted(text: &str) -> Option<Result<(String, &str), AuthFileProblem>> {
    let mut chars = text.strip_prefix('"')?.char_indices().peekable();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
        } else if chars.peek().map(|&(_, c)| c) == Some('"') {
            chars.next();
            value.push('"');
        } else {
            // `i` is an offset into the text after the opening quote.
            return Some(Ok((value, &text[1 + i + 1..])));
        }
    }
    Some(Err(AuthFileProblem::Unterminated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(pw: &str) -> Verifier {
        Verifier::from_password(pw, b"salt-of-16-bytes", 4)
    }

    #[test]
    fn reads_users_quotes_comments_and_blank_lines() {
        let text = format!(
            "; pgcloak users\n\n# another comment\n\"alice\" \"{}\"\n  \"bob \"\"the\"\" builder\"\t\"{}\" ; trailing comment\n",
            verifier("a").encode(),
            verifier("b").encode()
        );
        let users = parse_auth_file(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], verifier("a"));
        assert_eq!(users["bob \"the\" builder"], verifier("b"));
    }

    #[test]
    fn md5_and_plain_passwords_are_errors_naming_the_line() {
        let good = format!("\"alice\" \"{}\"\n", verifier("a").encode());
        let md5 = format!("{good}\"bob\" \"md5{}\"\n", "0".repeat(32));
        let err = parse_auth_file(&md5).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(
            err.problem,
            AuthFileProblem::Verifier {
                error: VerifierError::Md5,
                ..
            }
        ));
        let plain = format!("{good}\n\"carol\" \"hunter2\"\n");
        let err = parse_auth_file(&plain).unwrap_err();
        assert_eq!(err.line, 3);
        let message = err.to_string();
        assert!(message.starts_with("auth file line 3: "), "{message}");
        assert!(
            message.contains("carol") && !message.contains("hunter2"),
            "{message}"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let v = verifier("a").encode();
        let cases = [
            ("alice \"x\"".to_owned(), AuthFileProblem::ExpectedUser),
            ("\"alice\"".to_owned(), AuthFileProblem::ExpectedVerifier),
            ("\"alice\" x".to_owned(), AuthFileProblem::ExpectedVerifier),
            ("\"alice".to_owned(), AuthFileProblem::Unterminated),
            (format!("\"alice\" \"{v}"), AuthFileProblem::Unterminated),
            (format!("\"\" \"{v}\""), AuthFileProblem::EmptyUser),
            (
                format!("\"alice\" \"{v}\" extra"),
                AuthFileProblem::TrailingText,
            ),
            (
                format!("\"alice\" \"{v}\"\n\"alice\" \"{v}\""),
                AuthFileProblem::Duplicate("alice".to_owned()),
            ),
        ];
        for (text, problem) in cases {
            let err = parse_auth_file(&text).unwrap_err();
            assert_eq!(err.problem, problem, "{text}");
        }
    }
}
