//! The seeded generator's core: values, every literal quoting style, bind parameters, and
//! the statement it hands to the runner. The grammar of statements is in `grammar.rs`.
//!
//! The generator never looks at results: statement `i` of seed `s` is the same SQL on every
//! run, so a difference is replayed by its seed and index. Nothing it emits is
//! non-deterministic (no random(), now(), serials, LIMIT without a total order).

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::schema::{Ty, CITIES, EMAILS, STATUSES, WORDS};

/// A value, as the generator means it (rendered as a literal or sent as a parameter).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Num(String),
    TextArr(Vec<Option<String>>),
    Json(String),
}

impl Val {
    /// The value in Postgres's text format (None for NULL).
    pub fn text(&self) -> Option<String> {
        match self {
            Val::Null => None,
            Val::Int(n) => Some(n.to_string()),
            Val::Text(s) | Val::Num(s) | Val::Json(s) => Some(s.clone()),
            Val::TextArr(items) => Some(array_text(items)),
        }
    }
}

/// `{a,"b c",NULL}`: Postgres's text form of a one-dimensional text array.
pub fn array_text(items: &[Option<String>]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            None => "NULL".into(),
            Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// How a statement is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Simple Query: values are literals.
    Simple,
    /// Extended protocol, parameters in text format, types inferred by the server.
    ExtText,
    /// Extended protocol, parameters in binary where the inferred type allows it.
    ExtBinary,
    /// Extended protocol with declared parameter types (one Parse/Bind/Execute round).
    Typed,
}

/// What the runner must do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Query,
    /// COPY ... FROM STDIN with this data.
    CopyIn(String),
    CopyOut,
}

/// One generated statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub class: &'static str,
    pub sql: String,
    pub params: Vec<Val>,
    /// Declared types of the parameters, for [`Mode::Typed`].
    pub types: Vec<Ty>,
    pub mode: Mode,
    pub kind: Kind,
    /// Rows come in an order fixed by ORDER BY on plain unique columns: compare in order.
    pub ordered: bool,
    /// May change rows or schema: the tables are compared afterwards.
    pub writes: bool,
    /// Generated while the generator believed standard_conforming_strings off.
    pub scs_off: bool,
}

/// The generator: a seeded stream of statements over the schema.
pub struct Gen {
    rng: ChaCha8Rng,
    /// The generator's belief about the session's standard_conforming_strings (it is not
    /// told outcomes; a wrong belief only changes what the literals mean, on both sides).
    pub scs_on: bool,
    pub in_tx: bool,
    next_id: i64,
    /// The statement being built: its mode, parameters and their declared types.
    pub mode: Mode,
    pub params: Vec<Val>,
    pub types: Vec<Ty>,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            scs_on: true,
            in_tx: false,
            next_id: 1000,
            mode: Mode::Simple,
            params: Vec::new(),
            types: Vec::new(),
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An id for a new row: usually fresh, sometimes one that exists (conflicts).
    pub fn new_id(&mut self) -> i64 {
        if self.chance(0.15) {
            return self.rng.random_range(1..=12);
        }
        self.next_id += 1;
        self.next_id
    }

    /// An id that probably exists.
    pub fn some_id(&mut self) -> i64 {
        if self.chance(0.1) {
            self.rng.random_range(1000..=self.next_id.max(1001))
        } else {
            self.rng.random_range(1..=16)
        }
    }

    pub fn email(&mut self) -> String {
        self.pick(EMAILS).to_owned()
    }

    pub fn word(&mut self) -> String {
        match self.below(10) {
            0 => self.pick(CITIES).to_owned(),
            1 => self.pick(STATUSES).to_owned(),
            2 => self.email(),
            _ => self.pick(WORDS).to_owned(),
        }
    }

    /// A value for a column of type `ty` (`email`: the column holds emails).
    pub fn value(&mut self, ty: Ty, email: bool) -> Val {
        if self.chance(0.06) {
            return Val::Null;
        }
        match ty {
            Ty::Int => Val::Int(self.rng.random_range(-2..=20)),
            Ty::Num => Val::Num(format!("{}.{:02}", self.below(40), self.below(100))),
            Ty::Text if email => Val::Text(self.email()),
            Ty::Text => Val::Text(self.word()),
            Ty::TextArr => {
                let n = self.below(3);
                Val::TextArr((0..n).map(|_| Some(self.word())).collect())
            }
            Ty::Json => Val::Json(format!(
                "{{\"k\": {}, \"t\": \"v{}\"}}",
                self.below(12),
                self.below(3)
            )),
        }
    }

    /// Starts a statement: picks how it is sent.
    pub fn begin(&mut self, allow_params: bool) {
        self.params.clear();
        self.types.clear();
        self.mode = if !allow_params {
            Mode::Simple
        } else {
            match self.below(10) {
                0..=4 => Mode::Simple,
                5 | 6 => Mode::ExtText,
                7 | 8 => Mode::ExtBinary,
                _ => Mode::Typed,
            }
        };
    }

    /// Finishes a statement started with [`Gen::begin`].
    pub fn finish(
        &mut self,
        class: &'static str,
        sql: String,
        ordered: bool,
        writes: bool,
    ) -> Stmt {
        Stmt {
            class,
            sql,
            params: std::mem::take(&mut self.params),
            types: std::mem::take(&mut self.types),
            mode: self.mode,
            kind: Kind::Query,
            ordered,
            writes,
            scs_off: !self.scs_on,
        }
    }

    /// A value in the statement: a bind parameter (extended modes) or a literal.
    pub fn slot(&mut self, val: Val, ty: Ty) -> String {
        if self.mode != Mode::Simple && self.chance(0.6) {
            // Sometimes the same parameter twice (pgcloak refuses a PII one reused).
            if !self.params.is_empty() && self.chance(0.04) {
                return format!("${}", self.params.len());
            }
            self.params.push(val);
            self.types.push(ty);
            let n = self.params.len();
            return match (self.below(4), ty) {
                (0, Ty::Text) => format!("${n}::text"),
                (1, Ty::Text) => format!("${n}::varchar"),
                (0, Ty::Int) => format!("${n}::int"),
                (0, Ty::TextArr) => format!("${n}::text[]"),
                (0, Ty::Json) => format!("${n}::jsonb"),
                _ => format!("${n}"),
            };
        }
        self.literal(&val, ty)
    }

    /// An email as a literal or parameter.
    pub fn email_slot(&mut self) -> String {
        let v = Val::Text(self.email());
        self.slot(v, Ty::Text)
    }

    /// A word as a literal or parameter.
    pub fn word_slot(&mut self) -> String {
        let v = Val::Text(self.word());
        self.slot(v, Ty::Text)
    }

    /// A literal for `val`, in one of the styles Postgres accepts for it.
    pub fn literal(&mut self, val: &Val, ty: Ty) -> String {
        match val {
            Val::Null => match self.below(3) {
                0 => "NULL::text".into(),
                _ => "NULL".into(),
            },
            Val::Int(n) => match self.below(8) {
                0 => format!("'{n}'"),
                1 => format!("{n}::int"),
                _ if *n < 0 => format!("({n})"),
                _ => n.to_string(),
            },
            Val::Num(s) => s.clone(),
            Val::Text(s) => {
                let lit = self.string(s);
                match (self.below(12), ty) {
                    (0, _) => format!("{lit}::text"),
                    (1, _) => format!("CAST({lit} AS varchar)"),
                    _ => lit,
                }
            }
            Val::TextArr(items) => {
                if self.chance(0.5) {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Some(s) => self.string(s),
                            None => "NULL".into(),
                        })
                        .collect();
                    format!("ARRAY[{}]::text[]", parts.join(", "))
                } else {
                    format!("{}::text[]", self.string(&array_text(items)))
                }
            }
            Val::Json(s) => format!("{}::jsonb", self.string(s)),
        }
    }

    /// A string literal for `s` in a random quoting style, correct for the generator's
    /// belief about standard_conforming_strings.
    pub fn string(&mut self, s: &str) -> String {
        match self.below(40) {
            0..=15 => self.standard(s),
            16..=25 => escape_string(s, self.below(4)),
            26..=29 if !s.contains('$') => format!("$${s}$$"),
            30..=33 if !s.contains("$q$") && !s.ends_with('$') => format!("$q${s}$q$"),
            34..=36 => unicode_string(s, self.chance(0.2)),
            // Continuation: two literals separated by a newline are one.
            37 if s.len() > 1 && s.is_char_boundary(1) => {
                let (a, b) = s.split_at(1);
                format!("{}\n{}", self.standard(a), self.standard(b))
            }
            _ => self.standard(s),
        }
    }

    /// '...' as the session reads it: with standard_conforming_strings off a backslash is
    /// an escape, so it is doubled (and a quote may be written \').
    fn standard(&mut self, s: &str) -> String {
        if self.scs_on {
            format!("'{}'", s.replace('\'', "''"))
        } else {
            let quote = if self.chance(0.5) { "\\'" } else { "''" };
            format!("'{}'", s.replace('\\', "\\\\").replace('\'', quote))
        }
    }
}

/// E'...': backslash escapes; `style` varies how characters are spelled.
fn escape_string(s: &str, style: usize) -> String {
    let mut out = String::from("E'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' if style == 0 => out.push_str("''"),
            '\'' => out.push_str("\\'"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            'a' if style == 1 => out.push_str("\\x61"),
            'e' if style == 2 => out.push_str("\\145"),
            c if !c.is_ascii() && style == 3 => {
                let n = c as u32;
                if n > 0xffff {
                    out.push_str(&format!("\\U{n:08x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// U&'...': Unicode escapes for non-ASCII characters (and the letter a), optionally with
/// another escape character (UESCAPE).
fn unicode_string(s: &str, uescape: bool) -> String {
    let esc = if uescape { '!' } else { '\\' };
    let mut out = String::from("U&'");
    for c in s.chars() {
        let n = c as u32;
        if c == esc {
            out.push(esc);
            out.push(esc);
        } else if c == '\'' {
            out.push_str("''");
        } else if n > 0xffff {
            out.push_str(&format!("{esc}+{n:06x}"));
        } else if !c.is_ascii() || c == 'a' {
            out.push_str(&format!("{esc}{n:04x}"));
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    if uescape {
        out.push_str(" UESCAPE '!'");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_statements() {
        let mut a = Gen::new(7);
        let mut b = Gen::new(7);
        for _ in 0..50 {
            let v = Val::Text("O'Brien \\ 🎉".into());
            assert_eq!(a.string("x"), b.string("x"));
            assert_eq!(a.literal(&v, Ty::Text), b.literal(&v, Ty::Text));
        }
    }
}
