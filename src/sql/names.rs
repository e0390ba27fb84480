//! Resolving names in a statement to configured tables and PII columns: which tables a
//! statement mentions, under which aliases, and which column a reference means.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::levels::Outputs;
use crate::crypto::Mode;
use crate::policy::{ColumnId, Policy};

/// A configured table: (schema, table).
pub(crate) type TableKey = (String, String);

/// A PII column a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PiiColumn {
    pub id: ColumnId,
    pub mode: Mode,
}

/// Postgres folds unquoted identifiers to lower case.
pub(crate) fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The identifier parts of a name (`schema.table` → ["schema", "table"]), normalised.
pub(crate) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => normalize(ident),
            // A computed name never matches a configured table.
            ObjectNamePart::Function(_) => String::from("\0"),
        })
        .collect()
}

/// The configured tables a statement mentions, with the names it can refer to them by.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// Qualifier (table name or alias) → configured tables it may mean.
    qualifiers: BTreeMap<String, BTreeSet<TableKey>>,
    tables: BTreeSet<TableKey>,
    /// Subqueries and CTEs that show PII columns: name → output column → what it shows.
    derived: BTreeMap<String, BTreeMap<String, PiiColumn>>,
    /// Names of subqueries, CTEs and their aliases that carry a PII column (named or not):
    /// a whole-row reference to one would carry ciphertext out.
    carriers: BTreeSet<String>,
}

impl Scope {
    /// Collects every configured table in `statement` (subqueries and CTEs included).
    /// Flattening all scopes into one is conservative: a name may be taken for a PII
    /// column where Postgres would not, never the other way round.
    pub(crate) fn of(statement: &Statement, policy: &Policy) -> Scope {
        let mut collector = Collector {
            policy,
            scope: Scope::default(),
        };
        let _ = statement.visit(&mut collector);
        // COPY's table is not visited as a relation.
        if let Statement::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } = statement
        {
            if let Some(table) = configured_table(table_name, policy) {
                collector.scope.add(table, None);
            }
        }
        // Nor are the tables a foreign key refers to.
        for name in super::ddl::referred_tables(statement) {
            if let Some(table) = configured_table(name, policy) {
                collector.scope.add(table, None);
            }
        }
        collector.scope
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// A configured table the statement mentions.
    pub(crate) fn first_table(&self) -> Option<TableKey> {
        self.tables.iter().next().cloned()
    }

    /// Records the PII columns a subquery or CTE called `name` shows, as the walk finds them.
    pub(crate) fn derived(&mut self, name: &str, outputs: &Outputs) {
        if outputs.first_pii().is_some() {
            self.carriers.insert(name.to_owned());
        }
        for (column, output) in &outputs.columns {
            if let (Some(column), Some(pii)) = (column, output.column()) {
                self.derived
                    .entry(name.to_owned())
                    .or_default()
                    .insert(column.clone(), pii.clone());
            }
        }
    }

    /// Adds `table` under `qualifier` (e.g. `excluded` in ON CONFLICT).
    pub(crate) fn alias(&mut self, qualifier: &str, table: TableKey) {
        self.qualifiers
            .entry(qualifier.to_owned())
            .or_default()
            .insert(table);
    }

    fn add(&mut self, table: TableKey, alias: Option<String>) {
        self.alias(&table.1.clone(), table.clone());
        self.alias(&format!("{}.{}", table.0, table.1), table.clone());
        if let Some(alias) = alias {
            self.alias(&alias, table.clone());
        }
        self.tables.insert(table);
    }

    /// The PII column(s) an expression names, if it is a plain column reference.
    /// More than one means the name is ambiguous between configured tables.
    pub(crate) fn resolve(&self, expr: &Expr, policy: &Policy) -> Vec<PiiColumn> {
        let (tables, column, derived): (Vec<&TableKey>, String, Vec<PiiColumn>) = match expr {
            Expr::Identifier(ident) => {
                let column = normalize(ident);
                let derived = self
                    .derived
                    .values()
                    .filter_map(|shown| shown.get(&column).cloned())
                    .collect();
                (self.tables.iter().collect(), column, derived)
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let Some((column, qualifier)) = parts.split_last() else {
                    return Vec::new();
                };
                let qualifier = qualifier
                    .iter()
                    .map(normalize)
                    .collect::<Vec<_>>()
                    .join(".");
                let column = normalize(column);
                let derived = self
                    .derived
                    .get(&qualifier)
                    .and_then(|shown| shown.get(&column).cloned())
                    .into_iter()
                    .collect();
                match self.qualifiers.get(&qualifier) {
                    Some(tables) => (tables.iter().collect(), column, derived),
                    None => (Vec::new(), column, derived),
                }
            }
            _ => return Vec::new(),
        };
        let mut found: Vec<PiiColumn> = tables
            .into_iter()
            .filter_map(|(schema, table)| {
                let mode = *policy.table(Some(schema), table)?.columns.get(&column)?;
                let id = ColumnId {
                    schema: schema.clone(),
                    table: table.clone(),
                    column: column.clone(),
                };
                Some(PiiColumn { id, mode })
            })
            .collect();
        found.extend(derived);
        found
    }

    /// True when `expr` is a bare name or alias of a configured table, or of a subquery or
    /// CTE carrying a PII column, used as a value: a whole-row reference, whose text would
    /// carry ciphertext out undecrypted.
    pub(crate) fn is_whole_row(&self, expr: &Expr) -> bool {
        let carries_pii =
            |name: &str| self.qualifiers.contains_key(name) || self.carriers.contains(name);
        let names_pii_table = |prefix: &ObjectName| carries_pii(&name_parts(prefix).join("."));
        match expr {
            Expr::Identifier(ident) => carries_pii(&normalize(ident)),
            // `u.*` inside an expression (`ROW(u.*)`) or as a function argument
            // (`to_json(u.*)`).
            Expr::QualifiedWildcard(prefix, _) => names_pii_table(prefix),
            Expr::Function(function) => match &function.args {
                FunctionArguments::List(list) => list.args.iter().any(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(prefix))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::QualifiedWildcard(prefix),
                        ..
                    } => names_pii_table(prefix),
                    _ => false,
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The configured table a name means, if any (`users` → public.users).
pub(crate) fn configured_table(name: &ObjectName, policy: &Policy) -> Option<TableKey> {
    configured_parts(&name_parts(name), policy)
}

/// The configured table the normalised parts of a name mean, if any.
fn configured_parts(parts: &[String], policy: &Policy) -> Option<TableKey> {
    let (schema, table) = match parts {
        // pgcloak does not follow search_path: an unqualified name is taken for the
        // configured table of that name (public first), so a session whose search_path
        // finds it elsewhere still has its values encrypted.
        [table] => (
            policy.schema_of_unqualified(table)?.to_owned(),
            table.clone(),
        ),
        [schema, table] => (schema.clone(), table.clone()),
        // database.schema.table
        [_, schema, table] => (schema.clone(), table.clone()),
        _ => return None,
    };
    policy.table(Some(&schema), &table)?;
    Some((schema, table))
}

/// The first configured table named anywhere in `text` by an identifier (`users`,
/// `billing.cards`, `"Users"` quoted as configured), whatever the grammar makes of it: how
/// statements pgcloak does not model are found to name a PII table.
pub(crate) fn named_table(text: &str, policy: &Policy) -> Option<TableKey> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .ok()?;
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let ident = |token: &Token| match token {
        Token::Word(word) => Some(normalize(&Ident {
            value: word.value.clone(),
            quote_style: word.quote_style,
            span: sqlparser::tokenizer::Span::empty(),
        })),
        _ => None,
    };
    for (i, token) in words.iter().enumerate() {
        let Some(first) = ident(token) else { continue };
        let mut parts = vec![first];
        let mut j = i + 1;
        while words.get(j) == Some(&&Token::Period) {
            match words.get(j + 1).and_then(|t| ident(t)) {
                Some(part) => parts.push(part),
                None => break,
            }
            j += 2;
        }
        // Every suffix: `db.schema.table`, `schema.table`, `table`, and a column's
        // `table.column` prefix.
        for end in (1..=parts.len()).rev() {
            for start in (0..end).rev() {
                if let Some(table) = configured_parts(&parts[start..end], policy) {
                    return Some(table);
                }
            }
        }
    }
    None
}

struct Collector<'a> {
    policy: &'a Policy,
    scope: Scope,
}

impl Visitor for Collector<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(table) = configured_table(relation, self.policy) {
            self.scope.add(table, None);
        }
        ControlFlow::Continue(())
    }

    // `TABLE users` names its table by identifiers, not as a relation.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let mut bodies = vec![query.body.as_ref()];
        while let Some(body) = bodies.pop() {
            match body {
                SetExpr::Table(table) => {
                    let table = super::queries::table_name(table)
                        .and_then(|name| configured_table(&name, self.policy));
                    if let Some(table) = table {
                        self.scope.add(table, None);
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    bodies.push(left);
                    bodies.push(right);
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias: Some(alias),
            ..
        } = factor
        {
            if let Some(table) = configured_table(name, self.policy) {
                self.scope.add(table, Some(normalize(&alias.name)));
            }
        }
        ControlFlow::Continue(())
    }
}
