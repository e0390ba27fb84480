"""asyncpg, psycopg2 and pg8000 on a table whose columns pgcloak encrypts: each driver's
own way of sending parameters (asyncpg: binary, named statements; psycopg2: values
interpolated client-side into simple queries; pg8000: extended protocol with text),
arrays, COPY, server-side cursors and a refusal.

Usage: python_drivers_pii.py postgresql://user:pw@host:port/db

The proxy's policy (tests/clients.rs, PII_POLICY): in `py_people`, `email` is
deterministic and `first_name`/`last_name` are randomized.

Every check runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr. Prints
"python_drivers_pii OK" on stdout and exits 0 only if all passed. Before that it prints what
the application reads back through pgcloak at the end, for tests/clients.rs:

    stored py_people <id> <column> <hex of the UTF-8 value, or - for NULL>
"""

import asyncio
import io
import sys
import traceback
import urllib.parse

import asyncpg
import pg8000.native
import psycopg2
import psycopg2.errors

URL = sys.argv[1]
PII_COLUMNS = ("email", "first_name", "last_name")


def check_asyncpg():
    async def run():
        c = await asyncpg.connect(URL)
        try:
            await c.execute("DROP TABLE IF EXISTS py_people")
            await c.execute(
                "CREATE TABLE py_people (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text)"
            )
            row = await c.fetchrow(
                "INSERT INTO py_people (email, first_name, last_name) VALUES ($1, $2, $3) RETURNING id, email, first_name",
                "asy@example.com",
                "Asy",
                "Ncpg",
            )
            assert dict(row) == {"id": 1, "email": "asy@example.com", "first_name": "Asy"}, dict(row)
            await c.executemany(
                "INSERT INTO py_people (email, first_name) VALUES ($1, $2)",
                [("two@example.com", "Asy"), ("three@example.com", None)],
            )
            statement = await c.prepare("SELECT first_name FROM py_people WHERE email = $1")
            for email, first in [("asy@example.com", "Asy"), ("three@example.com", None)] * 3:
                assert await statement.fetchval(email) == first
            ids = await c.fetch(
                "SELECT id FROM py_people WHERE email = ANY($1::text[]) ORDER BY id",
                ["two@example.com", "three@example.com", "nobody@example.com"],
            )
            assert [r["id"] for r in ids] == [2, 3], ids
            async with c.transaction():
                emails = [r["email"] async for r in c.cursor("SELECT email FROM py_people WHERE first_name IS NOT NULL")]
            assert sorted(emails) == ["asy@example.com", "two@example.com"], emails
            try:
                await c.fetch("SELECT id FROM py_people WHERE email LIKE $1", "asy%")
                raise AssertionError("LIKE on an encrypted column was not refused")
            except asyncpg.FeatureNotSupportedError as e:
                assert "public.py_people.email" in str(e), str(e)
            # asyncpg's copy_records_to_table is binary COPY: refused, the session goes on.
            try:
                await c.copy_records_to_table("py_people", records=[("x@example.com",)], columns=["email"])
                raise AssertionError("binary COPY into a PII table was not refused")
            except asyncpg.FeatureNotSupportedError as e:
                assert "binary COPY" in str(e), str(e)
            assert await c.fetchval("SELECT count(*) FROM py_people") == 3
        finally:
            await c.close()

    asyncio.run(run())


def psycopg2_connect():
    conn = psycopg2.connect(URL, connect_timeout=10)
    conn.autocommit = True
    return conn


def check_psycopg2():
    # Not `with conn:`, which since psycopg2 2.9 opens a transaction even in autocommit.
    conn = psycopg2_connect()
    try:
        cur = conn.cursor()
        # psycopg2 interpolates parameters into the SQL text: literals, encrypted as such.
        cur.execute(
            "INSERT INTO py_people (email, first_name, last_name) VALUES (%s, %s, %s) RETURNING id",
            ("psy@example.com", "Psy'co", "Two\nLines"),
        )
        assert cur.fetchone() == (4,)
        cur.execute("SELECT first_name, last_name FROM py_people WHERE email = %s", ("psy@example.com",))
        assert cur.fetchall() == [("Psy'co", "Two\nLines")]
        cur.execute("SELECT count(*) FROM py_people WHERE email IN %s", (("psy@example.com", "asy@example.com"),))
        assert cur.fetchone() == (2,)
        cur.execute("SELECT count(*) FROM py_people WHERE email = ANY(%s)", (["psy@example.com", "two@example.com"],))
        assert cur.fetchone() == (2,)
        cur.copy_expert(
            "COPY py_people (email, first_name) FROM STDIN WITH (FORMAT csv)",
            io.StringIO('copy@example.com,"Co, Py"\n'),
        )
        cur.execute("SELECT first_name FROM py_people WHERE email = %s", ("copy@example.com",))
        assert cur.fetchone() == ("Co, Py",)
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT email, first_name FROM py_people WHERE id = 4) TO STDOUT", out)
        assert out.getvalue() == "psy@example.com\tPsy'co\n", repr(out.getvalue())
        try:
            cur.execute("SELECT id FROM py_people ORDER BY email")
            raise AssertionError("ORDER BY an encrypted column was not refused")
        except psycopg2.errors.FeatureNotSupported as e:
            assert "public.py_people.email" in str(e), str(e)
        # A named (server-side) cursor: DECLARE ... CURSOR FOR, then FETCH.
        conn.autocommit = False
        named = conn.cursor(name="py_named")
        named.itersize = 2
        named.execute("SELECT email FROM py_people WHERE email <> %s", ("nobody@example.com",))
        assert len(list(named)) == 5
        conn.commit()
    finally:
        conn.close()


def check_pg8000():
    url = urllib.parse.urlparse(URL)
    conn = pg8000.native.Connection(
        url.username,
        password=urllib.parse.unquote(url.password or ""),
        host=url.hostname,
        port=url.port,
        database=url.path.lstrip("/"),
    )
    try:
        rows = conn.run(
            "INSERT INTO py_people (email, first_name, last_name) VALUES (:e, :f, :l) RETURNING id",
            e="eight@example.com",
            f="Pg",
            l="Eight",
        )
        assert rows == [[6]], rows
        assert conn.run("SELECT last_name FROM py_people WHERE email = :e", e="eight@example.com") == [["Eight"]]
        conn.run("UPDATE py_people SET last_name = :l WHERE email = :e", l="Eighty", e="eight@example.com")
        assert conn.run("SELECT last_name FROM py_people WHERE id = 6") == [["Eighty"]]
    finally:
        conn.close()


def print_stored():
    conn = psycopg2_connect()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT id, {', '.join(PII_COLUMNS)} FROM py_people ORDER BY id")
        for row in cur.fetchall():
            for column, value in zip(PII_COLUMNS, row[1:]):
                shown = "-" if value is None else value.encode().hex()
                print(f"stored py_people {row[0]} {column} {shown}")
    finally:
        conn.close()


def main():
    print(
        f"asyncpg {asyncpg.__version__}, psycopg2 {psycopg2.__version__.split()[0]}, pg8000 {pg8000.__version__}",
        file=sys.stderr,
    )
    failed = []
    for check in (check_asyncpg, check_psycopg2, check_pg8000):
        try:
            check()
            status = "ok"
        except Exception:
            failed.append(check.__name__)
            status = "FAIL"
            traceback.print_exc()
        print(f"  {check.__name__:<20} {status}", file=sys.stderr, flush=True)
    print_stored()
    if failed:
        print(f"python_drivers_pii FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print("python_drivers_pii OK")


if __name__ == "__main__":
    main()
