//! The query half of the statement grammar: SELECT with joins, subqueries, CTEs, set
//! operations, aggregates, window functions, and expressions (casts, functions, arrays,
//! JSON, whole-row references). Writes, COPY, DDL and session statements are in `writes.rs`.
//!
//! Order is fixed only by ORDER BY on plain unique keys (`id`), so `ordered` and LIMIT
//! appear only with those; aggregates that depend on order carry `ORDER BY id`.

use super::exprs::{atom, expr_on, items, lean_col, pick_owned, pii_col, pred, Rel, C, K, O, P};
use super::generator::{Gen, Stmt};
use super::schema::{Pii, Ty, ALL, CUSTOMERS};

/// The next statement of the stream.
pub fn next(g: &mut Gen) -> Stmt {
    if g.in_tx && g.chance(0.12) {
        return super::writes::end_transaction(g);
    }
    match g.below(100) {
        0..=11 => select_basic(g),
        12..=20 => select_join(g),
        21..=28 => select_subquery(g),
        29..=35 => select_cte(g),
        36..=40 => select_setop(g),
        41..=48 => select_agg(g),
        49..=53 => select_window(g),
        54..=61 => select_expr(g),
        _ => super::writes::next(g),
    }
}

/// ` ORDER BY <ids>` (ordered) or nothing; LIMIT only after a total order.
fn order_ids(g: &mut Gen, rels: &[Rel]) -> (String, bool) {
    if !g.chance(0.4) {
        return (String::new(), false);
    }
    let keys: Vec<String> = rels.iter().map(|r| format!("{}.id", r.alias)).collect();
    let limit = if g.chance(0.4) {
        format!(" LIMIT {}", 1 + g.below(5))
    } else {
        String::new()
    };
    (format!(" ORDER BY {}{limit}", keys.join(", ")), true)
}

fn from(rel: Rel) -> String {
    format!("{} {}", rel.table.name, rel.alias)
}

fn select_basic(g: &mut Gen) -> Stmt {
    g.begin(true);
    let rel = g.pick(&[C, C, O, K, P]);
    let what = match g.below(8) {
        0 => "*".to_owned(),
        1 => format!("{}.*", rel.alias),
        _ => items(g, &[rel]),
    };
    let filter = if g.chance(0.8) {
        format!(" WHERE {}", pred(g, &[rel], 0))
    } else {
        String::new()
    };
    let (mut order, mut ordered) = order_ids(g, &[rel]);
    if order.is_empty() && g.chance(0.15) {
        // Sorting by a column (PII ones must be refused).
        let col = lean_col(g, rel);
        order = format!(" ORDER BY {}.{}, {}.id", rel.alias, col.name, rel.alias);
        ordered = col.pii == Pii::Plain && col.ty != Ty::Json;
    }
    let sql = format!("SELECT {what} FROM {}{filter}{order}", from(rel));
    g.finish("select", sql, ordered, false)
}

fn join_on(g: &mut Gen, a: Rel, b: Rel) -> String {
    match (a.table.name, b.table.name) {
        ("customers", "orders") => g.pick(&[
            "o.customer_email = c.email",
            "o.customer_id = c.id",
            "o.customer_email = c.email AND o.customer_id = c.id",
            "o.note = c.name",
            "o.customer_email = c.phone",
            "o.status = c.email",
        ]),
        ("customers", "contacts") => g.pick(&[
            "k.customer_id = c.id",
            "k.email = c.email",
            "k.nick = c.city",
        ]),
        ("orders", "contacts") => g.pick(&[
            "k.customer_id = o.customer_id",
            "k.email = o.customer_email",
        ]),
        _ => "p.id = c.score",
    }
    .to_owned()
}

fn select_join(g: &mut Gen) -> Stmt {
    g.begin(true);
    let (a, b) = g.pick(&[(C, O), (C, O), (C, K), (O, K), (C, P)]);
    let kind = g.pick(&["JOIN", "JOIN", "LEFT JOIN", "INNER JOIN", "FULL JOIN"]);
    let (on, cond) = if b.table.name == "orders" && g.chance(0.15) {
        ("USING".to_owned(), "(id)".to_owned())
    } else {
        ("ON".to_owned(), join_on(g, a, b))
    };
    let rels = [a, b];
    let filter = if g.chance(0.6) {
        format!(" WHERE {}", pred(g, &rels, 0))
    } else {
        String::new()
    };
    let (order, ordered) = if on == "USING" {
        (String::new(), false)
    } else {
        order_ids(g, &rels)
    };
    let what = items(g, &rels);
    let sql = format!(
        "SELECT {what} FROM {} {kind} {} {on} {cond}{filter}{order}",
        from(a),
        from(b)
    );
    g.finish("join", sql, ordered && kind != "FULL JOIN", false)
}

fn select_subquery(g: &mut Gen) -> Stmt {
    g.begin(true);
    let sql = match g.below(9) {
        0 => format!(
            "SELECT {} FROM customers c WHERE c.id IN (SELECT o.customer_id FROM orders o WHERE {})",
            items(g, &[C]),
            pred(g, &[O], 1)
        ),
        1 => format!(
            "SELECT {} FROM customers c WHERE {}EXISTS (SELECT 1 FROM orders o WHERE o.customer_email = c.email AND {})",
            items(g, &[C]),
            if g.chance(0.3) { "NOT " } else { "" },
            pred(g, &[O], 1)
        ),
        2 => {
            let inner = g.pick(&["o.customer_email FROM orders o", "k.email FROM contacts k", "o.note FROM orders o", "o.status FROM orders o"]);
            format!("SELECT c.id, c.email FROM customers c WHERE c.email IN (SELECT {inner})")
        }
        3 => format!(
            "SELECT c.id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id), (SELECT {} FROM orders o WHERE o.id = c.id) FROM customers c",
            g.pick(&["o.customer_email", "o.note", "o.status", "max(o.customer_email)"])
        ),
        4 => {
            let inner_pred = pred(g, &[C], 1);
            let col = CUSTOMERS.cols[g.below(4)];
            let outer = atom(g, Rel { alias: "t", table: &CUSTOMERS }, &col, false);
            format!("SELECT t.* FROM (SELECT id, email, name, phone FROM customers c WHERE {inner_pred}) t WHERE {outer}")
        }
        5 => format!(
            "SELECT t.x, t.y FROM (SELECT {} AS x, c.city AS y FROM customers c) AS t WHERE t.x = {}",
            g.pick(&["c.email", "c.name", "c.phone", "c.city"]),
            g.email_slot()
        ),
        6 => format!(
            "SELECT c.id, l.note FROM customers c, LATERAL (SELECT o.note FROM orders o WHERE o.customer_id = c.id ORDER BY o.id LIMIT 1) l WHERE {}",
            pred(g, &[C], 1)
        ),
        7 => {
            let inner = g.pick(&["x.customer_email FROM orders x", "x.email FROM contacts x"]);
            format!("SELECT c.id FROM customers c WHERE c.email = (SELECT {inner} WHERE x.id = {})", g.some_id())
        }
        _ => format!(
            "SELECT u.e FROM (SELECT email AS e FROM customers UNION ALL SELECT customer_email FROM orders) u WHERE u.e = {}",
            g.email_slot()
        ),
    };
    g.finish("subquery", sql, false, false)
}

fn select_cte(g: &mut Gen) -> Stmt {
    g.begin(true);
    let mat = g.pick(&["", "", "MATERIALIZED ", "NOT MATERIALIZED "]);
    let inner = pred(g, &[C], 1);
    let alias = g.pick(&["x", "x AS y", "x y"]);
    let name = alias.rsplit(' ').next().unwrap_or("x");
    let view = Rel {
        alias: "x",
        table: &CUSTOMERS,
    };
    let col = CUSTOMERS.cols[g.below(5)];
    let outer = atom(g, view, &col, false).replacen("x.", &format!("{name}."), 1);
    let sql = match g.below(6) {
        0 => format!(
            "WITH x(a, b) AS {mat}(SELECT email, city FROM customers c WHERE {inner}) SELECT a, b FROM x WHERE a = {}",
            g.email_slot()
        ),
        1 => "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 4) SELECT c.email, r.n FROM customers c JOIN r ON c.id = r.n".to_owned(),
        2 => format!(
            "WITH x AS {mat}(SELECT c.email AS e, count(*) AS n FROM customers c JOIN orders o ON o.customer_email = c.email GROUP BY c.email) SELECT e, n FROM x WHERE {}",
            g.pick(&["n > 1", "e IS NOT NULL", "e LIKE '%a%'", "true"])
        ),
        3 => {
            let what = g.pick(&["*", "y.*", "y", "to_jsonb(y)", "row_to_json(y)", "y::text", "y.email, y.name"]);
            format!("WITH x AS {mat}(SELECT id, email, name FROM customers c WHERE {inner}) SELECT {what} FROM x AS y")
        }
        4 => format!(
            "WITH x AS {mat}(SELECT id, email, name, phone, city FROM customers c WHERE {inner}) SELECT {name}.id, {name}.email, {name}.name FROM {alias} WHERE {outer}"
        ),
        _ => {
            let col = lean_col(g, C);
            let e = expr_on(g, &format!("{name}.{}", col.name), &col);
            format!("WITH x AS (SELECT * FROM customers) SELECT {name}.id, {e} FROM {alias}")
        }
    };
    g.finish("cte", sql, false, false)
}

fn select_setop(g: &mut Gen) -> Stmt {
    g.begin(true);
    let side = |g: &mut Gen| -> (String, bool) {
        let (sql, plain) = g.pick(&[
            ("SELECT email FROM customers", false),
            ("SELECT customer_email FROM orders", false),
            ("SELECT email FROM contacts", false),
            ("SELECT name FROM customers", false),
            ("SELECT city FROM customers", true),
            ("SELECT status FROM orders", true),
            ("SELECT phone FROM customers", false),
        ]);
        (sql.to_owned(), plain)
    };
    let (a, pa) = side(g);
    let (b, pb) = side(g);
    let op = g.pick(&[
        "UNION",
        "UNION ALL",
        "INTERSECT",
        "EXCEPT",
        "UNION ALL",
        "INTERSECT ALL",
    ]);
    let (order, ordered) = if g.chance(0.3) {
        (" ORDER BY 1", pa && pb)
    } else {
        ("", false)
    };
    let sql = if g.chance(0.4) {
        format!(
            "SELECT v FROM ({a} {op} {b}) AS s(v) WHERE v = {}{order}",
            g.email_slot()
        )
    } else {
        format!("{a} {op} {b}{order}")
    };
    g.finish("setop", sql, ordered, false)
}

fn select_agg(g: &mut Gen) -> Stmt {
    g.begin(true);
    let rel = g.pick(&[C, C, O, K]);
    let col = lean_col(g, rel);
    let c = format!("{}.{}", rel.alias, col.name);
    let filter = if g.chance(0.5) {
        format!(" WHERE {}", pred(g, &[rel], 1))
    } else {
        String::new()
    };
    let from = from(rel);
    let sql = match g.below(9) {
        0 => format!("SELECT count(*), count({c}), count(DISTINCT {c}) FROM {from}{filter}"),
        1 => format!("SELECT {c}, count(*) FROM {from}{filter} GROUP BY {c}"),
        2 => format!("SELECT {c}, count(*) FROM {from}{filter} GROUP BY {c} HAVING count(*) >= {}", 1 + g.below(2)),
        3 => format!("SELECT DISTINCT {c} FROM {from}{filter}"),
        4 => format!(
            "SELECT {} FROM {from}{filter}",
            pick_owned(g, vec![
                format!("string_agg({c}::text, ',' ORDER BY {}.id)", rel.alias),
                format!("array_agg({c} ORDER BY {}.id)", rel.alias),
                format!("min({c})"),
                format!("max({c})"),
                format!("json_agg({c} ORDER BY {}.id)", rel.alias),
                format!("count(*) FILTER (WHERE {c} IS NOT NULL)"),
                format!("jsonb_agg({} ORDER BY {}.id)", rel.alias, rel.alias),
            ])
        ),
        5 => format!("SELECT count(*) FILTER (WHERE {}) FROM {from}", atom(g, rel, &col, false)),
        6 => "SELECT c.city, count(DISTINCT o.customer_email), sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.city".to_owned(),
        7 => format!("SELECT {c}, {}.id FROM {from} GROUP BY {c}, {}.id HAVING {c} IS NOT NULL", rel.alias, rel.alias),
        _ => "SELECT o.customer_email, sum(o.amount), count(*) FROM orders o GROUP BY ROLLUP (o.customer_email)".to_owned(),
    };
    g.finish("aggregate", sql, false, false)
}

fn select_window(g: &mut Gen) -> Stmt {
    g.begin(true);
    let col = lean_col(g, C);
    let c = format!("c.{}", col.name);
    let w = match g.below(8) {
        0 => "row_number() OVER (PARTITION BY c.city ORDER BY c.id)".to_owned(),
        1 => format!("count(*) OVER (PARTITION BY {c})"),
        2 => format!("lag({c}) OVER (ORDER BY c.id)"),
        3 => format!("first_value({c}) OVER (PARTITION BY c.city ORDER BY c.id)"),
        4 => format!("rank() OVER (ORDER BY {c}, c.id)"),
        5 => {
            "sum(c.score) OVER (ORDER BY c.id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)".to_owned()
        }
        6 => format!(
            "count({c}) OVER w FROM customers c WINDOW w AS (PARTITION BY c.city ORDER BY c.id) --"
        ),
        _ => format!("dense_rank() OVER (PARTITION BY {c} ORDER BY c.id)"),
    };
    let filter = if g.chance(0.5) {
        format!(" WHERE {}", pred(g, &[C], 1))
    } else {
        String::new()
    };
    let sql = if w.ends_with("--") {
        format!(
            "SELECT c.id, c.email, {}{filter}",
            w.trim_end_matches(" --")
        )
    } else {
        format!("SELECT c.id, {c}, {w} FROM customers c{filter}")
    };
    g.finish("window", sql, false, false)
}

fn select_expr(g: &mut Gen) -> Stmt {
    g.begin(true);
    let sql = match g.below(10) {
        0 => format!(
            "SELECT {} FROM customers c",
            g.pick(&[
                "row_to_json(c)",
                "to_jsonb(c.*)",
                "c::text",
                "c",
                "ROW(c.*)",
                "json_agg(c ORDER BY c.id)",
                "hstore(c)"
            ])
        ),
        1 => format!(
            "SELECT t FROM (SELECT {} FROM customers) t",
            g.pick(&["email", "name", "id, phone", "city"])
        ),
        2 => format!(
            "SELECT unnest(ARRAY[c.email, c.city]) FROM customers c WHERE c.id = {}",
            g.some_id()
        ),
        3 => {
            let v = g.value(Ty::Text, true);
            let lit = g.literal(&v, Ty::Text);
            format!(
                "SELECT {lit} AS v, c.id FROM customers c WHERE c.id = {}",
                1 + g.below(3)
            )
        }
        4 => {
            let v = g.value(Ty::Text, false);
            let lit = g.literal(&v, Ty::Text);
            format!(
                "SELECT {lit} AS v, p.title FROM products p WHERE p.id = {}",
                1 + g.below(6)
            )
        }
        5 => format!(
            "SELECT c.id, c.meta || jsonb_build_object('e', {}) FROM customers c",
            g.pick(&["c.email", "c.city", "'x'"])
        ),
        6 => format!(
            "SELECT c.id, c.tags || ARRAY[{}] FROM customers c",
            g.pick(&["c.email", "c.city", "'x'"])
        ),
        7 => {
            let rel = g.pick(&[C, O, K]);
            let col = pii_col(g, rel);
            let e = expr_on(g, &format!("{}.{}", rel.alias, col.name), &col);
            format!(
                "SELECT {}.id, {e} FROM {} {}",
                rel.alias, rel.table.name, rel.alias
            )
        }
        8 => format!(
            "SELECT c.id FROM customers c WHERE {} = {}",
            g.pick(&[
                "c.email::text",
                "c.email::varchar",
                "CAST(c.email AS text)",
                "(c.email)",
                "c.email COLLATE \"C\"",
                "c.email::citext"
            ]),
            g.email_slot()
        ),
        _ => format!(
            "SELECT {} FROM {}",
            g.pick(&["count(*)", "count(*) + 1"]),
            table_list(g)
        ),
    };
    g.finish("expression", sql, false, false)
}

fn table_list(g: &mut Gen) -> String {
    let t = g.pick(ALL);
    t.name.to_owned()
}
