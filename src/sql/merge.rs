//! MERGE, modelled like the INSERT, UPDATE and DELETE it is made of: the target and the
//! source are one FROM list; the ON condition and each WHEN condition are checked like a
//! WHERE; `WHEN NOT MATCHED THEN INSERT (cols) VALUES (...)` binds its values like an
//! INSERT's VALUES row, `WHEN MATCHED THEN UPDATE SET` like an UPDATE's assignments; DELETE
//! and DO NOTHING carry no value. Forms of other dialects (`INSERT *`, `UPDATE SET *`,
//! `INSERT ROW`) are refused on a PII table.

use sqlparser::ast::{
    Merge, MergeAction, MergeInsertKind, MergeUpdateKind, OutputClause, TableFactor,
};

use super::analyzer::{Result, Walk};
use super::levels::{Level, Outputs};
use super::names::{configured_table, normalize, PiiColumn, TableKey};
use super::Refusal;

impl Walk<'_> {
    pub(super) fn merge(&mut self, merge: &Merge) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.merge_in_scope(merge))
    }

    fn merge_in_scope(&mut self, merge: &Merge) -> Result<Outputs> {
        let target = match &merge.table {
            TableFactor::Table { name, .. } => configured_table(name, self.policy),
            _ => None,
        };
        self.table_factor(&merge.table)?;
        self.table_factor(&merge.source)?;
        self.predicate(&merge.on)?;
        for clause in &merge.clauses {
            if let Some(predicate) = &clause.predicate {
                self.predicate(predicate)?;
            }
            match &clause.action {
                MergeAction::Insert(insert) => {
                    self.merge_insert(&insert.columns, &insert.kind, target.as_ref())?;
                    if let Some(predicate) = &insert.insert_predicate {
                        self.predicate(predicate)?;
                    }
                }
                MergeAction::Update(update) => {
                    match &update.kind {
                        MergeUpdateKind::Set(assignments) => {
                            for assignment in assignments {
                                self.assignment(
                                    &assignment.target,
                                    &assignment.value,
                                    target.as_ref(),
                                )?;
                            }
                        }
                        MergeUpdateKind::Wildcard => self.whole_row_merge(target.as_ref())?,
                    }
                    for predicate in [&update.update_predicate, &update.delete_predicate]
                        .into_iter()
                        .flatten()
                    {
                        self.predicate(predicate)?;
                    }
                }
                MergeAction::Delete { .. } | MergeAction::DoNothing { .. } => {}
            }
        }
        match &merge.output {
            Some(OutputClause::Returning { select_items, .. }) => {
                self.returning(Some(select_items))
            }
            Some(OutputClause::Output { .. }) => match target {
                Some(table) => Err(Refusal::unsupported(format!(
                    "MERGE ... OUTPUT into {}.{} is not supported by pgcloak; use RETURNING",
                    table.0, table.1
                ))),
                None => Ok(Outputs::default()),
            },
            None => Ok(Outputs::default()),
        }
    }

    /// `WHEN NOT MATCHED THEN INSERT (cols) VALUES (...)`: one VALUES row for the target.
    fn merge_insert(
        &mut self,
        columns: &[sqlparser::ast::ObjectName],
        kind: &MergeInsertKind,
        target: Option<&TableKey>,
    ) -> Result {
        let MergeInsertKind::Values(values) = kind else {
            return self.whole_row_merge(target);
        };
        if let (Some(table), true) = (target, columns.is_empty()) {
            return Err(Refusal::unsupported(format!(
                "MERGE INTO {}.{} ... THEN INSERT must name its columns, because pgcloak encrypts some of them and needs to know which value goes where: INSERT (col, ...) VALUES (...)",
                table.0, table.1
            )));
        }
        let pii_targets: Vec<Option<PiiColumn>> = columns
            .iter()
            .map(|column| {
                let name = column.0.last()?.as_ident().map(normalize)?;
                self.column(target?, &name)
            })
            .collect();
        for row in &values.rows {
            for (i, expr) in row.content.iter().enumerate() {
                match pii_targets.get(i).cloned().flatten() {
                    // A literal or parameter, or the same column (or one sharing its key)
                    // of the source: its ciphertext is copied.
                    Some(column) => self.bind_write_value(expr, &column, true)?,
                    None => self.other(expr)?,
                }
            }
        }
        Ok(())
    }

    /// `INSERT *` / `UPDATE SET *` / `INSERT ROW`: columns matched by name or position,
    /// which pgcloak cannot follow (into the target, or out of a source carrying PII).
    fn whole_row_merge(&self, target: Option<&TableKey>) -> Result {
        let what = match target {
            Some(table) => format!("{}.{}", table.0, table.1),
            None => "a table".to_owned(),
        };
        Err(Refusal::unsupported(format!(
            "MERGE INTO {what} with INSERT * / UPDATE SET * / INSERT ROW moves values of columns pgcloak encrypts without naming them; name the columns and their values"
        )))
    }
}
