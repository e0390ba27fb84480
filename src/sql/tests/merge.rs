//! MERGE: values encrypted like INSERT and UPDATE, conditions checked like WHERE.

use super::*;

#[test]
fn merge_values_are_encrypted_like_insert_and_update() {
    assert_eq!(
        literals("MERGE INTO users u USING (SELECT 1 AS k) s ON false WHEN NOT MATCHED THEN INSERT (email, first_name) VALUES ('x@x', 'Ann')"),
        [lit("'x@x'", "x@x", "public.users.email"), lit("'Ann'", "Ann", "public.users.first_name")]
    );
    assert_eq!(
        literals("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN UPDATE SET first_name = 'x', nick = s.nick"),
        [lit("'x'", "x", "public.users.first_name")]
    );
    assert_eq!(
        params("merge into public.users as u using staging s on u.email = $1 when matched and u.email = $2 then delete when not matched then insert (email, last_name) values ($3, $4::text)"),
        [
            (1, "public.users.email".into(), false),
            (2, "public.users.email".into(), false),
            (3, "public.users.email".into(), false),
            (4, "public.users.last_name".into(), false),
        ]
    );
    plans(&[
        "MERGE INTO users u USING users s ON u.id = s.id + 1 WHEN MATCHED THEN UPDATE SET email = s.email, first_name = s.first_name",
        "MERGE INTO users u USING (SELECT id, email FROM users WHERE email = 'a') s ON u.email = s.email WHEN MATCHED THEN DO NOTHING",
        "MERGE INTO users u USING staging s ON u.id = s.id WHEN NOT MATCHED THEN DO NOTHING WHEN MATCHED AND u.email IS NULL THEN DELETE",
        "MERGE INTO users u USING staging s ON u.id = s.id WHEN NOT MATCHED THEN INSERT (id, email, nick) VALUES (s.id, NULL, s.nick)",
        "MERGE INTO staging s USING users u ON s.id = u.id WHEN MATCHED THEN UPDATE SET n = s.n + 1",
        // The source cannot see the target: its bare names are its own.
        "MERGE INTO users u USING (SELECT id FROM people WHERE email LIKE 'a%') s ON u.id = s.id WHEN MATCHED THEN DELETE",
        "PREPARE p AS MERGE INTO users u USING staging s ON false WHEN NOT MATCHED THEN INSERT (email) VALUES ('a')",
    ]);
}

#[test]
fn merge_uses_that_cannot_work_on_ciphertext_are_refused() {
    refusals(&[
        ("MERGE INTO users u USING staging s ON u.first_name = 'Ann' WHEN MATCHED THEN DELETE", "randomized"),
        ("MERGE INTO users u USING staging s ON u.email = s.email WHEN MATCHED THEN DELETE", "public.users.email is encrypted by pgcloak and can only be compared"),
        ("MERGE INTO users u USING (SELECT $1 AS e) s ON u.email = s.e WHEN MATCHED THEN DELETE", "can only be compared"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED AND u.email LIKE 'a%' THEN DELETE", "public.users.email is encrypted"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN UPDATE SET email = lower('X')", "cannot encrypt the value for public.users.email"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN UPDATE SET email = s.first_name", "public.users.email"),
        ("MERGE INTO users u USING users s ON u.id = s.id WHEN MATCHED THEN UPDATE SET email = s.first_name", "public.users.email"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN NOT MATCHED THEN INSERT (email) VALUES (s.email)", "cannot encrypt the value for public.users.email"),
        ("MERGE INTO users u USING staging s ON true WHEN NOT MATCHED THEN INSERT VALUES ('a@x')", "must name its columns"),
        ("MERGE INTO users u USING staging s ON true WHEN NOT MATCHED THEN INSERT (email, nick) VALUES ($1, $1)", "parameter $1 is used for public.users.email and elsewhere"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN UPDATE SET nick = u.email", "public.users.email is encrypted"),
        ("MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN UPDATE SET (email, nick) = ('a', 'b')", "SET (...) = (...) including public.users.email"),
        // Copies out of the policy.
        ("MERGE INTO archive a USING users u ON a.id = u.id WHEN NOT MATCHED THEN INSERT (id, mail) VALUES (u.id, u.email)", "public.users.email is encrypted"),
        ("MERGE INTO archive a USING users u ON a.id = u.id WHEN MATCHED THEN UPDATE SET mail = u.email", "public.users.email is encrypted"),
        ("MERGE INTO archive a USING (SELECT id, email AS e FROM users) u ON a.id = u.id WHEN MATCHED THEN UPDATE SET mail = u.e", "public.users.email is encrypted"),
        // The source is a query like any other.
        ("MERGE INTO users u USING (SELECT * FROM users ORDER BY email) s ON u.id = s.id WHEN MATCHED THEN DELETE", "ORDER BY public.users.email"),
        ("MERGE INTO users u USING (SELECT id FROM people p WHERE p.id IN (SELECT id FROM users WHERE email > 'a')) s ON u.id = s.id WHEN MATCHED THEN DELETE", "public.users.email is encrypted"),
        ("MERGE INTO users u USING people p ON u.id = p.id WHEN MATCHED THEN UPDATE SET nick = (SELECT email FROM users LIMIT 1)", "a subquery selecting public.users.email"),
        ("MERGE INTO users u USING staging s ON u.id = (SELECT id FROM users WHERE lower(email) = 'a') WHEN MATCHED THEN DELETE", "public.users.email is encrypted"),
    ]);
}
