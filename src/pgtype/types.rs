//! The declared type of a typed PII column: its name in the policy, and what RowDescription
//! and the catalog say about it (OID, length, typmod, `format_type` name).

/// The types a PII column may be declared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Text,
    Varchar,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Jsonb,
    Bytea,
}

impl Kind {
    /// Every kind, in declaration order.
    #[rustfmt::skip]
    pub const ALL: [Kind; 17] = {
        use Kind::*;
        [
            Text, Varchar, Int2, Int4, Int8, Numeric, Float4, Float8, Bool, Date, Time,
            Timestamp, Timestamptz, Uuid, Json, Jsonb, Bytea,
        ]
    };
}

/// A declared type with its modifier (`varchar(40)`, `numeric(10,2)`), as Postgres holds
/// it: `typmod` is `atttypmod` (-1 when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PgType {
    kind: Kind,
    typmod: i32,
}

const VARHDRSZ: i32 = 4;
const MAX_VARCHAR: i64 = 10_485_760;

impl PgType {
    /// A type without modifier.
    pub fn new(kind: Kind) -> PgType {
        PgType { kind, typmod: -1 }
    }

    /// Parses a type name from the policy: Postgres's names and aliases, any case, with an
    /// optional modifier for `varchar(n)` and `numeric(p[,s])`.
    pub fn parse(config_name: &str) -> Result<PgType, String> {
        let lower = config_name.trim().to_ascii_lowercase();
        let (base, args) = match lower.find('(') {
            Some(open) => {
                let close = lower
                    .strip_suffix(')')
                    .ok_or_else(|| format!("type \"{config_name}\": missing \")\""))?;
                (&lower[..open], Some(&close[open + 1..]))
            }
            None => (lower.as_str(), None),
        };
        let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
        let kind = match base.as_str() {
            "text" => Kind::Text,
            "varchar" | "character varying" => Kind::Varchar,
            "smallint" | "int2" => Kind::Int2,
            "integer" | "int" | "int4" => Kind::Int4,
            "bigint" | "int8" => Kind::Int8,
            "numeric" | "decimal" => Kind::Numeric,
            "real" | "float4" => Kind::Float4,
            "double precision" | "float8" | "float" => Kind::Float8,
            "boolean" | "bool" => Kind::Bool,
            "date" => Kind::Date,
            "time" | "time without time zone" => Kind::Time,
            "timestamp" | "timestamp without time zone" => Kind::Timestamp,
            "timestamptz" | "timestamp with time zone" => Kind::Timestamptz,
            "uuid" => Kind::Uuid,
            "json" => Kind::Json,
            "jsonb" => Kind::Jsonb,
            "bytea" => Kind::Bytea,
            _ => {
                return Err(format!(
                    "type \"{config_name}\" is not supported for a PII column; use one of text, \
                     varchar(n), smallint, integer, bigint, numeric(p,s), real, double precision, \
                     boolean, date, time, timestamp, timestamptz, uuid, json, jsonb, bytea"
                ))
            }
        };
        let Some(args) = args else {
            return Ok(PgType::new(kind));
        };
        let nums = args
            .split(',')
            .map(|a| a.trim().parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("type \"{config_name}\": modifiers must be integers"))?;
        let typmod = match (kind, nums.as_slice()) {
            (Kind::Varchar, [n]) => {
                if *n < 1 {
                    return Err(format!(
                        "type \"{config_name}\": length for type varchar must be at least 1"
                    ));
                }
                if *n > MAX_VARCHAR {
                    return Err(format!(
                        "type \"{config_name}\": length for type varchar cannot exceed {MAX_VARCHAR}"
                    ));
                }
                *n as i32 + VARHDRSZ
            }
            (Kind::Numeric, [p]) | (Kind::Numeric, [p, _]) => {
                let s = nums.get(1).copied().unwrap_or(0);
                if !(1..=1000).contains(p) {
                    return Err(format!(
                        "type \"{config_name}\": NUMERIC precision {p} must be between 1 and 1000"
                    ));
                }
                if !(-1000..=1000).contains(&s) {
                    return Err(format!(
                        "type \"{config_name}\": NUMERIC scale {s} must be between -1000 and 1000"
                    ));
                }
                (((*p as i32) << 16) | (s as i32 & 0x7ff)) + VARHDRSZ
            }
            _ => {
                return Err(format!(
                    "type \"{config_name}\": only varchar(n) and numeric(p[,s]) take modifiers \
                     in a pgcloak policy"
                ))
            }
        };
        Ok(PgType { kind, typmod })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The type's OID in `pg_type`.
    pub fn oid(&self) -> u32 {
        match self.kind {
            Kind::Text => 25,
            Kind::Varchar => 1043,
            Kind::Int2 => 21,
            Kind::Int4 => 23,
            Kind::Int8 => 20,
            Kind::Numeric => 1700,
            Kind::Float4 => 700,
            Kind::Float8 => 701,
            Kind::Bool => 16,
            Kind::Date => 1082,
            Kind::Time => 1083,
            Kind::Timestamp => 1114,
            Kind::Timestamptz => 1184,
            Kind::Uuid => 2950,
            Kind::Json => 114,
            Kind::Jsonb => 3802,
            Kind::Bytea => 17,
        }
    }

    /// The type with this OID (no modifier), if pgcloak supports it.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        (Kind::ALL.into_iter().map(PgType::new)).find(|ty| ty.oid() == oid)
    }

    /// Whether Postgres converts a value of this type to `column` on assignment and in a
    /// comparison without changing it in a way pgcloak cannot follow: numbers between
    /// number types, `timestamp` and `date` to `timestamptz` (in the session's TimeZone),
    /// `date` to `timestamp`.
    pub fn converts_to(&self, column: &PgType) -> bool {
        use Kind::*;
        let number = |k: Kind| matches!(k, Int2 | Int4 | Int8 | Numeric | Float4 | Float8);
        (number(self.kind) && number(column.kind))
            || matches!(
                (self.kind, column.kind),
                (Timestamp | Date, Timestamptz) | (Date, Timestamp)
            )
    }

    /// The OID of the type's array type (`typarray`).
    pub fn array_oid(&self) -> u32 {
        match self.kind {
            Kind::Text => 1009,
            Kind::Varchar => 1015,
            Kind::Int2 => 1005,
            Kind::Int4 => 1007,
            Kind::Int8 => 1016,
            Kind::Numeric => 1231,
            Kind::Float4 => 1021,
            Kind::Float8 => 1022,
            Kind::Bool => 1000,
            Kind::Date => 1182,
            Kind::Time => 1183,
            Kind::Timestamp => 1115,
            Kind::Timestamptz => 1185,
            Kind::Uuid => 2951,
            Kind::Json => 199,
            Kind::Jsonb => 3807,
            Kind::Bytea => 1001,
        }
    }

    /// `typlen`: the fixed size, or -1 for varlena types (RowDescription's data type size).
    pub fn typlen(&self) -> i16 {
        match self.kind {
            Kind::Int2 => 2,
            Kind::Int4 | Kind::Float4 | Kind::Date => 4,
            Kind::Int8 | Kind::Float8 | Kind::Time | Kind::Timestamp | Kind::Timestamptz => 8,
            Kind::Bool => 1,
            Kind::Uuid => 16,
            _ => -1,
        }
    }

    /// `atttypmod` (RowDescription's type modifier): -1, or varchar `n + 4`, or numeric
    /// `((p << 16) | s) + 4`.
    pub fn typmod(&self) -> i32 {
        self.typmod
    }

    /// `varchar(n)`'s `n`.
    pub(crate) fn varchar_len(&self) -> Option<usize> {
        (self.kind == Kind::Varchar && self.typmod >= VARHDRSZ)
            .then(|| (self.typmod - VARHDRSZ) as usize)
    }

    /// The name as `format_type` prints it.
    pub fn name(&self) -> String {
        let base = match self.kind {
            Kind::Text => "text",
            Kind::Varchar => "character varying",
            Kind::Int2 => "smallint",
            Kind::Int4 => "integer",
            Kind::Int8 => "bigint",
            Kind::Numeric => "numeric",
            Kind::Float4 => "real",
            Kind::Float8 => "double precision",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::Time => "time without time zone",
            Kind::Timestamp => "timestamp without time zone",
            Kind::Timestamptz => "timestamp with time zone",
            Kind::Uuid => "uuid",
            Kind::Json => "json",
            Kind::Jsonb => "jsonb",
            Kind::Bytea => "bytea",
        };
        match (self.kind, self.typmod) {
            (_, m) if m < VARHDRSZ => base.to_string(),
            (Kind::Varchar, m) => format!("{base}({})", m - VARHDRSZ),
            (Kind::Numeric, m) => {
                let (p, s) = numeric_typmod(m);
                format!("{base}({p},{s})")
            }
            _ => base.to_string(),
        }
    }

    /// Whether Postgres has a btree equality for the type (`json` has none), so an
    /// equality search on a deterministic column of this type is meaningful.
    pub fn searchable(&self) -> bool {
        self.kind != Kind::Json
    }
}

/// Precision and scale of a numeric typmod (the scale is an 11-bit signed field).
pub(crate) fn numeric_typmod(typmod: i32) -> (i32, i32) {
    let t = typmod - VARHDRSZ;
    (t >> 16, ((t & 0x7ff) ^ 1024) - 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        for (name, kind, typmod, printed) in [
            ("INT", Kind::Int4, -1, "integer"),
            ("int2", Kind::Int2, -1, "smallint"),
            (
                "Character  Varying(40)",
                Kind::Varchar,
                44,
                "character varying(40)",
            ),
            (
                "decimal(10,2)",
                Kind::Numeric,
                (10 << 16 | 2) + 4,
                "numeric(10,2)",
            ),
            ("numeric(5)", Kind::Numeric, (5 << 16) + 4, "numeric(5,0)"),
            (
                "numeric(3,-2)",
                Kind::Numeric,
                (3 << 16 | 0x7fe) + 4,
                "numeric(3,-2)",
            ),
            (
                "timestamp with time zone",
                Kind::Timestamptz,
                -1,
                "timestamp with time zone",
            ),
            (
                "time without time zone",
                Kind::Time,
                -1,
                "time without time zone",
            ),
            ("float8", Kind::Float8, -1, "double precision"),
            ("bool", Kind::Bool, -1, "boolean"),
        ] {
            let ty = PgType::parse(name).unwrap();
            assert_eq!(
                (ty.kind(), ty.typmod(), ty.name()),
                (kind, typmod, printed.into())
            );
        }
        assert_eq!(numeric_typmod((3 << 16 | 0x7fe) + 4), (3, -2));
    }

    #[test]
    fn refuses_other_names_precisely() {
        for bad in [
            "money",
            "int(4)",
            "varchar(0)",
            "numeric(1001)",
            "varchar(x)",
            "text(",
        ] {
            let err = PgType::parse(bad).unwrap_err();
            assert!(err.contains(bad.trim_end_matches('(')), "{err}");
        }
    }

    #[test]
    fn every_kind_is_found_by_its_oid() {
        for kind in Kind::ALL {
            let ty = PgType::new(kind);
            assert_eq!(PgType::from_oid(ty.oid()), Some(ty));
        }
        assert_eq!(PgType::from_oid(1186), None); // interval
    }

    #[test]
    fn catalog_facts() {
        let date = PgType::parse("date").unwrap();
        assert_eq!(
            (date.oid(), date.array_oid(), date.typlen()),
            (1082, 1182, 4)
        );
        assert!(!PgType::parse("json").unwrap().searchable());
        assert!(PgType::parse("jsonb").unwrap().searchable());
    }
}
