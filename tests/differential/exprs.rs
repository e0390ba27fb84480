//! Expressions of the statement grammar: the relations in scope, column references,
//! values, predicates (comparisons of every kind a PII column may meet) and select-list
//! expressions (functions, casts, arrays, JSON, row constructors).

use super::generator::{Gen, Val};
use super::schema::{Col, Pii, Table, Ty, CONTACTS, CUSTOMERS, ORDERS, PRODUCTS};
/// A table in a FROM list under its alias.
#[derive(Clone, Copy)]
pub struct Rel {
    pub alias: &'static str,
    pub table: &'static Table,
}

pub const C: Rel = Rel {
    alias: "c",
    table: &CUSTOMERS,
};
pub const O: Rel = Rel {
    alias: "o",
    table: &ORDERS,
};
pub const P: Rel = Rel {
    alias: "p",
    table: &PRODUCTS,
};
pub const K: Rel = Rel {
    alias: "k",
    table: &CONTACTS,
};

pub fn is_email(col: &Col) -> bool {
    col.name.contains("email")
}

pub fn pick_col(g: &mut Gen, rel: Rel) -> Col {
    g.pick(rel.table.cols)
}

pub fn pii_col(g: &mut Gen, rel: Rel) -> Col {
    let pii: Vec<Col> = rel
        .table
        .cols
        .iter()
        .copied()
        .filter(|c| c.pii != Pii::Plain)
        .collect();
    if pii.is_empty() {
        pick_col(g, rel)
    } else {
        g.pick(&pii)
    }
}

/// A column, leaning to PII columns (they are what is under test).
pub fn lean_col(g: &mut Gen, rel: Rel) -> Col {
    if g.chance(0.55) {
        pii_col(g, rel)
    } else {
        pick_col(g, rel)
    }
}

/// `alias.col`, or the bare name when `bare` allows it.
pub fn cref(g: &mut Gen, rel: Rel, col: &Col, bare: bool) -> String {
    if bare && g.chance(0.4) {
        col.name.to_owned()
    } else {
        format!("{}.{}", rel.alias, col.name)
    }
}

/// A value for `col` in the statement (literal or parameter).
pub fn value_for(g: &mut Gen, col: &Col) -> String {
    let val = g.value(col.ty, is_email(col));
    g.slot(val, col.ty)
}

/// A predicate over the relations in scope.
pub fn pred(g: &mut Gen, rels: &[Rel], depth: usize) -> String {
    if depth < 2 && g.chance(0.25) {
        let a = pred(g, rels, depth + 1);
        let b = pred(g, rels, depth + 1);
        return match g.below(3) {
            0 => format!("({a} AND {b})"),
            1 => format!("({a} OR {b})"),
            _ => format!("NOT ({a})"),
        };
    }
    let rel = g.pick(rels);
    let col = lean_col(g, rel);
    atom(g, rel, &col, rels.len() == 1)
}

/// One comparison on a column.
pub fn atom(g: &mut Gen, rel: Rel, col: &Col, bare: bool) -> String {
    let c = cref(g, rel, col, bare);
    match col.ty {
        Ty::Text => match g.below(24) {
            0..=4 => format!("{c} = {}", value_for(g, col)),
            5 => format!("{c} <> {}", value_for(g, col)),
            6 => format!("{c} IN ({}, {})", value_for(g, col), value_for(g, col)),
            7 => format!("{c} IS NULL"),
            8 => format!("{c} IS NOT NULL"),
            9 => format!("{c} LIKE 'a%'"),
            10 => format!("{c} > {}", value_for(g, col)),
            11 => {
                let items = (0..2)
                    .map(|_| Some(g.value(Ty::Text, is_email(col)).text().unwrap_or_default()))
                    .collect();
                format!("{c} = ANY({})", g.slot(Val::TextArr(items), Ty::TextArr))
            }
            12 => format!("lower({c}) = {}", value_for(g, col)),
            13 => format!("{c} IS DISTINCT FROM {}", value_for(g, col)),
            14 => format!("{c} NOT IN ({})", value_for(g, col)),
            15 => format!("coalesce({c}, 'x') = {}", value_for(g, col)),
            _ => more_text_atoms(g, &c, col),
        },
        Ty::Int => match g.below(5) {
            0 | 1 => format!("{c} = {}", value_for(g, col)),
            2 => format!("{c} > {}", value_for(g, col)),
            3 => format!("{c} BETWEEN 2 AND {}", g.below(12)),
            _ => format!("{c} IN ({}, {}, 3)", value_for(g, col), value_for(g, col)),
        },
        Ty::Num => format!("{c} > {}", value_for(g, col)),
        Ty::TextArr => match g.below(3) {
            0 => format!("{} = ANY({c})", g.word_slot()),
            1 => format!("{c} @> ARRAY['a']"),
            _ => format!("cardinality({c}) > 1"),
        },
        Ty::Json => match g.below(3) {
            0 => format!("{c}->>'t' = 'v1'"),
            1 => format!("({c}->>'k')::int > {}", g.below(10)),
            _ => format!("{c} @> '{{\"t\": \"v2\"}}'"),
        },
    }
}

pub fn pick_owned(g: &mut Gen, mut items: Vec<String>) -> String {
    let i = g.below(items.len());
    items.swap_remove(i)
}

/// A select-list item over `rel`: a column, or an expression on one.
pub fn item(g: &mut Gen, rel: Rel, bare: bool) -> String {
    let col = lean_col(g, rel);
    let c = cref(g, rel, &col, bare);
    if g.chance(0.6) {
        return if g.chance(0.2) {
            format!("{c} AS x_{}", col.name)
        } else {
            c
        };
    }
    expr_on(g, &c, &col)
}

/// An expression using column reference `c` (functions, casts, arrays, JSON).
pub fn expr_on(g: &mut Gen, c: &str, col: &Col) -> String {
    if col.ty != Ty::Text {
        return match g.below(4) {
            0 => format!("{c}::text"),
            1 => format!("coalesce({c}::text, '-')"),
            2 => format!("to_jsonb({c})"),
            _ => format!("{c} IS NULL"),
        };
    }
    let v = value_for(g, col);
    match g.below(28) {
        0 => format!("lower({c})"),
        1 => format!("length({c})"),
        2 => format!("{c} || 'x'"),
        3 => format!("coalesce({c}, 'none')"),
        4 => format!("{c}::text"),
        5 => format!("{c}::varchar"),
        6 => format!("CAST({c} AS text)"),
        7 => format!("upper({c})"),
        8 => format!("substr({c}, 1, 2)"),
        9 => format!("md5({c})"),
        10 => format!("{c} IS NULL"),
        11 => format!("jsonb_build_object('v', {c})"),
        12 => format!("to_jsonb({c})"),
        13 => format!("ARRAY[{c}]"),
        14 => format!("({c} = {v})"),
        15 => format!("CASE WHEN {c} = {v} THEN 1 ELSE 0 END"),
        16 => format!("nullif({c}, {v})"),
        17 => format!("{c}::varchar(5)"),
        18 => format!("concat({c}, '!')"),
        19 => format!("format('%s', {c})"),
        20 => format!("split_part({c}, '@', 2)"),
        21 => format!("{c}::bytea"),
        22 => format!("greatest({c}, 'm')"),
        23 => format!("json_build_array({c}, 1)"),
        24 => format!("{c} COLLATE \"C\""),
        25 => format!("row({c}, 1)"),
        26 => format!("{c}::json"),
        _ => format!("CASE WHEN {c} IS NULL THEN 'n' ELSE {c} END"),
    }
}

pub fn items(g: &mut Gen, rels: &[Rel]) -> String {
    let n = 1 + g.below(3);
    let bare = rels.len() == 1;
    (0..n)
        .map(|_| {
            let rel = g.pick(rels);
            item(g, rel, bare)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rarer comparisons on a text column: row comparisons, array literals, ALL, VALUES
/// lists, simple CASE, regular expressions, BETWEEN, collations, length casts.
fn more_text_atoms(g: &mut Gen, c: &str, col: &Col) -> String {
    let v = value_for(g, col);
    match g.below(20) {
        0 => format!("({c}, 1) = ({v}, 1)"),
        1 => format!("({c}, 2) IN (({v}, 2), ({}, 2))", value_for(g, col)),
        2 => {
            let items = vec![Some(g.email()), Some(g.word())];
            format!(
                "{c} = ANY({})",
                g.string(&super::generator::array_text(&items))
            )
        }
        3 => format!("{c} <> ALL(ARRAY[{v}])"),
        4 => format!("{c} IN (VALUES ({v}), ({}))", value_for(g, col)),
        5 => format!("CASE {c} WHEN {v} THEN true ELSE false END"),
        6 => format!("{c} ~ '^a'"),
        7 => format!("{c} BETWEEN {v} AND 'z'"),
        8 => format!("{c} = {v} COLLATE \"C\""),
        9 => format!("{c} = {}::varchar(4)", g.string("ann@")),
        10 => format!("{c} IS NOT DISTINCT FROM {v}"),
        11 => format!("{c} = ({v})"),
        12 => format!("{c} ILIKE {v}"),
        13 => format!("{c} = ANY(ARRAY(SELECT {v}))"),
        14 => format!("EXISTS (SELECT 1 WHERE {c} = {v})"),
        15 => format!("{c} = {v} || ''"),
        16 => format!("{v} = {c}"),
        17 => format!("{c} = CAST({v} AS text)"),
        18 => format!("NULLIF({c}, {v}) IS NULL"),
        _ => format!("{c} = (SELECT {v})"),
    }
}
