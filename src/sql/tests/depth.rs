//! Deeply nested and long-chained statements: analysed or refused, never a stack overflow.

use super::*;

/// A thread with a session thread's stack (2 MiB).
fn on_small_stack(sql: String) -> Analysis {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || analyze(&sql, &policy()))
        .unwrap()
        .join()
        .unwrap()
}

fn or_chain(n: usize) -> String {
    let ors: Vec<String> = (0..n).map(|i| format!("email = 'a{i}@x'")).collect();
    format!("SELECT id FROM users WHERE {}", ors.join(" OR "))
}

#[test]
fn long_or_chains_are_analysed_on_a_grown_stack() {
    match on_small_stack(or_chain(20_000)) {
        Analysis::Plan(plan) => assert_eq!(plan.literals.len(), 20_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn chains_deeper_than_the_limit_are_refused() {
    let sql = format!(
        "SELECT id FROM users WHERE email = 'a' {}",
        "|| 'b' ".repeat(100_001)
    );
    match on_small_stack(sql) {
        Analysis::Refused(refusal) => {
            assert_eq!(refusal.code, "54001");
            assert!(refusal.message.contains("ANY"), "{}", refusal.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_deep_chains_do_not_overflow() {
    for sql in [
        format!("SELECT email{} FROM users", "::text".repeat(20_000)),
        format!("SELECT id FROM users WHERE id = 1{}", " + 1".repeat(20_000)),
        format!(
            "SELECT id FROM users WHERE email IS NOT NULL{}",
            " IS TRUE".repeat(5_000)
        ),
        vec!["SELECT email FROM users"; 5_000].join(" UNION ALL "),
        format!(
            "UPDATE users SET first_name = 'x' WHERE {}",
            vec!["id = 1 AND id = 2"; 10_000].join(" OR ")
        ),
    ] {
        let _ = on_small_stack(sql);
    }
}
