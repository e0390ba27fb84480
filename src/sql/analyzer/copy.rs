//! COPY: which fields of its rows are PII columns, in which format.

use super::*;

impl Walk<'_> {
    pub(super) fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result {
        let (table_name, columns) = match source {
            CopySource::Query(query) => {
                self.query(query)?;
                // The query reads a PII table (else this statement would be plain).
                copy_out_encoding(options, "this COPY")?;
                self.plan.copy_out = Some(copy_options(options, legacy, "this COPY")?);
                return Ok(());
            }
            CopySource::Table {
                table_name,
                columns,
            } => (table_name, columns),
        };
        let Some(table) = configured_table(table_name, self.policy) else {
            return Ok(());
        };
        let what = format!("{}.{}", table.0, table.1);
        let parsed = copy_options(options, legacy, &what)?;
        if to {
            copy_out_encoding(options, &what)?;
            self.plan.copy_out = Some(parsed);
            self.plan.copy_out_fields = Some(if columns.is_empty() {
                CopyOutFields::AllOf(table.0.clone(), table.1.clone())
            } else {
                CopyOutFields::Listed(
                    (columns.iter())
                        .map(|ident| self.column(&table, &normalize(ident)).map(|c| c.id))
                        .collect(),
                )
            });
            return Ok(());
        }
        if !matches!(target, CopyTarget::Stdin) {
            return Err(Refusal::unsupported(format!(
                "COPY {what} FROM a server file or program cannot be encrypted by pgcloak; use COPY ... FROM STDIN (psql: \\copy)"
            )));
        }
        if columns.is_empty() {
            return Err(Refusal::unsupported(format!(
                "COPY {what} FROM STDIN must name its columns, because pgcloak encrypts some of them and needs to know which field goes where: COPY {} (col, ...) FROM STDIN",
                table.1
            )));
        }
        let fields: Vec<Option<ColumnId>> = columns
            .iter()
            .map(|ident| self.column(&table, &normalize(ident)).map(|c| c.id))
            .collect();
        self.unsupported_copy_in_options(options, legacy, &table, &fields)?;
        self.plan.copy_in = Some(CopyInPlan {
            options: parsed,
            fields,
        });
        Ok(())
    }

    /// COPY FROM options pgcloak does not implement, refused where they would change how a
    /// PII field is read: FORCE_NOT_NULL / FORCE_NULL on a PII column (NULL or empty is
    /// decided before encryption), an ENCODING other than UTF8 (values are encrypted as the
    /// bytes they are).
    pub(super) fn unsupported_copy_in_options(
        &self,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
        table: &TableKey,
        fields: &[Option<ColumnId>],
    ) -> Result {
        let legacy_csv = legacy.iter().flat_map(|option| match option {
            CopyLegacyOption::Csv(csv) => csv.as_slice(),
            _ => &[],
        });
        let forced = (options.iter())
            .flat_map(|option| match option {
                CopyOption::ForceNotNull(columns) | CopyOption::ForceNull(columns) => {
                    columns.as_slice()
                }
                _ => &[],
            })
            .chain(legacy_csv.flat_map(|option| match option {
                CopyLegacyCsvOption::ForceNotNull(columns) => columns.as_slice(),
                _ => &[],
            }));
        for ident in forced {
            if let Some(column) = self.column(table, &normalize(ident)) {
                return Err(Refusal::unsupported(format!(
                    "FORCE_NOT_NULL / FORCE_NULL on {} is not supported by pgcloak, which decides NULL before encrypting; drop the option (send NULL as the NULL string)",
                    column.id
                )));
            }
        }
        let encoding = options.iter().find_map(|option| match option {
            CopyOption::Encoding(name) => Some(name),
            _ => None,
        });
        if let Some(name) = encoding {
            let utf8 = is_utf8(name);
            if let (false, Some(column)) = (utf8, fields.iter().flatten().next()) {
                return Err(Refusal::unsupported(format!(
                    "COPY ... ENCODING '{name}' into {column} is not supported by pgcloak, which encrypts UTF-8; convert the data to UTF-8 and drop the option"
                )));
            }
        }
        Ok(())
    }
}

/// An ENCODING option naming UTF8.
fn is_utf8(name: &str) -> bool {
    name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8")
}

/// COPY TO with an ENCODING other than UTF8: Postgres would convert the ciphertext, and the
/// plaintext pgcloak puts in its place is UTF-8.
fn copy_out_encoding(options: &[CopyOption], what: &str) -> Result {
    for option in options {
        if let CopyOption::Encoding(name) = option {
            if !is_utf8(name) {
                return Err(Refusal::unsupported(format!(
                    "COPY ... TO with ENCODING '{name}' of {what} is not supported by pgcloak, which returns decrypted values as UTF-8; drop the option and convert the output"
                )));
            }
        }
    }
    Ok(())
}

/// The data format of a COPY; binary cannot be rewritten, so it is refused.
fn copy_options(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    what: &str,
) -> Result<CopyOptions> {
    let binary = || {
        Refusal::unsupported(format!(
            "binary COPY of {what} cannot be encrypted or decrypted by pgcloak; use FORMAT text or csv"
        ))
    };
    let mut plan = CopyOptions::default();
    for option in options {
        match option {
            CopyOption::Format(format) => match normalize(format).as_str() {
                "text" => plan.format = CopyFormat::Text,
                "csv" => plan.format = CopyFormat::Csv,
                _ => return Err(binary()),
            },
            CopyOption::Delimiter(c) => plan.delimiter = Some(*c),
            CopyOption::Null(null) => plan.null = Some(null.clone()),
            CopyOption::Header(header) => plan.header = *header,
            CopyOption::Quote(c) => plan.quote = Some(*c),
            CopyOption::Escape(c) => plan.escape = Some(*c),
            _ => {}
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => return Err(binary()),
            CopyLegacyOption::Delimiter(c) => plan.delimiter = Some(*c),
            CopyLegacyOption::Null(null) => plan.null = Some(null.clone()),
            CopyLegacyOption::Csv(csv) => {
                plan.format = CopyFormat::Csv;
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => plan.header = true,
                        CopyLegacyCsvOption::Quote(c) => plan.quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => plan.escape = Some(*c),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(plan)
}
