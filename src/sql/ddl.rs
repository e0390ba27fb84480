//! DDL on configured tables: which constraints, indexes and defaults still hold when a
//! column stores ciphertext. UNIQUE, PRIMARY KEY and indexes work on deterministic
//! ciphertext (equal values, equal ciphertexts); on randomized ciphertext a uniqueness
//! constraint would never fire, so it is refused. A DEFAULT other than NULL would be stored
//! in clear, a foreign key compares ciphertexts of two differently keyed columns, and CHECK or
//! generated expressions need the plaintext: all refused, naming the column.

use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, CharacterLength, ColumnDef,
    ColumnOption, CreateIndex, CreateTable, CreateView, DataType, Expr, ForeignKeyConstraint,
    IndexColumn, ObjectName, Statement, TableConstraint,
};

use super::analyzer::{bound, Bound, Result, Walk};
use super::names::{configured_table, normalize, PiiColumn, TableKey};
use super::Refusal;
use crate::crypto::{envelope_len, Mode};
use crate::pgtype::{Kind, PgType};

impl Walk<'_> {
    pub(super) fn create_table(&mut self, create: &CreateTable) -> Result {
        let table = configured_table(&create.name, self.policy);
        let parents = create
            .partition_of
            .iter()
            .chain(create.inherits.iter().flatten());
        for parent in parents {
            match (configured_table(parent, self.policy), &table) {
                (Some(parent), None) => return Err(child_not_configured(&create.name, &parent)),
                (None, Some(child)) => return Err(parent_not_configured(child, parent)),
                _ => {}
            }
        }
        for column in &create.columns {
            self.column_def(column, table.as_ref())?;
        }
        for constraint in &create.constraints {
            self.table_constraint(constraint, table.as_ref())?;
        }
        if let Some(query) = &create.query {
            if let Some(column) = table.as_ref().and_then(|t| self.first_pii(t)) {
                return Err(Refusal::unsupported(format!(
                    "CREATE TABLE ... AS SELECT into {} cannot be encrypted by pgcloak; create the table, then insert the rows with VALUES and parameters from the application",
                    column.id
                )));
            }
            let outputs = self.query(query)?;
            self.not_copied(&outputs, &format!("CREATE TABLE {} AS", create.name))?;
        }
        Ok(())
    }

    pub(super) fn create_index(&mut self, index: &CreateIndex) -> Result {
        let table = configured_table(&index.table_name, self.policy);
        let what = if index.unique {
            "a UNIQUE index"
        } else {
            "an index"
        };
        self.index_columns(&index.columns, index.unique, what, table.as_ref())?;
        if let Some(predicate) = &index.predicate {
            self.predicate(predicate)?;
        }
        for expr in &index.with {
            self.other(expr)?;
        }
        Ok(())
    }

    pub(super) fn alter_table(&mut self, alter: &AlterTable) -> Result {
        let table = configured_table(&alter.name, self.policy);
        for operation in &alter.operations {
            match operation {
                AlterTableOperation::AddConstraint { constraint, .. } => {
                    self.table_constraint(constraint, table.as_ref())?
                }
                AlterTableOperation::AddColumn { column_def, .. } => {
                    self.column_def(column_def, table.as_ref())?
                }
                AlterTableOperation::AlterColumn {
                    column_name,
                    op:
                        AlterColumnOperation::SetDataType {
                            data_type, using, ..
                        },
                } => {
                    let column = table
                        .as_ref()
                        .and_then(|t| self.column(t, &normalize(column_name)));
                    if let Some(column) = column {
                        column_type(&column, data_type, &self.declared_type(&column))?;
                        if let Some(using) = using {
                            self.conversion(&column, using)?;
                        }
                    }
                }
                AlterTableOperation::AlterColumn {
                    column_name,
                    op: AlterColumnOperation::SetDefault { value },
                } => match table
                    .as_ref()
                    .and_then(|t| self.column(t, &normalize(column_name)))
                {
                    Some(column) => self.default_value(&column, value)?,
                    None => self.other(value)?,
                },
                // The policy names tables and columns, and their keys derive from those
                // names: renamed, they would no longer be recognised nor decrypt.
                AlterTableOperation::RenameTable { .. }
                | AlterTableOperation::RenameColumn { .. }
                    if self.renames_pii(operation, table.as_ref()) =>
                {
                    return Err(Refusal::unsupported(format!(
                        "renaming {} or its PII columns through pgcloak would leave the policy naming what no longer exists, and statements on the new name would not be encrypted; pgcloak's keys derive from the names, so keep them, or copy the data into a new table through pgcloak",
                        alter.name
                    )));
                }
                AlterTableOperation::AttachPartitionOf { partition, .. } => {
                    match (&table, configured_table(partition, self.policy)) {
                        (Some(parent), None) => {
                            return Err(child_not_configured(partition, parent))
                        }
                        (None, Some(child)) => {
                            return Err(parent_not_configured(&child, &alter.name))
                        }
                        _ => {}
                    }
                }
                AlterTableOperation::Inherit { parent } => {
                    match (configured_table(parent, self.policy), &table) {
                        (Some(parent), None) => {
                            return Err(child_not_configured(&alter.name, &parent))
                        }
                        (None, Some(child)) => return Err(parent_not_configured(child, parent)),
                        _ => {}
                    }
                }
                // Anything else is checked by the final walk over every reference.
                _ => {}
            }
        }
        Ok(())
    }

    /// `ALTER COLUMN c TYPE text USING c::text` (Django's AlterField, Knex's `.alter()`):
    /// the stored text is kept as it is, which is all Postgres may do with ciphertext.
    fn conversion(&mut self, column: &PiiColumn, using: &Expr) -> Result {
        let same = self.pii(using).is_some_and(|c| c.id == column.id);
        if same && self.recognise(using) {
            return Ok(());
        }
        if let Bound::Null = bound(using) {
            return Ok(());
        }
        // Django's AlterField to CharField(max_length=n) and Knex's `t.string(c, n).alter()`
        // send `USING c::varchar(n)`: it keeps the text but may cut it, so it gets its own fix.
        if let Some(length) = length_cast(using)
            .filter(|(e, _)| self.pii(e).is_some_and(|c| c.id == column.id))
            .map(|(_, n)| n)
        {
            return Err(Refusal::unsupported(format!(
                "ALTER COLUMN {c} TYPE ... USING {c}::varchar({length}) is refused by pgcloak: it would silently cut the ciphertexts of encrypted column {} longer than {length} characters; leave out USING (Postgres then refuses values that do not fit), or make the column text (a Django TextField, Knex's t.text('{c}').alter())",
                column.id,
                c = column.id.column
            )));
        }
        Err(Refusal::unsupported(format!(
            "ALTER COLUMN {c} TYPE ... USING an expression would compute new values of {} in Postgres, from its ciphertext; only `USING {c}` or `USING {c}::text` (the stored text, unchanged) work: convert the values in the application and write them back through pgcloak",
            column.id,
            c = column.id.column
        )))
    }

    fn renames_pii(&self, operation: &AlterTableOperation, table: Option<&TableKey>) -> bool {
        match (operation, table) {
            (AlterTableOperation::RenameTable { .. }, Some(_)) => true,
            (
                AlterTableOperation::RenameColumn {
                    old_column_name, ..
                },
                Some(table),
            ) => self.column(table, &normalize(old_column_name)).is_some(),
            _ => false,
        }
    }

    /// The text range of a column definition's type when it is the typed PII column's
    /// declared type (same type and modifier), found right after the column's name.
    /// Whether a column definition's type is the typed PII column's declared type (same
    /// type and modifier), found right after the column's name: then it is written as
    /// `text`.
    fn declared_type_written(&mut self, def: &ColumnDef, declared: &PgType) -> bool {
        let printed = def.data_type.to_string();
        declared.kind() != Kind::Text
            && PgType::parse(&printed).is_ok_and(|ty| ty == *declared)
            && self.type_as_text_after(def.name.span, &printed)
    }

    fn column_def(&mut self, def: &ColumnDef, table: Option<&TableKey>) -> Result {
        let pii = table.and_then(|t| self.column(t, &normalize(&def.name)));
        for option in &def.options {
            if let ColumnOption::ForeignKey(key) = &option.option {
                self.foreign_key(std::slice::from_ref(&pii), key)?;
            }
        }
        let Some(column) = pii else {
            return Ok(());
        };
        let declared = self.declared_type(&column);
        // `dob date` for a column the policy declares `type: date` (what an ORM's migration
        // writes): created as text, which the application still sees as date.
        if !self.declared_type_written(def, &declared) {
            column_type(&column, &def.data_type, &declared)?;
        }
        for option in &def.options {
            match &option.option {
                ColumnOption::Default(value) => self.default_value(&column, value)?,
                ColumnOption::Unique(_) => self.uniqueness(&column, "UNIQUE")?,
                ColumnOption::PrimaryKey(_) => self.uniqueness(&column, "PRIMARY KEY")?,
                ColumnOption::Generated { .. }
                | ColumnOption::Materialized(_)
                | ColumnOption::Alias(_) => {
                    return Err(Refusal::unsupported(format!(
                        "{} cannot be a generated column: pgcloak encrypts the values written to it, and Postgres would compute this one from plaintext and store it in clear",
                        column.id
                    )))
                }
                // CHECK and other expressions: their references to the column are refused
                // by the final walk.
                _ => {}
            }
        }
        Ok(())
    }

    fn table_constraint(
        &mut self,
        constraint: &TableConstraint,
        table: Option<&TableKey>,
    ) -> Result {
        match constraint {
            TableConstraint::Unique(unique) => {
                self.index_columns(&unique.columns, true, "UNIQUE", table)
            }
            TableConstraint::PrimaryKey(key) => {
                self.index_columns(&key.columns, true, "PRIMARY KEY", table)
            }
            TableConstraint::ForeignKey(key) => {
                let own: Vec<Option<PiiColumn>> = key
                    .columns
                    .iter()
                    .map(|name| table.and_then(|t| self.column(t, &normalize(name))))
                    .collect();
                self.foreign_key(&own, key)
            }
            _ => Ok(()),
        }
    }

    /// The columns of an index or a UNIQUE/PRIMARY KEY constraint: a PII column may be one
    /// when it is deterministic, or, outside a uniqueness constraint, randomized (an index
    /// on random ciphertext is useless but harmless). Expressions stay unrecognised.
    fn index_columns(
        &mut self,
        columns: &[IndexColumn],
        unique: bool,
        what: &str,
        table: Option<&TableKey>,
    ) -> Result {
        if table.is_none() {
            return Ok(());
        }
        for column in columns {
            let expr = &column.column.expr;
            if let Some(pii) = self.pii(expr) {
                if unique {
                    self.uniqueness(&pii, what)?;
                }
                self.recognise(expr);
            }
        }
        Ok(())
    }

    fn uniqueness(&self, column: &PiiColumn, what: &str) -> Result {
        match column.mode {
            Mode::Deterministic => {
                self.compared_by_ciphertext(column);
                Ok(())
            }
            Mode::Randomized => Err(Refusal::unsupported(format!(
                "{what} on {} cannot work: the column is encrypted in randomized mode, so equal values have different ciphertexts and duplicates would never be detected; make it `deterministic` in the pgcloak policy, or drop the constraint",
                column.id
            ))),
        }
    }

    fn default_value(&mut self, column: &PiiColumn, value: &sqlparser::ast::Expr) -> Result {
        match bound(value) {
            Bound::Null => Ok(()),
            _ => Err(Refusal::unsupported(format!(
                "a DEFAULT for {} would be stored in clear, because Postgres fills it in without pgcloak seeing the value; drop the DEFAULT and write the value from the application",
                column.id
            ))),
        }
    }

    /// A foreign key holds on ciphertext only between deterministic columns sharing a key
    /// (`same_key_as`): each referencing column must match its referred column that way, or
    /// both be plain. `own`: the PII column (or None) of each referencing column.
    fn foreign_key(&self, own: &[Option<PiiColumn>], key: &ForeignKeyConstraint) -> Result {
        let referred_table = configured_table(&key.foreign_table, self.policy);
        for (i, own) in own.iter().enumerate() {
            let referred = key.referred_columns.get(i).and_then(|name| {
                referred_table
                    .as_ref()
                    .and_then(|t| self.column(t, &normalize(name)))
            });
            match (own, &referred) {
                (None, None) => {}
                (Some(a), Some(b)) if a.mode == Mode::Deterministic && self.same_key(a, b) => {
                    self.compared_by_ciphertext(a);
                    self.compared_by_ciphertext(b);
                }
                (Some(column), _) | (None, Some(column)) => return Err(foreign_key(column)),
            }
        }
        Ok(())
    }

    /// CREATE [MATERIALIZED] VIEW: its query is analysed like any SELECT. A view that shows
    /// PII columns must be in the policy (with `same_key_as`): pgcloak recognises a statement's
    /// PII columns by its table names, so values written through an unnamed view would pass
    /// in clear and searches on it would silently compare plaintext with ciphertext.
    pub(super) fn create_view(&mut self, view: &CreateView) -> Result {
        let outputs = self.query(&view.query)?;
        if configured_table(&view.name, self.policy).is_some() {
            return Ok(());
        }
        match outputs.first_pii().map(|column| &column.id) {
            Some(column) => Err(Refusal::unsupported(format!(
                "the view {} shows {column}, but is not in the pgcloak policy: searches on it would compare plaintext with ciphertext and values written through it would be stored in clear; add it under `tables` with its PII columns and `same_key_as: <the column each shows>`, then create it",
                view.name
            ))),
            None => Ok(()),
        }
    }

    fn first_pii(&self, table: &TableKey) -> Option<PiiColumn> {
        let columns = &self.policy.table(Some(&table.0), &table.1)?.columns;
        let name = columns.keys().next()?;
        self.column(table, name)
    }
}

/// The type a PII column is created or altered with must store the envelope as it is:
/// `text`, or `varchar` (Postgres refuses values over a length limit, loudly). `citext`
/// would compare ciphertexts case-insensitively, `char(n)` pads them, other types cannot
/// hold them.
/// A typed column (`declared`, from the policy) is text in Postgres all the same.
fn column_type(column: &PiiColumn, data_type: &DataType, declared: &PgType) -> Result {
    let length = match data_type {
        DataType::Text | DataType::Varchar(None) | DataType::CharacterVarying(None) => None,
        DataType::Varchar(Some(length)) | DataType::CharacterVarying(Some(length)) => {
            match length {
                CharacterLength::IntegerLength { length, .. } => Some(*length),
                CharacterLength::Max => None,
            }
        }
        _ => {
            let seen = if declared.kind() == Kind::Text {
                String::new()
            } else {
                format!(
                    "; the application still sees it as {}, the type the pgcloak policy declares",
                    declared.name()
                )
            };
            return Err(Refusal::unsupported(format!(
                "{} is encrypted by pgcloak and its ciphertext is text: declare it as text (or varchar), not {}{seen}",
                column.id,
                data_type.to_string().to_lowercase()
            )));
        }
    };
    let Some(length) = length.map(|l| usize::try_from(l).unwrap_or(usize::MAX)) else {
        return Ok(());
    };
    if length >= envelope_len(MIN_PLAINTEXT_BYTES, column.mode) {
        return Ok(());
    }
    let (mode, overhead) = match column.mode {
        Mode::Randomized => ("randomized", 28),
        Mode::Deterministic => ("deterministic", 16),
    };
    Err(Refusal::unsupported(format!(
        "{} cannot be varchar({length}): pgcloak stores each value as an envelope longer than the value (16 + ⌈4·(n + {overhead})/3⌉ characters for n bytes in {mode} mode), so a one-character value (up to {MIN_PLAINTEXT_BYTES} bytes in UTF-8) needs varchar({}), and values of up to {length} bytes need varchar({}); declare it text, or varchar(n) sized for the envelope (docs/FORMAT.md)",
        column.id,
        envelope_len(MIN_PLAINTEXT_BYTES, column.mode),
        envelope_len(length, column.mode),
    )))
}

/// The shortest plaintext a `varchar(n)` PII column must hold: one character of any script
/// (4 bytes in UTF-8). A column that cannot hold that is certainly a mistake; longer limits
/// are the application's choice (`pgcloak check` prints the longest plaintext each holds).
const MIN_PLAINTEXT_BYTES: usize = 4;

/// `expr::varchar(n)` (in parentheses or not): the cast expression and n.
fn length_cast(expr: &Expr) -> Option<(&Expr, u64)> {
    match expr {
        Expr::Nested(inner) => length_cast(inner),
        Expr::Cast {
            expr,
            data_type:
                DataType::Varchar(Some(CharacterLength::IntegerLength { length, .. }))
                | DataType::CharacterVarying(Some(CharacterLength::IntegerLength { length, .. })),
            ..
        } => Some((expr, *length)),
        _ => None,
    }
}

fn child_not_configured(child: &ObjectName, parent: &TableKey) -> Refusal {
    Refusal::unsupported(format!(
        "{child} would be a partition or child of {}.{}, whose columns pgcloak encrypts, but is not in the pgcloak policy: rows written to it directly would be stored in clear; add it under `tables` with its PII columns and `same_key_as: {}.<column>` first",
        parent.0, parent.1, parent.1
    ))
}

/// A PII table made the child of a relation the policy does not name: rows inserted through
/// the parent would be stored in clear, and searches through it would compare plaintext with
/// ciphertext.
fn parent_not_configured(child: &TableKey, parent: &ObjectName) -> Refusal {
    Refusal::unsupported(format!(
        "{}.{} would become a partition or child of {parent}, which is not in the pgcloak policy: rows written through {parent} would be stored in clear in {}.{}, and searches through it would silently miss; add {parent} under `tables` with the same PII columns and `same_key_as: {}.<column>` first",
        child.0, child.1, child.0, child.1, child.1
    ))
}

fn foreign_key(column: &PiiColumn) -> Refusal {
    Refusal::unsupported(format!(
        "a foreign key on {} cannot work: pgcloak encrypts each column with its own key, so the ciphertexts on both sides never match; make both columns deterministic with one `same_key_as` the other in the pgcloak policy, or enforce the reference in the application",
        column.id
    ))
}

/// The tables a CREATE TABLE or ALTER TABLE refers to: by foreign keys, as the parent of a
/// partition or inheritance child, and as the partition ATTACH PARTITION attaches.
pub(super) fn referred_tables(statement: &Statement) -> Vec<&ObjectName> {
    let mut parents = Vec::new();
    let (columns, constraints): (Vec<&ColumnDef>, Vec<&TableConstraint>) = match statement {
        Statement::CreateTable(create) => {
            parents.extend(create.partition_of.iter());
            parents.extend(create.inherits.iter().flatten());
            (
                create.columns.iter().collect(),
                create.constraints.iter().collect(),
            )
        }
        Statement::AlterTable(alter) => {
            let mut columns = Vec::new();
            let mut constraints = Vec::new();
            for operation in &alter.operations {
                match operation {
                    AlterTableOperation::Inherit { parent } => parents.push(parent),
                    AlterTableOperation::AttachPartitionOf { partition, .. } => {
                        parents.push(partition)
                    }
                    AlterTableOperation::AddColumn { column_def, .. } => columns.push(column_def),
                    AlterTableOperation::AddConstraint { constraint, .. } => {
                        constraints.push(constraint)
                    }
                    _ => {}
                }
            }
            (columns, constraints)
        }
        _ => return Vec::new(),
    };
    let from_columns = columns
        .into_iter()
        .flat_map(|column| &column.options)
        .filter_map(|option| match &option.option {
            ColumnOption::ForeignKey(key) => Some(&key.foreign_table),
            _ => None,
        });
    let from_constraints = constraints.into_iter().filter_map(|c| match c {
        TableConstraint::ForeignKey(key) => Some(&key.foreign_table),
        _ => None,
    });
    from_columns
        .chain(from_constraints)
        .chain(parents)
        .collect()
}
