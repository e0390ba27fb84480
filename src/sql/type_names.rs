//! Names of PostgreSQL's built-in types by OID, for messages: a user reads `date`, not
//! `OID 1082`. OIDs below 10000 are fixed by Postgres itself (pg_type.dat); others belong
//! to extensions or user types and differ per database.

/// The SQL name of a type OID, or a description of an OID that is not built in.
pub fn type_name(oid: u32) -> String {
    let name = match oid {
        0 => "unspecified",
        16 => "boolean",
        17 => "bytea",
        18 => "\"char\"",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        24 => "regproc",
        25 => "text",
        26 => "oid",
        114 => "json",
        142 => "xml",
        199 => "json[]",
        600 => "point",
        650 => "cidr",
        700 => "real",
        701 => "double precision",
        705 => "unknown",
        774 => "macaddr8",
        790 => "money",
        829 => "macaddr",
        869 => "inet",
        1000 => "boolean[]",
        1001 => "bytea[]",
        1005 => "smallint[]",
        1007 => "integer[]",
        1009 => "text[]",
        1014 => "character[]",
        1015 => "character varying[]",
        1016 => "bigint[]",
        1021 => "real[]",
        1022 => "double precision[]",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1115 => "timestamp without time zone[]",
        1182 => "date[]",
        1184 => "timestamp with time zone",
        1185 => "timestamp with time zone[]",
        1186 => "interval",
        1231 => "numeric[]",
        1266 => "time with time zone",
        1560 => "bit",
        1562 => "bit varying",
        1700 => "numeric",
        2249 => "record",
        2950 => "uuid",
        2951 => "uuid[]",
        3802 => "jsonb",
        3807 => "jsonb[]",
        3904 => "int4range",
        3926 => "int8range",
        4089 => "regnamespace",
        _ if oid < 10000 => return format!("the built-in type with OID {oid}"),
        _ => return format!("the type with OID {oid} (an extension or user-defined type)"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::type_name;

    #[test]
    fn types_are_named_as_sql_names_them() {
        assert_eq!(type_name(1082), "date");
        assert_eq!(type_name(23), "integer");
        assert_eq!(type_name(1009), "text[]");
        assert_eq!(type_name(2277), "the built-in type with OID 2277");
        assert_eq!(
            type_name(16384),
            "the type with OID 16384 (an extension or user-defined type)"
        );
    }
}
