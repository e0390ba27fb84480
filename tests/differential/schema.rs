//! The schema both databases hold, the pgcloak policy over it, the columns the generator
//! may name, and the fixed seed rows (the same rows in clear in B and through pgcloak in A).

/// PII: customers.email (deterministic, UNIQUE), customers.name (randomized, text),
/// customers.phone (deterministic, varchar), orders.customer_email (deterministic, the key of
/// customers.email, with a foreign key to it), orders.note (randomized, varchar),
/// contacts.email (deterministic, its own key) and contacts.nick (randomized). `products` is
/// a plain table.
pub const POLICY: &str = "
customers:
  email: deterministic
  name: randomized
  phone: deterministic
orders:
  customer_email: { mode: deterministic, same_key_as: customers.email }
  note: randomized
contacts:
  email: deterministic
  nick: randomized
";

pub const SCHEMA: &str = "
CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE, name text, phone varchar(300),
                        city text, score int, tags text[], meta jsonb);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int,
                     customer_email text REFERENCES customers (email) ON DELETE SET NULL,
                     note varchar(400), amount numeric(10,2), status text);
CREATE TABLE products (id int PRIMARY KEY, title text, price numeric(10,2), category text);
CREATE TABLE contacts (id int PRIMARY KEY, email text, nick text, customer_id int);
";

/// The tables whose full contents are compared after every write, in this order.
pub const TABLES: &[&str] = &["customers", "orders", "products", "contacts"];

/// Counts, directly in A, the PII values that are neither NULL nor an envelope.
pub const PLAINTEXT_AT_REST: &str = "
SELECT (SELECT count(*) FROM customers WHERE email NOT LIKE 'pgc1$%' OR name NOT LIKE 'pgc1$%'
                                          OR phone NOT LIKE 'pgc1$%')
     + (SELECT count(*) FROM orders WHERE customer_email NOT LIKE 'pgc1$%' OR note NOT LIKE 'pgc1$%')
     + (SELECT count(*) FROM contacts WHERE email NOT LIKE 'pgc1$%' OR nick NOT LIKE 'pgc1$%')";

/// What a column may hold, for picking values and functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Text,
    Num,
    TextArr,
    Json,
}

/// How pgcloak treats a column; deterministic columns carry their key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pii {
    Plain,
    Det(&'static str),
    Rand,
}

#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    pub ty: Ty,
    pub pii: Pii,
}

#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub cols: &'static [Col],
}

const fn col(name: &'static str, ty: Ty, pii: Pii) -> Col {
    Col { name, ty, pii }
}

pub const CUSTOMERS: Table = Table {
    name: "customers",
    cols: &[
        col("id", Ty::Int, Pii::Plain),
        col("email", Ty::Text, Pii::Det("email")),
        col("name", Ty::Text, Pii::Rand),
        col("phone", Ty::Text, Pii::Det("phone")),
        col("city", Ty::Text, Pii::Plain),
        col("score", Ty::Int, Pii::Plain),
        col("tags", Ty::TextArr, Pii::Plain),
        col("meta", Ty::Json, Pii::Plain),
    ],
};

pub const ORDERS: Table = Table {
    name: "orders",
    cols: &[
        col("id", Ty::Int, Pii::Plain),
        col("customer_id", Ty::Int, Pii::Plain),
        col("customer_email", Ty::Text, Pii::Det("email")),
        col("note", Ty::Text, Pii::Rand),
        col("amount", Ty::Num, Pii::Plain),
        col("status", Ty::Text, Pii::Plain),
    ],
};

pub const PRODUCTS: Table = Table {
    name: "products",
    cols: &[
        col("id", Ty::Int, Pii::Plain),
        col("title", Ty::Text, Pii::Plain),
        col("price", Ty::Num, Pii::Plain),
        col("category", Ty::Text, Pii::Plain),
    ],
};

pub const CONTACTS: Table = Table {
    name: "contacts",
    cols: &[
        col("id", Ty::Int, Pii::Plain),
        col("email", Ty::Text, Pii::Det("cemail")),
        col("nick", Ty::Text, Pii::Rand),
        col("customer_id", Ty::Int, Pii::Plain),
    ],
};

pub const ALL: &[&Table] = &[&CUSTOMERS, &ORDERS, &PRODUCTS, &CONTACTS];

/// Emails: the values of the UNIQUE deterministic column and of the columns sharing its key.
pub const EMAILS: &[&str] = &[
    "ann@example.com",
    "bob@example.com",
    "cy@example.org",
    "dee@x.io",
    "O'Neil@example.com",
    "back\\slash@x.io",
    "ünï@example.com",
    "tab\there@x.io",
    "a",
    "",
    "pct%_under@x.io",
    "dollar$$@x.io",
];

/// Other text values, PII or not: quotes, backslashes, control characters, non-ASCII,
/// the empty string, strings that look like SQL.
pub const WORDS: &[&str] = &[
    "Ann",
    "Bob",
    "O'Brien",
    "naïve",
    "日本語",
    "emoji 🎉",
    "back\\slash",
    "ends with \\",
    "\\'",
    "tab\tx",
    "multi\nline",
    " spaced ",
    "",
    "100%_off",
    "quote\"dq",
    "$$",
    "$q$",
    "x'); DROP TABLE customers; --",
    "Paris",
    "Berlin",
    "paris",
    "NULL",
    "pgcloak_refused_1",
    "a,b",
    "{x}",
];

pub const CITIES: &[&str] = &["Paris", "Berlin", "Oslo", "Zürich", "paris"];
pub const STATUSES: &[&str] = &["new", "paid", "shipped", "void"];

fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn opt(value: Option<&str>) -> String {
    value.map_or("NULL".into(), sql_text)
}

/// The seed rows as INSERT statements with standard literals (run with
/// standard_conforming_strings on, through pgcloak in A and directly in B).
pub fn seed_rows() -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..=10usize {
        let email = (i % 11 != 0).then(|| EMAILS[i % EMAILS.len()]);
        let name = (i != 4).then(|| WORDS[(i * 3) % WORDS.len()]);
        let phone = (i % 3 != 0).then(|| ["+33 1 23", "555-0101", "555-0101", "n/a"][i % 4]);
        out.push(format!(
            "INSERT INTO customers (id, email, name, phone, city, score, tags, meta) VALUES \
             ({i}, {}, {}, {}, {}, {}, '{{a,b{i}}}', '{{\"k\": {i}, \"t\": \"v{}\"}}')",
            opt(email),
            opt(name),
            opt(phone),
            opt(Some(CITIES[i % CITIES.len()])),
            if i == 7 {
                "NULL".into()
            } else {
                (i * 7 % 5).to_string()
            },
            i % 3
        ));
    }
    for i in 1..=16usize {
        let customer = (i % 10) + 1;
        let email = (i % 5 != 0).then(|| EMAILS[customer % EMAILS.len()]);
        let note = (i % 4 != 0).then(|| WORDS[(i * 5) % WORDS.len()]);
        out.push(format!(
            "INSERT INTO orders (id, customer_id, customer_email, note, amount, status) VALUES \
             ({i}, {customer}, {}, {}, {}.{:02}, {})",
            opt(email),
            opt(note),
            i * 3 % 17,
            i * 13 % 100,
            sql_text(STATUSES[i % STATUSES.len()])
        ));
    }
    for i in 1..=6usize {
        out.push(format!(
            "INSERT INTO products (id, title, price, category) VALUES ({i}, {}, {}.50, {})",
            sql_text(WORDS[(i * 2) % WORDS.len()]),
            i * 4,
            sql_text(["a", "b", "c"][i % 3])
        ));
    }
    for i in 1..=8usize {
        let email = (i % 4 != 0).then(|| EMAILS[(i * 2) % EMAILS.len()]);
        out.push(format!(
            "INSERT INTO contacts (id, email, nick, customer_id) VALUES ({i}, {}, {}, {})",
            opt(email),
            opt(Some(WORDS[(i * 7) % WORDS.len()])),
            i % 6 + 1
        ));
    }
    out
}
