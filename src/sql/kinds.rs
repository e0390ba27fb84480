//! The allowlist of statement kinds: the one place that says which kinds of statement may
//! name a PII table. A kind the walk models completely is analysed; a kind that only names
//! objects (DROP, GRANT, TRUNCATE, LOCK, ...) passes, since it neither reads, writes nor
//! shows column values and stores no code or query that would later; every other kind is
//! refused when it names a PII table. The match has no wildcard arm, so a statement kind a
//! future sqlparser adds does not compile until it is classified here.

use sqlparser::ast::Statement;

/// What pgcloak knows of a statement kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The walk models it completely: every value bound for a PII column is encrypted and
    /// every use of one checked.
    Modelled,
    /// Names tables without reading, writing or showing their column values.
    NamesOnly,
    /// Anything else: refused when it names a PII table.
    NotModelled,
}

pub(super) fn kind(statement: &Statement) -> Kind {
    use Statement as S;
    match statement {
        S::Query { .. }
        | S::Insert { .. }
        | S::Update { .. }
        | S::Delete { .. }
        | S::Merge { .. }
        | S::Copy { .. }
        | S::Explain { .. }
        | S::Declare { .. }
        | S::Prepare { .. }
        | S::Execute { .. }
        | S::CreateTable { .. }
        | S::CreateView { .. }
        | S::CreateIndex { .. }
        | S::AlterTable { .. } => Kind::Modelled,

        S::Analyze { .. }
        | S::Vacuum { .. }
        | S::Set { .. }
        | S::Reset { .. }
        | S::Truncate { .. }
        | S::Close { .. }
        | S::Fetch { .. }
        | S::Discard { .. }
        | S::Deallocate { .. }
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. }
        | S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::NOTIFY { .. }
        | S::Lock { .. }
        | S::Comment { .. }
        | S::Grant { .. }
        | S::Revoke { .. }
        | S::GrantRole { .. }
        | S::RevokeRole { .. }
        | S::AlterDefaultPrivileges { .. }
        | S::CreateRole { .. }
        | S::AlterRole { .. }
        | S::CreateUser { .. }
        | S::AlterUser { .. }
        | S::CreateSchema { .. }
        | S::CreateDatabase { .. }
        | S::CreateExtension { .. }
        | S::DropExtension { .. }
        | S::CreateSequence { .. }
        | S::AlterIndex { .. }
        | S::RefreshMaterializedView { .. }
        | S::Drop { .. }
        | S::DropFunction { .. }
        | S::DropProcedure { .. }
        | S::DropDomain { .. }
        | S::DropPolicy { .. }
        | S::DropRule { .. }
        | S::DropTrigger { .. }
        | S::DropOperator { .. }
        | S::DropOperatorFamily { .. }
        | S::DropOperatorClass { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowStatus { .. }
        | S::ShowVariables { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowCatalogs { .. }
        | S::ShowDatabases { .. }
        | S::ShowProcessList { .. }
        | S::ShowSchemas { .. }
        | S::ShowCharset { .. }
        | S::ShowObjects { .. }
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowCollation { .. } => Kind::NamesOnly,

        // Triggers, row-level security policies, views altered in place, code run in the
        // server, and other dialects' statements.
        S::CreateTrigger { .. }
        | S::AlterTrigger { .. }
        | S::CreatePolicy { .. }
        | S::AlterPolicy { .. }
        | S::AlterView { .. }
        | S::CreateFunction { .. }
        | S::AlterFunction { .. }
        | S::CreateProcedure { .. }
        | S::CreateRule { .. }
        | S::CreateAggregate { .. }
        | S::CreateMacro { .. }
        | S::Call { .. }
        | S::Case { .. }
        | S::If { .. }
        | S::While { .. }
        | S::Raise { .. }
        | S::Return { .. }
        | S::Assert { .. }
        | S::Msck { .. }
        | S::Install { .. }
        | S::Load { .. }
        | S::LoadData { .. }
        | S::Directory { .. }
        | S::CopyIntoSnowflake { .. }
        | S::Unload { .. }
        | S::ExportData { .. }
        | S::Open { .. }
        | S::CreateVirtualTable { .. }
        | S::CreateSecret { .. }
        | S::CreateServer { .. }
        | S::CreateForeignTable { .. }
        | S::CreateForeignDataWrapper { .. }
        | S::CreateUserMapping { .. }
        | S::CreateConnector { .. }
        | S::CreateOperator { .. }
        | S::CreateOperatorFamily { .. }
        | S::CreateOperatorClass { .. }
        | S::CreateTextSearch { .. }
        | S::CreateCollation { .. }
        | S::CreateType { .. }
        | S::CreateDomain { .. }
        | S::CreateStage { .. }
        | S::CreateFileFormat { .. }
        | S::CreateWarehouse { .. }
        | S::AlterSchema { .. }
        | S::AlterType { .. }
        | S::AlterCollation { .. }
        | S::AlterOperator { .. }
        | S::AlterOperatorFamily { .. }
        | S::AlterOperatorClass { .. }
        | S::AlterTextSearch { .. }
        | S::AlterConnector { .. }
        | S::AlterSession { .. }
        | S::AttachDatabase { .. }
        | S::AttachDuckDBDatabase { .. }
        | S::DetachDuckDBDatabase { .. }
        | S::DropSecret { .. }
        | S::DropConnector { .. }
        | S::Flush { .. }
        | S::Use { .. }
        | S::Kill { .. }
        | S::ExplainTable { .. }
        | S::Deny { .. }
        | S::Cache { .. }
        | S::UNCache { .. }
        | S::Pragma { .. }
        | S::LockTables { .. }
        | S::UnlockTables
        | S::OptimizeTable { .. }
        | S::RenameTable { .. }
        | S::List { .. }
        | S::Put { .. }
        | S::Remove { .. }
        | S::RaisError { .. }
        | S::Throw { .. }
        | S::Print { .. }
        | S::WaitFor { .. } => Kind::NotModelled,
    }
}

/// The statement's kind as SQL names it (`CREATE TRIGGER`, `MERGE`), for messages.
pub(super) fn label(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_uppercase();
    if !matches!(first.as_str(), "CREATE" | "ALTER" | "DROP") {
        return first;
    }
    let second = words
        .find(|w| !matches!(w.to_uppercase().as_str(), "OR" | "REPLACE"))
        .unwrap_or_default()
        .to_uppercase();
    format!("{first} {second}")
}
