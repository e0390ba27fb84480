"""psycopg 3 on typed PII columns (issue 13) through pgcloak, compared with a table of real
types: every statement runs on `ps_pii` (its PII columns are text in Postgres, the policy
gives them a type) and on `ps_real` (the same columns with real types, not in the policy),
and the application must see the same Python values, the same errors, the same COPY output.

Usage: psycopg_typed.py postgresql://user:pw@host:port/db [check ...]

tests/typed_clients.rs creates both tables (TYPED_COLUMNS there) and the policy. psycopg
types its parameters with its dumpers: `%t` sends text with the Python type's OID (date
1082, Decimal 1700, bool 16, Jsonb 3802, aware datetime 1184, UUID 2950, bytea 17), `%s`
lets it pick binary where it can; an `int` is sent as int2/int4/int8 by its magnitude.

Every check runs even if an earlier one failed (or only the named ones); each prints
"ok"/"FAIL" to stderr. Prints "psycopg_typed OK" on stdout and exits 0 only if all passed.
"""

import sys
import traceback
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import psycopg
from psycopg.adapt import Loader
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int4

URL = sys.argv[1]
PII, REAL = "ps_pii", "ps_real"
TABLES = (PII, REAL)
COLUMNS = ("dob", "amount", "active", "attrs", "seen", "n", "uid", "blob")
NAMES = ", ".join(COLUMNS)
UTC2 = timezone(timedelta(hours=2))

# (id, dob, amount, active, attrs, seen, n, uid, blob). The ints are outside int2's range,
# so psycopg sends them as int4, the column's type (check_small_int_parameters covers int2).
ROWS = [
    (1, date(1990, 5, 17), Decimal("1234.5"), True, {"tier": "gold", "tags": [1, 2.5]},
     datetime(2024, 3, 1, 12, 30, tzinfo=UTC2), 70000, UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), b"\x00\xffpii"),
    (2, date(2000, 2, 29), Decimal("-0.01"), False, {"a": None, "z": "Zoë"},
     datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), -2147483648, UUID(int=0), b""),
    (3, date(1, 1, 1), Decimal("99999999.99"), True, [],
     datetime(2024, 7, 1, 8, 0, tzinfo=timezone(timedelta(hours=-7))), 2147483647, UUID(int=2**128 - 1), bytes(range(256))),
]
# What reading ROWS back gives (numeric(10,2) prints two decimals).
EXPECTED = [
    (1, date(1990, 5, 17), Decimal("1234.50"), True, {"tier": "gold", "tags": [1, 2.5]},
     datetime(2024, 3, 1, 10, 30, tzinfo=timezone.utc), 70000, UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), b"\x00\xffpii"),
    (2, date(2000, 2, 29), Decimal("-0.01"), False, {"a": None, "z": "Zoë"},
     datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), -2147483648, UUID(int=0), b""),
    (3, date(1, 1, 1), Decimal("99999999.99"), True, [],
     datetime(2024, 7, 1, 15, 0, tzinfo=timezone.utc), 2147483647, UUID(int=2**128 - 1), bytes(range(256))),
]
TYPES = (int, date, Decimal, bool, (dict, list), datetime, int, UUID, bytes)


def connect(**kwargs):
    return psycopg.connect(URL, autocommit=True, connect_timeout=10, **kwargs)


def params(row, placeholder="%t"):
    return tuple(Jsonb(v) if isinstance(v, (dict, list)) else v for v in row), ", ".join([placeholder] * len(row))


def insert(conn, table, rows, placeholder="%t", many=False):
    values = [params(r, placeholder)[0] for r in rows]
    sql = f"INSERT INTO {table} (id, {NAMES}) VALUES ({params(rows[0], placeholder)[1]})"
    cur = conn.cursor()
    if many:
        cur.executemany(sql, values)
    else:
        for v in values:
            cur.execute(sql, v)


def select(conn, table, where="", args=(), **kwargs):
    return conn.execute(f"SELECT id, {NAMES} FROM {table} {where} ORDER BY id", args, **kwargs).fetchall()


def same(a, b, what):
    assert a == b, f"{what}:\n  {PII}:  {a!r}\n  {REAL}: {b!r}"


def check_typed(rows):
    for row, want in zip(rows, EXPECTED):
        assert row == want, f"{row!r} != {want!r}"
        for value, ty in zip(row, TYPES):
            assert isinstance(value, ty), f"{value!r} is not {ty}"
        assert str(row[2]) == str(want[2]), f"numeric(10,2) scale: {row[2]}"
        assert row[5].utcoffset() is not None, "timestamptz reads back aware"


def reset(conn):
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")


def check_insert_and_select():
    with connect() as conn:
        reset(conn)
        for table in TABLES:
            insert(conn, table, ROWS[:1])  # execute, text parameters
            insert(conn, table, ROWS[1:], "%s", many=True)  # executemany (pipeline), binary where psycopg can
        pii, real = select(conn, PII), select(conn, REAL)
        same(pii, real, "rows")
        check_typed(pii)
        # The description names the types.
        cur = conn.execute(f"SELECT {NAMES} FROM {PII} LIMIT 1")
        real_cur = conn.execute(f"SELECT {NAMES} FROM {REAL} LIMIT 1")
        same([(d.name, d.type_code, d.precision, d.scale) for d in cur.description],
             [(d.name, d.type_code, d.precision, d.scale) for d in real_cur.description], "description")


def check_equality_search():
    with connect() as conn:
        for table in TABLES:
            for where, args, ids in [
                ("WHERE dob = %t", (date(1990, 5, 17),), [1]),
                ("WHERE dob = %s", (date(2000, 2, 29),), [2]),  # binary
                ("WHERE amount = %t", (Decimal("1234.5"),), [1]),
                ("WHERE amount = %t", (Decimal("1234.500"),), [1]),
                ("WHERE active = %t", (False,), None),  # randomized: refused through pgcloak
                ("WHERE attrs = %t", (Jsonb({"tags": [1, 2.5], "tier": "gold"}),), [1]),
                ("WHERE seen = %t", (datetime(2024, 3, 1, 10, 30, tzinfo=timezone.utc),), [1]),
                ("WHERE n = %t", (Int4(-2147483648),), [2]),
                ("WHERE n = %t", (2147483647,), [3]),
                ("WHERE uid = %t", (UUID("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),), [1]),
                ("WHERE uid = %t", ("a0eebc999c0b4ef8bb6d6bb9bd380a11",), [1]),  # unknown-typed text
                ("WHERE dob IN (%t, %t)", (date(1990, 5, 17), date(1, 1, 1)), [1, 3]),
                ("WHERE dob = ANY(%t)", ([date(2000, 2, 29), date(1, 1, 1), date(2020, 1, 1)],), [2, 3]),
                ("WHERE dob = ANY(%s)", ([date(1990, 5, 17)],), [1]),  # binary date[]
                ("WHERE dob = '1990-05-17'", (), [1]),
            ]:
                if ids is None and table == PII:
                    try:
                        conn.execute(f"SELECT id FROM {table} {where}", args)
                        raise AssertionError(f"{where} on a randomized column was not refused")
                    except psycopg.errors.FeatureNotSupported as e:
                        assert f"{PII}.active" in str(e), str(e)
                    continue
                got = [r[0] for r in conn.execute(f"SELECT id FROM {table} {where} ORDER BY id", args)]
                if ids is not None:
                    assert got == ids, f"{table} {where} {args!r}: {got}"


def check_nulls():
    with connect() as conn:
        for table in TABLES:
            conn.execute(f"INSERT INTO {table} (id, {NAMES}) VALUES (%t, {', '.join(['%t'] * 8)})", (9, *[None] * 8))
            conn.execute(f"INSERT INTO {table} (id) VALUES (10)")
            rows = select(conn, table, "WHERE id IN (9, 10)")
            assert rows == [(9, *[None] * 8), (10, *[None] * 8)], rows
            ids = conn.execute(f"SELECT id FROM {table} WHERE dob IS NULL AND uid IS NULL ORDER BY id").fetchall()
            assert ids == [(9,), (10,)], ids
            conn.execute(f"DELETE FROM {table} WHERE id IN (9, 10)")


# (column, value, SQLSTATE Postgres answers for the real column)
INVALID = [
    ("dob", "2020-13-45", "22008"),
    ("dob", "not a date", "22007"),
    ("amount", Decimal("123456789.5"), "22003"),
    ("amount", "12x", "22P02"),
    ("active", "maybe", "22P02"),
    ("attrs", "{", "22P02"),
    ("seen", "2020-01-02 25:00+00", "22008"),
    ("n", "4x", "22P02"),
    ("n", "3000000000", "22003"),
    ("uid", "123", "22P02"),
]


def check_invalid_values():
    with connect() as conn:
        for column, value, sqlstate in INVALID:
            codes = []
            for table in TABLES:
                try:
                    conn.execute(f"INSERT INTO {table} (id, {column}) VALUES (20, %t)", (value,))
                    raise AssertionError(f"{table}.{column} = {value!r} was accepted")
                except psycopg.Error as e:
                    codes.append(e.sqlstate)
                    if table == PII:
                        message = str(e)
                        assert f"{PII}.{column}" in message, message
                        assert str(value) not in message, message
            assert codes == [sqlstate, sqlstate], f"{column} = {value!r}: {codes}"
        conn.execute("SELECT 1")


def copy_out(conn, table, options=""):
    with conn.cursor().copy(f"COPY {table} (id, {NAMES}) TO STDOUT{options}") as copy:
        return b"".join(bytes(block) for block in copy)


def check_copy():
    with connect() as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE id >= 100")
            with conn.cursor().copy(f"COPY {table} (id, {NAMES}) FROM STDIN") as copy:
                for row in ROWS:
                    copy.write_row(params((row[0] + 100, *row[1:]))[0])
                copy.write_row((104, *[None] * 8))
        pii, real = select(conn, PII, "WHERE id >= 100"), select(conn, REAL, "WHERE id >= 100")
        same(pii, real, "rows copied in")
        check_typed([(r[0] - 100, *r[1:]) for r in pii[:3]])
        for options in ("", " WITH (FORMAT csv)"):
            same(copy_out(conn, PII, options), copy_out(conn, REAL, options), f"COPY TO STDOUT{options}")
        # COPY out read as typed rows.
        with conn.cursor().copy(f"COPY {PII} (id, {NAMES}) TO STDOUT") as copy:
            copy.set_types(["int4", "date", "numeric", "bool", "jsonb", "timestamptz", "int4", "uuid", "bytea"])
            rows = sorted(copy.rows())
        check_typed([(r[0] - 100, *r[1:]) for r in rows if 100 < r[0] < 104])
        # An invalid field fails the COPY with Postgres's SQLSTATE.
        for table in TABLES:
            try:
                with conn.cursor().copy(f"COPY {table} (id, dob) FROM STDIN") as copy:
                    copy.write_row((200, "2020-02-30"))
                raise AssertionError(f"{table}: COPY of 2020-02-30 was accepted")
            except psycopg.errors.DatetimeFieldOverflow:
                pass
        conn.execute("SELECT 1")


def check_binary_results():
    with connect() as conn:
        pii = select(conn, PII, "WHERE id < 100", binary=True)
        same(pii, select(conn, REAL, "WHERE id < 100", binary=True), "binary rows")
        check_typed(pii)
        cur = conn.cursor(binary=True)
        cur.execute(f"SELECT id, {NAMES} FROM {PII} WHERE dob = %s AND id < 100", (date(1990, 5, 17),))
        check_typed(cur.fetchall())


class Raw(Loader):
    """Keeps the text Postgres (or pgcloak) sent."""

    def load(self, data):
        return bytes(data).decode()


def raw_text(conn, table, where="WHERE id < 100"):
    cur = conn.cursor()
    for name in ("date", "timestamptz", "numeric", "jsonb", "bool", "uuid", "bytea"):
        cur.adapters.register_loader(name, Raw)
    return cur.execute(f"SELECT id, {NAMES} FROM {table} {where} ORDER BY id").fetchall()


def check_date_style():
    with connect() as conn:
        conn.execute("SET TimeZone = 'Europe/Paris'")
        for style in ("SQL, DMY", "German", "ISO, DMY", "SQL, MDY"):
            conn.execute(f"SET DateStyle = '{style}'")
            same(raw_text(conn, PII), raw_text(conn, REAL), f"text under DateStyle {style}")
            # psycopg reads dates in this style itself.
            dates = [r[0] for r in conn.execute(f"SELECT dob FROM {PII} WHERE id < 100 ORDER BY id")]
            assert dates == [r[1] for r in EXPECTED], f"{style}: {dates}"
        conn.execute("SET DateStyle = 'ISO, MDY'")
        check_typed(select(conn, PII, "WHERE id < 100"))


def check_date_style_input():
    with connect() as conn:
        # Input in the session's order: 03/04/2020 is 3 April under DMY.
        conn.execute("SET DateStyle = 'SQL, DMY'")
        for table in TABLES:
            conn.execute(f"INSERT INTO {table} (id, dob) VALUES (30, %t)", ("03/04/2020",))
            got = conn.execute(f"SELECT dob FROM {table} WHERE id = 30").fetchone()
            assert got == (date(2020, 4, 3),), f"{table}: {got}"
            assert conn.execute(f"SELECT id FROM {table} WHERE dob = %t", ("03/04/2020",)).fetchall() == [(30,)]
            conn.execute(f"DELETE FROM {table} WHERE id = 30")


def check_small_int_parameters():
    # A Python int that fits int2 is sent as int2 (OID 21), a big one as int8 (20): Postgres
    # casts both to an integer column (assignment and comparison).
    with connect() as conn:
        for table in TABLES:
            conn.execute(f"INSERT INTO {table} (id, n) VALUES (40, %t)", (7,))
            conn.execute(f"INSERT INTO {table} (id, n) VALUES (41, %s)", (8,))
            assert conn.execute(f"SELECT n FROM {table} WHERE id = 40").fetchone() == (7,)
            assert conn.execute(f"SELECT id FROM {table} WHERE n = %t", (7,)).fetchall() == [(40,)]
            assert conn.execute(f"SELECT id FROM {table} WHERE n = %t", (2**40,)).fetchall() == []
            conn.execute(f"DELETE FROM {table} WHERE id IN (40, 41)")


def check_naive_datetime_for_timestamptz():
    # A naive datetime is sent as timestamp (OID 1114); Postgres reads it in the session's
    # TimeZone for a timestamptz column.
    with connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            conn.execute(f"INSERT INTO {table} (id, seen) VALUES (50, %t)", (datetime(2024, 3, 1, 10, 30),))
            got = conn.execute(f"SELECT seen FROM {table} WHERE id = 50").fetchone()
            assert got == (datetime(2024, 3, 1, 10, 30, tzinfo=timezone.utc),), f"{table}: {got}"
            conn.execute(f"DELETE FROM {table} WHERE id = 50")


CHECKS = [
    check_insert_and_select,
    check_equality_search,
    check_nulls,
    check_invalid_values,
    check_copy,
    check_binary_results,
    check_date_style,
    check_date_style_input,
    check_small_int_parameters,
    check_naive_datetime_for_timestamptz,
]


def main():
    wanted = sys.argv[2:]
    failed = 0
    for check in CHECKS:
        if wanted and check.__name__ not in wanted:
            continue
        try:
            check()
            print(f"ok   {check.__name__}", file=sys.stderr)
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}", file=sys.stderr)
            traceback.print_exc()
    if failed:
        sys.exit(1)
    print("psycopg_typed OK")


if __name__ == "__main__":
    main()
