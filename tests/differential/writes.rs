//! The write half of the statement grammar: INSERT (VALUES, SELECT, UNNEST, ON CONFLICT),
//! UPDATE, DELETE, MERGE, all with RETURNING where Postgres 15 has it; COPY in and out;
//! DDL; and session statements (standard_conforming_strings, transactions, PREPARE).

use super::exprs::{expr_on, is_email, item, pred, value_for, C, K, O, P};
use super::generator::{array_text, Gen, Kind, Mode, Stmt, Val};
use super::schema::{Col, Table, Ty, CONTACTS, CUSTOMERS, ORDERS, PRODUCTS};

pub fn next(g: &mut Gen) -> Stmt {
    match g.below(42) {
        38..=41 => write_misc(g),
        0..=8 => insert(g),
        9..=14 => update(g),
        15..=17 => delete(g),
        18..=21 => merge(g),
        22..=24 => copy_in(g),
        25 | 26 => copy_out(g),
        27..=30 => ddl(g),
        _ => session(g),
    }
}

/// The table written and its insertable columns, the id first.
fn target(g: &mut Gen) -> &'static Table {
    g.pick(&[&CUSTOMERS, &CUSTOMERS, &ORDERS, &CONTACTS, &PRODUCTS])
}

/// A value for `col` in a new row; orders.customer_email must name a customer.
fn row_value(g: &mut Gen, col: &Col, id: i64) -> String {
    if col.name == "id" {
        return g.slot(Val::Int(id), Ty::Int);
    }
    value_for(g, col)
}

fn returning(g: &mut Gen, table: &'static Table) -> String {
    if !g.chance(0.45) {
        return String::new();
    }
    let rel = match table.name {
        "customers" => C,
        "orders" => O,
        "contacts" => K,
        _ => P,
    };
    let what = match g.below(4) {
        0 => "*".to_owned(),
        1 => format!("id, {}", table.cols[1].name),
        _ => item(g, rel, true).replace(&format!("{}.", rel.alias), ""),
    };
    format!(" RETURNING {what}")
}

fn columns(g: &mut Gen, table: &'static Table) -> Vec<Col> {
    let mut cols = vec![table.cols[0]];
    for col in &table.cols[1..] {
        if g.chance(0.7) {
            cols.push(*col);
        }
    }
    cols
}

fn names(cols: &[Col]) -> String {
    cols.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

fn insert(g: &mut Gen) -> Stmt {
    g.begin(true);
    let table = target(g);
    let cols = columns(g, table);
    let list = names(&cols);
    let t = table.name;
    let body = match g.below(12) {
        0..=6 => {
            let rows = 1 + g.below(3);
            let rows: Vec<String> = (0..rows)
                .map(|_| {
                    let id = g.new_id();
                    let vals: Vec<String> = cols.iter().map(|c| row_value(g, c, id)).collect();
                    format!("({})", vals.join(", "))
                })
                .collect();
            let conflict = match (g.below(6), t) {
                (0, _) => " ON CONFLICT DO NOTHING".to_owned(),
                (1, "customers") => " ON CONFLICT (email) DO NOTHING".to_owned(),
                (2, _) if cols.len() > 1 => {
                    let c = cols[1].name;
                    format!(" ON CONFLICT (id) DO UPDATE SET {c} = EXCLUDED.{c}")
                }
                (3, _) if cols.len() > 1 => {
                    let v = value_for(g, &cols[1]);
                    format!(" ON CONFLICT (id) DO UPDATE SET {} = {v}", cols[1].name)
                }
                _ => String::new(),
            };
            format!(
                "INSERT INTO {t} ({list}) VALUES {}{conflict}",
                rows.join(", ")
            )
        }
        7 => {
            let id = g.new_id();
            let vals: Vec<String> = table.cols.iter().map(|c| row_value(g, c, id)).collect();
            format!("INSERT INTO {t} VALUES ({})", vals.join(", "))
        }
        8 => {
            let id = g.new_id();
            let (dst, src) = g.pick(&[
                ("orders (id, customer_id, customer_email)", "c.id, c.email"),
                ("contacts (id, customer_id, email)", "c.id, c.email"),
                ("orders (id, customer_id, note)", "c.id, c.name"),
                ("contacts (id, customer_id, nick)", "c.id, c.city"),
            ]);
            let filter = pred(g, &[C], 1);
            format!("INSERT INTO {dst} SELECT {id} + c.id, {src} FROM customers c WHERE {filter}")
        }
        9 => {
            let id = g.new_id();
            let vals: Vec<String> = cols.iter().map(|c| row_value(g, c, id)).collect();
            let aliases: Vec<String> = (0..cols.len()).map(|i| format!("v.a{i}")).collect();
            let alias_list: Vec<String> = (0..cols.len()).map(|i| format!("a{i}")).collect();
            format!(
                "INSERT INTO {t} ({list}) SELECT {} FROM (VALUES ({})) AS v({})",
                aliases.join(", "),
                vals.join(", "),
                alias_list.join(", ")
            )
        }
        10 => {
            let ids: Vec<Option<String>> = (0..2).map(|_| Some(g.new_id().to_string())).collect();
            let emails: Vec<Option<String>> = (0..2).map(|_| Some(g.email())).collect();
            let words: Vec<Option<String>> = (0..2).map(|_| Some(g.word())).collect();
            let a = g.slot(Val::Text(array_text(&ids)), Ty::Text);
            let b = g.slot(Val::TextArr(emails), Ty::TextArr);
            let c = g.slot(Val::TextArr(words), Ty::TextArr);
            format!("INSERT INTO customers (id, email, name) SELECT * FROM UNNEST({a}::int[], {b}::text[], {c}::text[])")
        }
        _ => {
            let id = g.new_id();
            let v = g.email_slot();
            format!("INSERT INTO customers (id, email) SELECT {id}, {v} WHERE NOT EXISTS (SELECT 1 FROM customers WHERE email = {v})")
        }
    };
    let ret = returning(g, table);
    g.finish("insert", format!("{body}{ret}"), false, true)
}

fn update(g: &mut Gen) -> Stmt {
    g.begin(true);
    let table = g.pick(&[&CUSTOMERS, &CUSTOMERS, &ORDERS, &CONTACTS]);
    let rel = match table.name {
        "customers" => C,
        "orders" => O,
        _ => K,
    };
    let n = 1 + g.below(2);
    let sets: Vec<String> = (0..n)
        .map(|_| {
            let col = table.cols[1 + g.below(table.cols.len() - 1)];
            let value = match g.below(10) {
                0 => "NULL".to_owned(),
                1 => "DEFAULT".to_owned(),
                2 => expr_on(g, col.name, &col),
                3 => g.pick(table.cols).name.to_owned(),
                _ => value_for(g, &col),
            };
            format!("{} = {value}", col.name)
        })
        .collect();
    let t = table.name;
    let a = rel.alias;
    let filter = pred(g, &[rel], 0);
    let sql = match g.below(8) {
        0 if t == "orders" => format!(
            "UPDATE orders o SET {} FROM customers c WHERE o.customer_id = c.id AND {}",
            sets.join(", "),
            pred(g, &[C], 1)
        ),
        1 => {
            let cols: Vec<Col> = table.cols[1..].iter().copied().take(2).collect();
            let vals: Vec<String> = cols.iter().map(|c| value_for(g, c)).collect();
            format!(
                "UPDATE {t} {a} SET ({}) = ({}) WHERE {filter}",
                names(&cols),
                vals.join(", ")
            )
        }
        _ => format!("UPDATE {t} {a} SET {} WHERE {filter}", sets.join(", ")),
    };
    let ret = returning(g, table);
    g.finish("update", format!("{sql}{ret}"), false, true)
}

fn delete(g: &mut Gen) -> Stmt {
    g.begin(true);
    let sql = match g.below(4) {
        0 => format!(
            "DELETE FROM contacts k USING customers c WHERE k.customer_id = c.id AND {}",
            pred(g, &[C], 1)
        ),
        1 => format!("DELETE FROM customers c WHERE {}", pred(g, &[C], 0)),
        2 => format!("DELETE FROM contacts k WHERE {}", pred(g, &[K], 0)),
        _ => format!("DELETE FROM orders o WHERE {}", pred(g, &[O], 0)),
    };
    let table = if sql.starts_with("DELETE FROM orders") {
        &ORDERS
    } else if sql.starts_with("DELETE FROM customers") {
        &CUSTOMERS
    } else {
        &CONTACTS
    };
    let ret = returning(g, table);
    g.finish("delete", format!("{sql}{ret}"), false, true)
}

fn merge(g: &mut Gen) -> Stmt {
    g.begin(true);
    let id = g.new_id();
    let idv = g.slot(Val::Int(id), Ty::Int);
    let email = g.email_slot();
    let name = value_for(g, &CUSTOMERS.cols[2]);
    let v = value_for(g, &CUSTOMERS.cols[2]);
    let matched = match g.below(5) {
        0 => " WHEN MATCHED THEN DELETE".to_owned(),
        1 => format!(
            " WHEN MATCHED AND c.email = {} THEN UPDATE SET name = s.name",
            value_for(g, &CUSTOMERS.cols[1])
        ),
        2 => format!(" WHEN MATCHED THEN UPDATE SET name = {v}"),
        3 => " WHEN MATCHED THEN DO NOTHING".to_owned(),
        _ => " WHEN MATCHED THEN UPDATE SET city = s.name".to_owned(),
    };
    let not_matched = match g.below(4) {
        0 => " WHEN NOT MATCHED THEN DO NOTHING".to_owned(),
        1 => format!(
            " WHEN NOT MATCHED THEN INSERT (id, email, name) VALUES ({}, {}, {})",
            id + 1,
            value_for(g, &CUSTOMERS.cols[1]),
            value_for(g, &CUSTOMERS.cols[2])
        ),
        _ => " WHEN NOT MATCHED THEN INSERT (id, email, name) VALUES (s.id, s.email, s.name)"
            .to_owned(),
    };
    let sql = match g.below(4) {
        0 => format!("MERGE INTO customers c USING (SELECT 1 AS k) s ON false WHEN NOT MATCHED THEN INSERT (id, email, name) VALUES ({idv}, {email}, {name})"),
        1 => format!(
            "MERGE INTO orders o USING customers c ON o.customer_id = c.id AND o.customer_email = c.email WHEN MATCHED AND {} THEN UPDATE SET note = {v}",
            pred(g, &[C], 1)
        ),
        _ => {
            let on = g.pick(&["c.id = s.id", "c.email = s.email"]);
            format!("MERGE INTO customers c USING (VALUES ({idv}, {email}, {name})) AS s(id, email, name) ON {on}{matched}{not_matched}")
        }
    };
    g.finish("merge", sql, false, true)
}

/// Writable CTEs, copies between columns, numbers and DEFAULT into PII columns, and
/// searches through relations derived from a PII table without pgcloak's knowledge.
fn write_misc(g: &mut Gen) -> Stmt {
    g.begin(true);
    let id = g.new_id();
    let v = value_for(g, &CUSTOMERS.cols[2]);
    let e = g.email_slot();
    let sql = match g.below(14) {
        0 => format!("WITH u AS (UPDATE customers SET name = {v} WHERE id = {} RETURNING id, name) SELECT * FROM u", g.some_id()),
        1 => format!("WITH i AS (INSERT INTO customers (id, email, name) VALUES ({id}, {e}, {v}) RETURNING *) SELECT id, email FROM i"),
        2 => format!("WITH d AS (DELETE FROM orders WHERE customer_email = {e} RETURNING id, note) SELECT count(*) FROM d"),
        3 => format!(
            "UPDATE orders o SET customer_email = c.email FROM customers c WHERE o.customer_id = c.id AND o.id = {} RETURNING o.customer_email",
            g.some_id()
        ),
        4 => format!("UPDATE customers SET phone = email WHERE id = {}", g.some_id()),
        5 => format!("UPDATE customers SET email = email, name = name WHERE id = {}", g.some_id()),
        6 => format!(
            "INSERT INTO customers (id, phone) VALUES ({id}, {})",
            g.pick(&["42", "007", "1e5", "-3", "1.50", "0x1F"])
        ),
        7 => format!("INSERT INTO customers (id, email, name) VALUES ({id}, DEFAULT, {v})"),
        8 => format!("UPDATE customers SET email = (SELECT email FROM customers WHERE id = 1) WHERE id = {}", g.some_id()),
        9 => format!("SELECT id FROM scratch2 WHERE email = {e}"),
        10 => format!("SELECT id FROM parent_t WHERE email = {e}"),
        11 => format!("INSERT INTO parent_t (id, email) VALUES ({id}, {e})"),
        12 => "SELECT DISTINCT ON (c.email) c.id FROM customers c ORDER BY c.email, c.id".to_owned(),
        _ => format!("SELECT c.id, c.email FROM customers c WHERE c.email = {e} FOR UPDATE"),
    };
    let writes = !sql.starts_with("SELECT");
    g.finish("write_misc", sql, false, writes)
}

/// One field of a COPY text row.
fn copy_text_field(v: &Option<String>) -> String {
    match v {
        None => "\\N".into(),
        Some(s) => s
            .replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r"),
    }
}

/// One field of a COPY csv row.
fn copy_csv_field(v: &Option<String>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.is_empty() || s.contains([',', '"', '\n', '\r']) || s.trim() != s => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Some(s) => s.clone(),
    }
}

fn copy_in(g: &mut Gen) -> Stmt {
    g.begin(false);
    let table = g.pick(&[&CUSTOMERS, &CUSTOMERS, &ORDERS, &CONTACTS, &PRODUCTS]);
    let cols: Vec<Col> = columns(g, table)
        .into_iter()
        .filter(|c| !matches!(c.ty, Ty::TextArr | Ty::Json))
        .collect();
    let csv = g.chance(0.4);
    let rows: Vec<Vec<Option<String>>> = (0..1 + g.below(3))
        .map(|_| {
            let id = g.new_id();
            cols.iter()
                .map(|c| {
                    if c.name == "id" {
                        Some(id.to_string())
                    } else {
                        g.value(c.ty, is_email(c)).text()
                    }
                })
                .collect()
        })
        .collect();
    let mut data = String::new();
    for row in &rows {
        let fields: Vec<String> = row
            .iter()
            .map(|f| {
                if csv {
                    copy_csv_field(f)
                } else {
                    copy_text_field(f)
                }
            })
            .collect();
        data.push_str(&fields.join(if csv { "," } else { "\t" }));
        data.push('\n');
    }
    let list = if g.chance(0.08) {
        String::new()
    } else {
        format!(" ({})", names(&cols))
    };
    let opts = match (csv, g.below(10)) {
        (true, 0) => " WITH (FORMAT csv, FORCE_NULL (id))",
        (true, _) => " WITH (FORMAT csv)",
        (false, 0) => " (FORMAT binary)",
        (false, 1) => " WITH (FORMAT text, DELIMITER E'\\t')",
        _ => "",
    };
    let sql = format!("COPY {}{list} FROM STDIN{opts}", table.name);
    let mut stmt = g.finish("copy_in", sql, false, true);
    stmt.kind = Kind::CopyIn(data);
    stmt
}

fn copy_out(g: &mut Gen) -> Stmt {
    g.begin(false);
    let opts = g.pick(&[
        "",
        " WITH (FORMAT csv)",
        " WITH (FORMAT csv, HEADER)",
        " (FORMAT binary)",
    ]);
    let (sql, ordered) = match g.below(3) {
        0 => (format!("COPY {} TO STDOUT{opts}", g.pick(&["customers", "orders", "contacts", "products"])), false),
        1 => (format!("COPY customers (id, email, name) TO STDOUT{opts}"), false),
        _ => (format!("COPY (SELECT c.id, c.email, c.phone FROM customers c WHERE {} ORDER BY c.id) TO STDOUT{opts}", pred(g, &[C], 1)), true),
    };
    let mut stmt = g.finish("copy_out", sql, ordered, false);
    stmt.kind = Kind::CopyOut;
    stmt
}

fn ddl(g: &mut Gen) -> Stmt {
    g.begin(false);
    let sql = g
        .pick(&[
            "CREATE INDEX IF NOT EXISTS ix_c_email ON customers (email)",
            "CREATE INDEX IF NOT EXISTS ix_c_name ON customers (name)",
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_c_name ON customers (name)",
            "CREATE INDEX IF NOT EXISTS ix_c_lower ON customers (lower(email))",
            "DROP INDEX IF EXISTS ix_c_email",
            "DROP INDEX IF EXISTS ix_c_name",
            "ALTER TABLE customers ADD COLUMN IF NOT EXISTS extra int",
            "ALTER TABLE customers DROP COLUMN IF EXISTS extra",
            "ALTER TABLE products ADD COLUMN IF NOT EXISTS label text",
            "CREATE TABLE IF NOT EXISTS scratch (id int, v text)",
            "DROP TABLE IF EXISTS scratch",
            "CREATE TABLE scratch AS SELECT id, email AS v FROM customers",
            "CREATE TABLE scratch2 AS TABLE customers",
            "CREATE TEMP VIEW v_cities AS SELECT id, city FROM customers",
            "CREATE VIEW v_emails AS SELECT id, email FROM customers",
            "DROP VIEW IF EXISTS v_cities",
            "COMMENT ON COLUMN customers.city IS 'where'",
            "ALTER TABLE customers ALTER COLUMN phone TYPE text",
            "ALTER TABLE customers ALTER COLUMN phone TYPE varchar(300) USING phone::varchar(300)",
            "ALTER TABLE contacts ADD CONSTRAINT u_nick UNIQUE (nick)",
            "ALTER TABLE customers ALTER COLUMN name SET DEFAULT 'anon'",
            "ALTER TABLE contacts ADD COLUMN IF NOT EXISTS extra text",
            "ALTER TABLE customers ADD CONSTRAINT ck_city CHECK (city <> '')",
            "ALTER TABLE customers DROP CONSTRAINT IF EXISTS ck_city",
            "ALTER TABLE customers ADD CONSTRAINT ck_name CHECK (length(name) > 0)",
            "CREATE TABLE IF NOT EXISTS parent_t (id int, email text)",
            "ALTER TABLE customers INHERIT parent_t",
            "TRUNCATE scratch",
        ])
        .to_owned();
    let sql = if sql.contains("scratch (id int, v text)") && g.chance(0.5) {
        // Rows in a plain table, searched later by the select grammar's plain literals.
        format!("{sql}; INSERT INTO scratch VALUES (1, 'ann@example.com')")
    } else if sql.starts_with("CREATE TABLE scratch AS") || sql.starts_with("TRUNCATE") {
        sql
    } else if g.chance(0.3) {
        format!(
            "SELECT id, v FROM scratch WHERE v = {}",
            g.string("ann@example.com").clone()
        )
    } else {
        sql
    };
    let writes = !sql.starts_with("SELECT");
    g.finish("ddl", sql, false, writes)
}

/// COMMIT or ROLLBACK of the transaction the generator opened.
pub fn end_transaction(g: &mut Gen) -> Stmt {
    g.begin(false);
    g.in_tx = false;
    let sql = g.pick(&["COMMIT", "ROLLBACK", "END"]).to_owned();
    g.finish("session", sql, false, true)
}

fn session(g: &mut Gen) -> Stmt {
    g.begin(false);
    let sql = match g.below(14) {
        0 | 1 => {
            g.scs_on = !g.scs_on;
            format!(
                "SET standard_conforming_strings = {}",
                if g.scs_on { "on" } else { "off" }
            )
        }
        2 => {
            g.scs_on = true;
            "RESET standard_conforming_strings".to_owned()
        }
        3 | 4 if !g.in_tx => {
            g.in_tx = true;
            g.pick(&[
                "BEGIN",
                "START TRANSACTION",
                "BEGIN ISOLATION LEVEL REPEATABLE READ",
            ])
            .to_owned()
        }
        3..=5 if g.in_tx => {
            g.in_tx = false;
            g.pick(&["COMMIT", "ROLLBACK", "END"]).to_owned()
        }
        6 if g.in_tx => "SAVEPOINT s1".to_owned(),
        7 if g.in_tx => "ROLLBACK TO SAVEPOINT s1".to_owned(),
        8 => format!(
            "PREPARE {} AS SELECT id, email, name FROM customers WHERE id = $1",
            g.pick(&["p1", "p2"])
        ),
        9 => "PREPARE p3(text) AS SELECT id FROM customers WHERE email = $1".to_owned(),
        10 => format!("EXECUTE {}({})", g.pick(&["p1", "p2", "p3"]), g.some_id()),
        11 => format!("EXECUTE p3({})", g.string("ann@example.com").clone()),
        12 => "DEALLOCATE ALL".to_owned(),
        _ => "SET search_path = public".to_owned(),
    };
    let writes = sql.starts_with("COMMIT") || sql.starts_with("ROLLBACK") || sql == "END";
    let mut stmt = g.finish("session", sql, false, writes);
    stmt.mode = Mode::Simple;
    stmt
}
