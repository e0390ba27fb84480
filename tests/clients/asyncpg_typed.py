"""asyncpg on typed PII columns (issue 13) through pgcloak, compared with a table of real
types: every statement runs on `asy_pii` (PII columns, text in Postgres, typed by the
policy) and on `asy_real` (the same columns with real types). asyncpg prepares every
statement, encodes each parameter in binary as the ParameterDescription says and asks for
binary results, so it relies on pgcloak describing the declared types.

Usage: asyncpg_typed.py postgresql://user:pw@host:port/db [check ...]

tests/typed_clients.rs creates both tables (TYPED_COLUMNS there) and the policy. Every
check runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr. Prints
"asyncpg_typed OK" on stdout and exits 0 only if all passed.
"""

import asyncio
import json
import sys
import traceback
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import asyncpg

URL = sys.argv[1]
PII, REAL = "asy_pii", "asy_real"
TABLES = (PII, REAL)
COLUMNS = ("dob", "amount", "active", "attrs", "seen", "n", "uid", "blob")
NAMES = ", ".join(COLUMNS)
INSERT = f"INSERT INTO {{}} (id, {NAMES}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
SELECT = f"SELECT id, {NAMES} FROM {{}} ORDER BY id"

ROWS = [
    (1, date(1990, 5, 17), Decimal("1234.5"), True, {"tier": "gold", "tags": [1, 2.5]},
     datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))), 7, UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), b"\x00\xffpii"),
    (2, date(2000, 2, 29), Decimal("-0.01"), False, {"a": None, "z": "Zoë"},
     datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), -2147483648, UUID(int=0), b""),
    (3, date(1, 1, 1), Decimal("99999999.99"), True, [],
     datetime(2024, 7, 1, 8, 0, tzinfo=timezone(timedelta(hours=-7))), 2147483647, UUID(int=2**128 - 1), bytes(range(256))),
    (4, None, None, None, None, None, None, None, None),
]
TYPES = (int, date, Decimal, bool, (dict, list), datetime, int, UUID, bytes)


async def connect():
    conn = await asyncpg.connect(URL, timeout=10)
    # jsonb as Python objects (asyncpg's default is str): a text-format codec.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return conn


def check_typed(rows):
    assert [tuple(r) for r in rows] == ROWS, [tuple(r) for r in rows]
    for row in rows[:3]:
        for value, ty in zip(row, TYPES):
            assert isinstance(value, ty), f"{value!r} is not {ty}"
        assert str(row["amount"]).count(".") == 1 and len(str(row["amount"]).split(".")[1]) == 2, row["amount"]
        assert row["seen"].tzinfo is not None


async def check_described_types(conn):
    for sql in (INSERT, SELECT, "SELECT id FROM {} WHERE dob = $1 AND amount = $2 AND uid = ANY($3)"):
        pii, real = await conn.prepare(sql.format(PII)), await conn.prepare(sql.format(REAL))
        assert [t.name for t in pii.get_parameters()] == [t.name for t in real.get_parameters()], (
            sql, pii.get_parameters(), real.get_parameters())
        assert [(a.name, a.type.name) for a in pii.get_attributes()] == [(a.name, a.type.name) for a in real.get_attributes()]


async def check_insert_and_fetch(conn):
    for table in TABLES:
        await conn.execute(f"DELETE FROM {table}")
        await conn.execute(INSERT.format(table), *ROWS[0])
        await conn.executemany(INSERT.format(table), ROWS[1:])
    pii, real = await conn.fetch(SELECT.format(PII)), await conn.fetch(SELECT.format(REAL))
    assert [tuple(r) for r in pii] == [tuple(r) for r in real], (pii, real)
    check_typed(pii)
    # A prepared statement, fetched row by row and by value.
    statement = await conn.prepare(f"SELECT dob, amount, seen FROM {PII} WHERE id = $1")
    assert await statement.fetchrow(1) == (date(1990, 5, 17), Decimal("1234.50"), ROWS[0][5])
    assert await statement.fetchval(4) is None


async def check_equality_search(conn):
    for table in TABLES:
        for where, args, ids in [
            ("dob = $1", (date(1990, 5, 17),), [1]),
            ("amount = $1", (Decimal("1234.500"),), [1]),
            ("attrs = $1", ({"tags": [1, 2.5], "tier": "gold"},), [1]),
            ("seen = $1", (datetime(2024, 3, 1, 10, 30, tzinfo=timezone.utc),), [1]),
            ("n = $1", (-2147483648,), [2]),
            ("uid = $1", (UUID(int=2**128 - 1),), [3]),
            ("dob = ANY($1)", ([date(2000, 2, 29), date(1, 1, 1), date(2020, 1, 1)],), [2, 3]),
            ("dob IN ($1, $2)", (date(1990, 5, 17), date(2000, 2, 29)), [1, 2]),
            ("dob IS NULL", (), [4]),
        ]:
            got = [r["id"] for r in await conn.fetch(f"SELECT id FROM {table} WHERE {where} ORDER BY id", *args)]
            assert got == ids, f"{table} WHERE {where} {args!r}: {got}"
    # Ranges stay refused on the encrypted column.
    try:
        await conn.fetch(f"SELECT id FROM {PII} WHERE dob < $1", date(2000, 1, 1))
        raise AssertionError("a range on an encrypted date was not refused")
    except asyncpg.FeatureNotSupportedError as e:
        assert f"{PII}.dob" in str(e), str(e)


async def check_explicit_casts(conn):
    # Parameters cast to the column's type, as hand-written SQL often does.
    for table in TABLES:
        for where, args, ids in [
            ("dob = $1::date", (date(1990, 5, 17),), [1]),
            ("uid = ANY($1::uuid[])", ([UUID(int=0)],), [2]),
        ]:
            got = [r["id"] for r in await conn.fetch(f"SELECT id FROM {table} WHERE {where} ORDER BY id", *args)]
            assert got == ids, f"{table} WHERE {where} {args!r}: {got}"


async def check_invalid_values(conn):
    # asyncpg checks Python values itself; what reaches the server invalid: a numeric too
    # large for numeric(10,2), and a jsonb text that is not JSON.
    raw = await asyncpg.connect(URL, timeout=10)  # jsonb as str, binary
    try:
        for c, column, value, sqlstate in [
            (conn, "amount", Decimal("123456789.5"), "22003"),
            (raw, "attrs", "{", "22P02"),
            (conn, "amount", Decimal("NaN"), None),  # numeric(10,2) holds NaN
        ]:
            codes = []
            for table in TABLES:
                try:
                    await c.execute(f"INSERT INTO {table} (id, {column}) VALUES (20, $1)", value)
                    await c.execute(f"DELETE FROM {table} WHERE id = 20")
                    codes.append(None)
                except asyncpg.PostgresError as e:
                    codes.append(e.sqlstate)
                    if table == PII:
                        assert f"{PII}.{column}" in str(e) and str(value) not in str(e), str(e)
            assert codes == [sqlstate, sqlstate], f"{column} = {value!r}: {codes}"
    finally:
        await raw.close()
    assert await conn.fetchval("SELECT 1") == 1


async def check_jsonb_as_text(conn):
    # Without a codec asyncpg sends and reads jsonb as str (binary format, version 1).
    raw = await asyncpg.connect(URL, timeout=10)
    try:
        for table in TABLES:
            await raw.execute(f"INSERT INTO {table} (id, attrs) VALUES (30, $1)", '{"b": 1.50, "a": [true]}')
        pii = await raw.fetchval(f"SELECT attrs FROM {PII} WHERE id = 30")
        real = await raw.fetchval(f"SELECT attrs FROM {REAL} WHERE id = 30")
        # Numbers inside jsonb lose trailing fractional zeros (a documented difference).
        assert json.loads(pii) == json.loads(real) and pii == '{"a": [true], "b": 1.5}', (pii, real)
        assert await raw.fetchval(f"SELECT id FROM {PII} WHERE attrs = $1", '{"a":[true],"b":1.5}') == 30
        for table in TABLES:
            await raw.execute(f"DELETE FROM {table} WHERE id = 30")
    finally:
        await raw.close()


CHECKS = [
    check_described_types,
    check_insert_and_fetch,
    check_equality_search,
    check_invalid_values,
    check_jsonb_as_text,
    check_explicit_casts,
]


async def main():
    failed = 0
    conn = await connect()
    try:
        for check in CHECKS:
            if sys.argv[2:] and check.__name__ not in sys.argv[2:]:
                continue
            try:
                await check(conn)
                print(f"ok   {check.__name__}", file=sys.stderr)
            except Exception:
                failed += 1
                print(f"FAIL {check.__name__}", file=sys.stderr)
                traceback.print_exc()
    finally:
        await conn.close()
    if failed:
        sys.exit(1)
    print("asyncpg_typed OK")


if __name__ == "__main__":
    asyncio.run(main())
