//! INSERT, UPDATE, DELETE and RETURNING: the values bound for PII columns.

use super::recording::Place;
use super::*;

impl Walk<'_> {
    // ---- writes --------------------------------------------------------------------

    pub(in crate::sql) fn insert(&mut self, insert: &Insert) -> Result<Outputs> {
        let target = match &insert.table {
            TableObject::TableName(name) => configured_table(name, self.policy),
            _ => None,
        };
        if let (Some(table), Some(alias)) = (&target, &insert.table_alias) {
            self.scope.alias(&normalize(&alias.alias), table.clone());
        }
        let pii_targets: Vec<Option<PiiColumn>> = insert
            .columns
            .iter()
            .map(|column| {
                let name = column
                    .0
                    .last()
                    .and_then(|part| part.as_ident())
                    .map(normalize);
                target
                    .as_ref()
                    .zip(name)
                    .and_then(|(table, name)| self.column(table, &name))
            })
            .collect();
        if let Some(table) = &target {
            if insert.columns.is_empty() {
                return Err(Refusal::unsupported(format!(
                    "INSERT INTO {}.{} must name its columns, because pgcloak encrypts some of them and needs to know which value goes where: INSERT INTO {} (col, ...) VALUES (...)",
                    table.0, table.1, table.1
                )));
            }
            self.scope.alias("excluded", table.clone());
        }
        let ctes_in_reach = self.ctes.len();
        let outputs = self.insert_in_scope(insert, target.as_ref(), &pii_targets);
        self.ctes.truncate(ctes_in_reach);
        outputs
    }

    pub(super) fn insert_in_scope(
        &mut self,
        insert: &Insert,
        target: Option<&TableKey>,
        pii_targets: &[Option<PiiColumn>],
    ) -> Result<Outputs> {
        if let Some(source) = &insert.source {
            if let Some(with) = &source.with {
                self.ctes(with)?;
            }
            match source.body.as_ref() {
                SetExpr::Values(values) => {
                    for row in &values.rows {
                        for (i, expr) in row.content.iter().enumerate() {
                            match pii_targets.get(i).cloned().flatten() {
                                Some(column) => self.bind_write_value(expr, &column, false)?,
                                None => self.other(expr)?,
                            }
                        }
                    }
                }
                _ if pii_targets.iter().flatten().next().is_some()
                    && (self.insert_from_values(source, pii_targets)?
                        || self.insert_from_unnest(source, pii_targets)?) => {}
                body => {
                    let into = format!("INSERT INTO {}", insert.table);
                    self.insert_select(body, pii_targets, &into)?;
                }
            }
        }
        // ON CONFLICT and RETURNING see the target table (the source query does not).
        let mut level = Level::new();
        if let TableObject::TableName(name) = &insert.table {
            let alias = insert.table_alias.as_ref().map(|alias| TableAlias {
                explicit: true,
                name: alias.alias.clone(),
                columns: Vec::new(),
                at: None,
            });
            level.push(self.table_relation(name, alias.as_ref())?);
            if let Some(table) = target {
                level.push(Relation::Table {
                    names: vec!["excluded".to_owned()],
                    table: table.clone(),
                });
            }
        }
        self.in_level(level, |walk| walk.insert_tail(insert, target))
    }

    /// INSERT ... SELECT: a PII target takes a literal or parameter of the select list
    /// (encrypted as in VALUES: `INSERT ... SELECT $1 WHERE NOT EXISTS (...)`) or the same
    /// column, or one sharing its key and mode (a ciphertext copied within the policy); a
    /// plain target may not take a PII column.
    pub(super) fn insert_select(
        &mut self,
        body: &SetExpr,
        targets: &[Option<PiiColumn>],
        into: &str,
    ) -> Result {
        let mut bound_here = vec![false; targets.len()];
        if let SetExpr::Select(select) = body {
            for (i, (item, target)) in select.projection.iter().zip(targets).enumerate() {
                let (
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. },
                    Some(column),
                ) = (item, target)
                else {
                    continue;
                };
                let ty = self.declared_type(column);
                if let Bound::Literal(..) | Bound::Param(..) | Bound::Null =
                    bound_for(expr, &ty, false)
                {
                    self.bind_write_value(expr, column, false)?;
                    bound_here[i] = true;
                }
            }
        }
        let outputs = self.set_expr(body)?;
        let cannot = |column: &PiiColumn| {
            Refusal::unsupported(format!(
                "INSERT ... SELECT into {} cannot be encrypted: pgcloak only sees values written as literals or bind parameters, or copied from the same column (or one sharing its key); insert the rows with VALUES and parameters from the application",
                column.id
            ))
        };
        for (i, target) in targets.iter().enumerate() {
            let output = outputs.columns.get(i).map(|(_, output)| output);
            match (target, output) {
                (Some(_), _) if bound_here[i] => {}
                (Some(column), Some(Output::Pii(source)))
                    if outputs.complete
                        && column.mode == source.mode
                        && self.same_key(column, source) => {}
                (Some(column), _) => return Err(cannot(column)),
                (None, _) => {}
            }
        }
        // Plain targets: no PII column may reach them, wherever it stands.
        let plain: Vec<(Option<String>, Output)> = outputs
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !outputs.complete || targets.get(*i).is_none_or(Option::is_none))
            .map(|(_, column)| column.clone())
            .collect();
        self.not_copied(
            &Outputs {
                columns: plain,
                complete: outputs.complete,
            },
            into,
        )
    }

    pub(super) fn insert_tail(
        &mut self,
        insert: &Insert,
        target: Option<&TableKey>,
    ) -> Result<Outputs> {
        if let Some(OnInsert::OnConflict(on_conflict)) = &insert.on {
            // The arbiter is a unique index, whichever the target names (or none): it
            // compares the stored ciphertexts of the table's deterministic columns.
            if let Some(table) = target {
                for column in self.deterministic_columns(table) {
                    self.compared_by_ciphertext(&column);
                }
            }
            if let OnConflictAction::DoUpdate(update) = &on_conflict.action {
                for assignment in &update.assignments {
                    self.assignment(&assignment.target, &assignment.value, target)?;
                }
                if let Some(selection) = &update.selection {
                    self.predicate(selection)?;
                }
            }
        }
        self.returning(insert.returning.as_deref())
    }

    pub(in crate::sql) fn update(&mut self, update: &Update) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.update_in_scope(update))
    }

    pub(super) fn update_in_scope(&mut self, update: &Update) -> Result<Outputs> {
        let target = match &update.table.relation {
            TableFactor::Table { name, .. } => configured_table(name, self.policy),
            _ => None,
        };
        self.from(&update.table)?;
        // FROM items are in reach of SET and WHERE alike.
        if let Some(from) = &update.from {
            let tables = match from {
                sqlparser::ast::UpdateTableFromKind::BeforeSet(tables)
                | sqlparser::ast::UpdateTableFromKind::AfterSet(tables) => tables,
            };
            for table in tables {
                self.from(table)?;
            }
        }
        for assignment in &update.assignments {
            self.assignment(&assignment.target, &assignment.value, target.as_ref())?;
        }
        if let Some(selection) = &update.selection {
            self.predicate(selection)?;
        }
        self.returning(update.returning.as_deref())
    }

    pub(in crate::sql) fn delete(&mut self, delete: &Delete) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.delete_in_scope(delete))
    }

    pub(super) fn delete_in_scope(&mut self, delete: &Delete) -> Result<Outputs> {
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &delete.from;
        for table in tables.iter().chain(delete.using.iter().flatten()) {
            self.from(table)?;
        }
        if let Some(selection) = &delete.selection {
            self.predicate(selection)?;
        }
        self.returning(delete.returning.as_deref())
    }

    /// RETURNING: shown like a select list.
    pub(in crate::sql) fn returning(&mut self, items: Option<&[SelectItem]>) -> Result<Outputs> {
        let mut outputs = Outputs {
            columns: Vec::new(),
            complete: true,
        };
        for item in items.unwrap_or_default() {
            match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                    let name = output_name(item, expr);
                    let output = self.projection(expr)?;
                    outputs.columns.push((name, output));
                }
                _ => {
                    // RETURNING *: the target's columns (the first relation of the level).
                    let level = self.levels.last().map(Vec::as_slice).unwrap_or_default();
                    let shown = level
                        .first()
                        .map(|r| r.expand(self.policy))
                        .unwrap_or_default();
                    outputs.complete &= shown.complete;
                    outputs.columns.extend(shown.columns);
                }
            }
        }
        Ok(outputs)
    }

    /// `SET column = value` in UPDATE or ON CONFLICT DO UPDATE.
    pub(in crate::sql) fn assignment(
        &mut self,
        target: &AssignmentTarget,
        value: &Expr,
        table: Option<&(String, String)>,
    ) -> Result {
        let column = match (target, table) {
            (AssignmentTarget::ColumnName(name), Some(table)) => name
                .0
                .last()
                .and_then(|part| part.as_ident())
                .and_then(|ident| self.column(table, &normalize(ident))),
            (AssignmentTarget::Tuple(names), Some(table)) => {
                let pii = names.iter().find_map(|name| {
                    let ident = name.0.last()?.as_ident()?;
                    self.column(table, &normalize(ident))
                });
                if let Some(column) = pii {
                    return Err(Refusal::unsupported(format!(
                        "SET (...) = (...) including {} cannot be encrypted; assign the column on its own: SET {} = $1",
                        column.id, column.id.column
                    )));
                }
                None
            }
            _ => None,
        };
        match column {
            Some(column) => self.bind_write_value(value, &column, true),
            None => self.other(value),
        }
    }

    /// A value written into a PII column: a literal, a parameter, NULL or DEFAULT; in an
    /// assignment also the column itself or `EXCLUDED.column`.
    pub(in crate::sql) fn bind_write_value(
        &mut self,
        expr: &Expr,
        column: &PiiColumn,
        assignment: bool,
    ) -> Result {
        let place = Place::written(expr, false);
        let ty = self.declared_type(column);
        match bound_for(expr, &ty, false) {
            Bound::Literal(value, span) => self.bind_literal(value, span, column, place),
            Bound::Param(n, span) => self.bind_param(n, span, column, place),
            Bound::Null => self.casts_around(expr, column, false),
            Bound::Default => Ok(()),
            Bound::Other => {
                // The column itself through text casts only: `dob::date` of a text column
                // holding ciphertext would fail in Postgres.
                let same_column = self.pii(expr).is_some_and(|c| self.same_key(&c, column));
                if assignment && same_column {
                    self.recognise(expr);
                    return Ok(());
                }
                if let Some(cast) = foreign_cast(expr, &ty, false) {
                    return Err(foreign_cast_refusal(column, &ty, &cast));
                }
                Err(Refusal::unsupported(format!(
                    "pgcloak cannot encrypt the value for {}: it is an expression, not a literal or bind parameter; compute the value in the application and bind it as a parameter",
                    column.id
                )))
            }
        }
    }
}

impl Walk<'_> {
    /// The deterministic PII columns of a configured table.
    fn deterministic_columns(&self, table: &(String, String)) -> Vec<PiiColumn> {
        let Some(config) = self.policy.table(Some(&table.0), &table.1) else {
            return Vec::new();
        };
        config
            .columns
            .iter()
            .filter(|(_, mode)| **mode == Mode::Deterministic)
            .filter_map(|(name, _)| self.column(table, name))
            .collect()
    }
}
