//! Statement analysis: which literals and bind parameters of a statement are bound for PII
//! columns, and which uses of PII columns cannot work on ciphertext and must be refused.
//!
//! Knows nothing of sockets or keys: it turns SQL text plus the [`Policy`] into an
//! [`Analysis`], which the proxy applies. Most statements name no configured table and
//! return [`Analysis::Plain`] after a substring check, without being parsed.

mod analyzer;
mod cache;
mod ddl;
mod depth;
mod insert_values;
mod kinds;
mod levels;
mod lexing;
mod maintenance;
mod merge;
mod names;
mod operand;
mod queries;
mod splice;
#[cfg(test)]
mod tests;
mod type_names;
mod type_text;
mod unnest;

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{TokenWithSpan, Tokenizer, TokenizerError};

use crate::policy::{ColumnId, Policy};

pub use cache::{AnalysisCache, DEFAULT_CACHE_BYTES};
pub use splice::{literal_value, splice};
pub use type_names::type_name;

/// What the proxy must do with one SQL string (one statement, or several in a simple Query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Analysis {
    /// Names no PII table: forward untouched.
    Plain,
    /// Touches a PII table: encrypt these values, decrypt results.
    Plan(Arc<StatementPlan>),
    /// Cannot be run safely on ciphertext: answer with this error instead.
    Refused(Refusal),
}

/// The values to encrypt in a statement that touches a PII table. It describes where the
/// values are, never what they are: a plan holds no plaintext, so it can be cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementPlan {
    /// SQL literals bound for PII columns, in text order. Their values are read from the
    /// statement text when it is rewritten ([`literal_value`]).
    pub literals: Vec<LiteralSlot>,
    /// Bind parameters (`$n`, 1-based) bound for PII columns.
    pub params: BTreeMap<usize, ParamSlot>,
    /// `COPY table FROM STDIN` into a PII table.
    pub copy_in: Option<CopyInPlan>,
    /// `COPY ... TO STDOUT` reading a PII table: its rows are decrypted in this format.
    pub copy_out: Option<CopyOptions>,
    /// `COPY table TO STDOUT` of a PII table: which fields hold PII columns (a value there
    /// that is not an envelope is refused). None for `COPY (query) TO`.
    pub copy_out_fields: Option<CopyOutFields>,
    /// DDL naming a PII table: where its columns live may change.
    pub changes_schema: bool,
    /// Prepared statements run by SQL `EXECUTE name(args)`: their arguments are SQL values
    /// pgcloak cannot bind, so the session refuses this when `name` binds a PII parameter.
    pub executes: Vec<String>,
    /// An ordinary '...' literal of the string contains a backslash: Postgres lexes the
    /// string differently when `standard_conforming_strings` is off (the backslash escapes),
    /// so this plan holds only if the session has it on.
    pub lexing_depends_on_scs: bool,
    /// The distinct PII columns of the slots, which share them (one allocation per column,
    /// not per slot: a multi-row INSERT has thousands of slots for a few columns).
    pub columns: Vec<Arc<ColumnId>>,
    /// Every occurrence of a parameter in `params`, and how it is used: while a column's
    /// values may be stored in more than one form (several master keys, or plaintext under
    /// `migrating`), a search must match each form, which rewrites the statement there.
    pub param_uses: Vec<ParamUse>,
    /// Deterministic columns whose values the statement compares with each other rather
    /// than with a search value (`a.email = b.email`, GROUP BY, DISTINCT, UNION, a UNIQUE
    /// constraint): right only while each value has one stored form.
    pub compared_by_ciphertext: Vec<Arc<ColumnId>>,
    /// Byte ranges of type names in casts to a typed PII column's declared type around a
    /// value bound for it (`date` in `$1::date`, `'2020-01-02'::date`, `DATE '2020-01-02'`,
    /// `CAST($1 AS date)`, `$1::date[]`): in Postgres the column is text, so the rewrite puts
    /// `text` there. Sorted, not overlapping each other or any literal's range. A range is
    /// the type's words and modifier (`timestamp with time zone`, `numeric(10,2)`), never an
    /// array's `[]`; for `DATE '...'` it is the `DATE` before the literal. A cast inside a
    /// search operand (see [`LiteralSlot::operand`]) is listed too: a rewrite that replaces
    /// the operand drops the casts inside it.
    pub casts: Vec<std::ops::Range<usize>>,
}

impl StatementPlan {
    /// The plan's shared handle on `id`.
    pub(crate) fn intern(&mut self, id: &ColumnId) -> Arc<ColumnId> {
        if let Some(found) = self.columns.iter().find(|c| ***c == *id) {
            return found.clone();
        }
        let column = Arc::new(id.clone());
        self.columns.push(column.clone());
        column
    }

    /// Whether the plan says nothing about a value in the statement text that is bound for
    /// a PII column (no literal slots, no `EXECUTE name(args)`): then its text holds no
    /// plaintext of PII, and it may be kept as a cache key.
    pub fn holds_no_pii_values(&self) -> bool {
        self.literals.is_empty() && self.executes.is_empty()
    }
}

/// A literal in the SQL text to replace by the ciphertext of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralSlot {
    /// Byte range of the literal (quotes and any `E` prefix included) in the SQL text.
    pub range: std::ops::Range<usize>,
    /// How its value is written there.
    pub kind: LiteralKind,
    pub column: Arc<ColumnId>,
    /// `col = ANY('{a,b}')`: the literal is an array whose elements are encrypted.
    pub array: bool,
    /// Where the value is searched for (None: it is written).
    pub search: Option<Search>,
    /// For [`Search::Equal`] and [`Search::NotEqual`]: the compared operand, the literal with
    /// the parentheses and casts around it (to text, or to a typed column's declared type,
    /// whose type names are in [`StatementPlan::casts`] too), which a search for several
    /// forms replaces (None when it could not be found in the text).
    pub operand: Option<std::ops::Range<usize>>,
}

/// How a search value is compared with its column, which decides how the statement can be
/// rewritten to match every stored form of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// `col = v`, and `col = ANY(v)` of an array: becomes `col = ANY(<every form>)`.
    Equal,
    /// `col <> v`: becomes `col <> ALL(<every form>)`.
    NotEqual,
    /// An item of `col IN (...)` or `col = ANY(ARRAY[...])`: becomes one item per form.
    ListItem,
    /// Any other comparison (`v = col`, `IS DISTINCT FROM`, with a subquery): matches one
    /// form only.
    Fixed,
}

/// One occurrence of a parameter bound for a PII column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamUse {
    /// `$n`.
    pub n: usize,
    /// Byte range of `$n` in the SQL text.
    pub range: std::ops::Range<usize>,
    /// Where it is searched for (None: it is written).
    pub search: Option<Search>,
    /// As [`LiteralSlot::operand`].
    pub operand: Option<std::ops::Range<usize>>,
}

/// How a literal bound for a PII column is written: what [`literal_value`] unescapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// `'...'`
    Quoted,
    /// `E'...'`, with backslash escapes.
    Escaped,
    /// `$tag$...$tag$`
    DollarQuoted,
    /// A number literal, as written: for a text column only in the form it stores verbatim
    /// (`42`, `1.50`), for an integer, numeric, real or double precision column any
    /// (`1e5`, `007`, `.5`), which the cloak canonicalises. [`literal_value`]: the text.
    Number,
    /// A unary minus on a number literal (`-5`, `- 5`; number-typed columns only): the range
    /// runs from the minus to the number's end. [`literal_value`]: `-` and the number (`-5`).
    NegativeNumber,
    /// `true` or `false` in any case (boolean columns only). [`literal_value`]: `true` or
    /// `false`.
    Boolean,
}

/// A bind parameter whose value must be encrypted for `column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSlot {
    pub column: Arc<ColumnId>,
    /// `col = ANY($n)`: the parameter is an array whose elements are encrypted.
    pub array: bool,
    /// The type the client declared the parameter with in Parse, when it is not the
    /// column's own but one Postgres would convert to it (`smallint` for an `integer`
    /// column): the value is read as that type, then converted. None: read as the column's.
    pub declared: Option<crate::pgtype::PgType>,
}

/// COPY FROM STDIN into a PII table: which fields of each row to encrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInPlan {
    pub options: CopyOptions,
    /// For each field position of a row: the PII column it fills, if any.
    pub fields: Vec<Option<ColumnId>>,
}

/// The PII fields of a `COPY table TO`'s rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutFields {
    /// `COPY t (a, b) TO`: for each field, the PII column it holds, if any.
    Listed(Vec<Option<ColumnId>>),
    /// `COPY t TO`: every column of (schema, table); the positions come from the catalog.
    AllOf(String, String),
}

/// The data format of a COPY, as its options say (None: the format's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    pub delimiter: Option<char>,
    pub null: Option<String>,
    pub header: bool,
    pub quote: Option<char>,
    pub escape: Option<char>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CopyFormat {
    #[default]
    Text,
    Csv,
}

/// A refused statement: the SQLSTATE and a message naming the column and the fix. The
/// message never contains a value from the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub(crate) fn unsupported(message: String) -> Refusal {
        Refusal {
            code: "0A000",
            message,
        }
    }
}

/// Analyses one SQL string.
pub fn analyze(sql: &str, policy: &Policy) -> Analysis {
    if !policy.may_touch(sql) {
        return Analysis::Plain;
    }
    if sql.to_lowercase().contains("u&\"") {
        return Analysis::Refused(Refusal::unsupported(
            "this statement contains a Unicode-escaped identifier (U&\"...\"), which pgcloak does not resolve and which may name a table with encrypted columns; write the name plainly".into(),
        ));
    }
    // Tokenized once: for the depth bound, then for the parser.
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location();
    let depth = tokens.as_ref().map_or(0, |tokens| depth::bound(tokens));
    if depth > depth::MAX_DEPTH {
        return Analysis::Refused(depth::too_deep());
    }
    // The tree is walked and dropped inside: both recurse once per level.
    depth::with_stack_for(depth, || parse_and_analyze(sql, tokens, policy))
}

fn parse_and_analyze(
    sql: &str,
    tokens: Result<Vec<TokenWithSpan>, TokenizerError>,
    policy: &Policy,
) -> Analysis {
    let parsed = tokens.map_err(ParserError::from).and_then(|tokens| {
        Parser::new(&PostgreSqlDialect {})
            .with_tokens_with_locations(tokens)
            .parse_statements()
    });
    let statements = match parsed {
        Ok(statements) => statements,
        Err(_) if maintenance::is_lone_maintenance(sql) => return Analysis::Plain,
        Err(_) => {
            // The parser's message quotes the SQL, which may hold PII: do not pass it on.
            let why = if policy.names_a_table(sql) {
                "it names a table with encrypted columns"
            } else {
                "it contains EXECUTE, which may pass values to encrypted columns"
            };
            return Analysis::Refused(Refusal::unsupported(format!(
                "pgcloak cannot parse this statement, and {why}, so it is refused rather than passed on unchecked; rewrite it in plain SQL (INSERT/UPDATE/DELETE/SELECT/COPY) or run it on a connection that bypasses pgcloak"
            )));
        }
    };
    analyzer::analyze_statements(sql, &statements, policy)
}
