"""psycopg 3 through pgcloak, as an application would use it.

Usage: psycopg_smoke.py postgresql://user:pw@host:port/db

Every feature runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr.
Prints "psycopg OK" on stdout and exits 0 only if all passed.
"""

import sys
import threading
import time
import traceback
from decimal import Decimal

import psycopg
from psycopg import errors, sql

URL = sys.argv[1]


def connect(**kwargs):
    # connect_timeout guards against a proxy that accepts and then hangs.
    return psycopg.connect(URL, connect_timeout=10, **kwargs)


def test_basic_params(conn):
    conn.execute("DROP TABLE IF EXISTS smoke")
    conn.execute(
        "CREATE TABLE smoke (id int PRIMARY KEY, name text NOT NULL, "
        "amount numeric, data bytea, at timestamptz DEFAULT now())"
    )
    # Parameters are bound server-side: Parse/Bind/Describe/Execute/Sync.
    conn.execute(
        "INSERT INTO smoke (id, name, amount, data) VALUES (%s, %s, %s, %s)",
        (1, "alice", Decimal("12.50"), b"\x00\x01\xff"),
    )
    row = conn.execute("SELECT name, amount, data FROM smoke WHERE id = %s", (1,)).fetchone()
    assert row == ("alice", Decimal("12.50"), b"\x00\x01\xff"), row
    # Named placeholders and a NULL.
    conn.execute(
        "INSERT INTO smoke (id, name, amount) VALUES (%(id)s, %(name)s, %(amount)s)",
        {"id": 2, "name": "bob", "amount": None},
    )
    assert conn.execute("SELECT amount FROM smoke WHERE id = 2").fetchone() == (None,)


def test_executemany_fetch(conn):
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO smoke (id, name) VALUES (%s, %s)",
            [(i, f"user{i}") for i in range(10, 110)],
        )
        cur.execute("SELECT id, name FROM smoke WHERE id >= 10 ORDER BY id")
        first = cur.fetchone()
        some = cur.fetchmany(9)
        rest = cur.fetchall()
        assert first == (10, "user10"), first
        assert len(some) == 9 and some[-1] == (19, "user19"), some
        assert len(rest) == 90 and rest[-1] == (109, "user109"), rest[-1]
        # executemany with returning=True
        cur.executemany(
            "INSERT INTO smoke (id, name) VALUES (%s, %s) RETURNING id * 2",
            [(200, "r1"), (201, "r2")],
            returning=True,
        )
        got = []
        while True:
            got.append(cur.fetchone()[0])
            if not cur.nextset():
                break
        assert got == [400, 402], got


def test_prepared(conn):
    with conn.cursor() as cur:
        for i in range(8):
            cur.execute("SELECT name FROM smoke WHERE id = %s", (10 + i,), prepare=True)
            assert cur.fetchone() == (f"user{10 + i}",)
        # Automatic preparation after prepare_threshold (5) executions of the same query.
        for i in range(7):
            cur.execute("SELECT count(*) FROM smoke WHERE id > %s", (i,))
            cur.fetchone()
        names = [
            r[0]
            for r in cur.execute(
                "SELECT statement FROM pg_prepared_statements WHERE NOT from_sql"
            )
        ]
    assert any("WHERE id = $1" in s for s in names), names
    assert any("count(*)" in s for s in names), names


def test_binary(conn):
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT %s::int8, %s::text, %s::numeric, %s::bytea, ARRAY[1,2,3]::int4[], "
            "'2024-01-02 03:04:05+00'::timestamptz, %s::jsonb, 1.5::float8, true",
            (2**40, "héllo", Decimal("-3.14159"), b"\x00\xff", '{"a": [1, 2]}'),
            binary=True,
        )
        row = cur.fetchone()
    assert row[0] == 2**40 and row[1] == "héllo" and row[2] == Decimal("-3.14159"), row
    assert row[3] == b"\x00\xff" and row[4] == [1, 2, 3], row
    assert row[5].year == 2024 and row[5].second == 5, row
    assert row[6] == {"a": [1, 2]} and row[7] == 1.5 and row[8] is True, row
    # A bigger binary result that spans many proxy reads.
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT g, md5(g::text)::bytea FROM generate_series(1, 20000) g")
        rows = cur.fetchall()
    assert len(rows) == 20000 and rows[-1][0] == 20000, len(rows)


def test_transaction_rollback(conn):
    with conn.transaction():
        conn.execute("INSERT INTO smoke (id, name) VALUES (300, 'committed')")
    with conn.transaction():
        conn.execute("INSERT INTO smoke (id, name) VALUES (301, 'rolled back')")
        conn.execute("UPDATE smoke SET name = 'changed' WHERE id = 300")
        raise psycopg.Rollback()  # swallowed by the transaction block after ROLLBACK
    rows = conn.execute("SELECT id, name FROM smoke WHERE id IN (300, 301)").fetchall()
    assert rows == [(300, "committed")], rows
    # Savepoints: an inner rollback keeps the outer transaction.
    with conn.transaction():
        conn.execute("INSERT INTO smoke (id, name) VALUES (302, 'outer')")
        with conn.transaction() as inner:
            conn.execute("INSERT INTO smoke (id, name) VALUES (303, 'inner')")
            raise psycopg.Rollback(inner)
    ids = [r[0] for r in conn.execute("SELECT id FROM smoke WHERE id IN (302, 303)")]
    assert ids == [302], ids


def test_copy(conn):
    conn.execute("DROP TABLE IF EXISTS smoke_copy")
    conn.execute("CREATE TABLE smoke_copy (id int, name text, data bytea)")
    with conn.cursor() as cur:
        with cur.copy("COPY smoke_copy (id, name, data) FROM STDIN") as copy:
            for i in range(5000):
                copy.write_row((i, f"name\t{i}\n", bytes([i % 256]) * 3))
        assert cur.rowcount == 5000, cur.rowcount
        # Binary COPY in.
        with cur.copy("COPY smoke_copy (id, name, data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "bytea"])
            for i in range(5000, 6000):
                copy.write_row((i, None, b"\x00"))
        # Raw text block.
        with cur.copy("COPY smoke_copy (id, name) FROM STDIN") as copy:
            copy.write(b"7000\traw one\n7001\traw two\n")
        assert conn.execute("SELECT count(*) FROM smoke_copy").fetchone() == (6002,)

        out = []
        with cur.copy("COPY (SELECT id, name, data FROM smoke_copy ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "bytea"])
            for row in copy.rows():
                out.append(row)
        assert len(out) == 6002, len(out)
        assert out[7] == (7, "name\t7\n", b"\x07\x07\x07"), out[7]
        assert out[5500] == (5500, None, b"\x00"), out[5500]
        raw = b""
        with cur.copy("COPY (SELECT id FROM smoke_copy WHERE id >= 7000 ORDER BY id) TO STDOUT") as copy:
            for block in copy:
                raw += bytes(block)
        assert raw == b"7000\n7001\n", raw
        # A COPY that fails server-side, then the connection is usable.
        try:
            with cur.copy("COPY smoke_copy (id) FROM STDIN") as copy:
                copy.write(b"not-a-number\n")
            raise AssertionError("bad COPY data was accepted")
        except errors.InvalidTextRepresentation:
            pass
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pipeline(conn):
    with conn.pipeline() as p:
        cur1 = conn.execute("INSERT INTO smoke (id, name) VALUES (%s, %s) RETURNING id", (400, "p1"))
        cur2 = conn.execute("INSERT INTO smoke (id, name) VALUES (%s, %s) RETURNING id", (401, "p2"))
        cur3 = conn.execute("SELECT count(*) FROM smoke WHERE id >= 400")
        p.sync()
        assert cur1.fetchone() == (400,)
        assert cur2.fetchone() == (401,)
        assert cur3.fetchone() == (2,)
        # Many queries in flight without reading results in between.
        curs = [conn.execute("SELECT %s::int + 1", (i,)) for i in range(500)]
    assert [c.fetchone()[0] for c in curs] == list(range(1, 501))
    # An error inside a pipeline aborts the rest of that sync block only.
    try:
        with conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT 1/0")
            conn.execute("SELECT 2")
        raise AssertionError("pipeline error not raised")
    except errors.DivisionByZero:
        pass
    assert conn.execute("SELECT 3").fetchone() == (3,)


def test_server_side_cursor(conn):
    total = 0
    count = 0
    with conn.transaction():
        with conn.cursor(name="smoke_big") as cur:
            cur.itersize = 333
            cur.execute("SELECT g FROM generate_series(1, 10000) g")
            for (g,) in cur:
                total += g
                count += 1
    assert count == 10000 and total == 10000 * 10001 // 2, (count, total)
    # WITH HOLD cursor survives the transaction; scroll back.
    with conn.cursor(name="smoke_hold", withhold=True, scrollable=True) as cur:
        cur.execute("SELECT g FROM generate_series(1, 100) g")
        assert cur.fetchmany(10)[-1] == (10,)
        cur.scroll(0, mode="absolute")
        assert cur.fetchone() == (1,)


def test_error_recovery(conn):
    try:
        conn.execute("SELECT 1/0")
        raise AssertionError("no error raised")
    except errors.DivisionByZero as e:
        assert e.sqlstate == "22012", e.sqlstate
        assert "division by zero" in str(e), str(e)
    try:
        conn.execute("INSERT INTO smoke (id, name) VALUES (1, 'dup')")
        raise AssertionError("no error raised")
    except errors.UniqueViolation as e:
        assert e.sqlstate == "23505"
        assert e.diag.constraint_name == "smoke_pkey", e.diag.constraint_name
        assert e.diag.table_name == "smoke"
    try:
        conn.execute("SELECT * FROM no_such_table")
    except errors.UndefinedTable as e:
        assert e.sqlstate == "42P01"
    assert conn.execute("SELECT 'recovered'").fetchone() == ("recovered",)
    # Inside a transaction: aborted until rolled back.
    with connect() as c2:
        try:
            c2.execute("SELECT 1/0")
        except errors.DivisionByZero:
            pass
        try:
            c2.execute("SELECT 1")
            raise AssertionError("aborted transaction accepted a query")
        except errors.InFailedSqlTransaction as e:
            assert e.sqlstate == "25P02"
        c2.rollback()
        assert c2.execute("SELECT 2").fetchone() == (2,)


def test_listen_notify(conn):
    with connect(autocommit=True) as listener:
        listener.execute("LISTEN smoke_channel")
        conn.execute("NOTIFY smoke_channel, 'hello'")
        conn.execute("SELECT pg_notify('smoke_channel', %s)", ("world",))
        got = [
            (n.channel, n.payload)
            for n in listener.notifies(timeout=5.0, stop_after=2)
        ]
        assert got == [("smoke_channel", "hello"), ("smoke_channel", "world")], got
        # A notification sent from another thread while we wait.
        def later():
            time.sleep(0.3)
            with connect(autocommit=True) as c:
                c.execute("NOTIFY smoke_channel, 'late'")

        t = threading.Thread(target=later)
        t.start()
        got = [n.payload for n in listener.notifies(timeout=5.0, stop_after=1)]
        t.join()
        assert got == ["late"], got
        # The generator can also be stopped explicitly.
        conn.execute("NOTIFY smoke_channel, 'stop'")
        gen = listener.notifies(timeout=5.0)
        for n in gen:
            assert n.payload == "stop"
            gen.close()
        # And a timeout with nothing pending returns nothing.
        assert list(listener.notifies(timeout=0.2)) == []


def _cancel_from_thread(method):
    with connect(autocommit=True) as victim:
        pid = victim.info.backend_pid

        def canceller():
            # Cancel only once the backend is inside pg_sleep: an early cancel is a no-op.
            with connect(autocommit=True) as watcher:
                for _ in range(200):
                    row = watcher.execute(
                        "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()
                    if row and row[0] == "PgSleep":
                        break
                    time.sleep(0.05)
            getattr(victim, method)()

        t = threading.Thread(target=canceller)
        t.start()
        start = time.monotonic()
        try:
            victim.execute("SELECT pg_sleep(30)")
            raise AssertionError(f"{method}: pg_sleep was not cancelled")
        except errors.QueryCanceled as e:
            assert e.sqlstate == "57014", e.sqlstate
        finally:
            t.join()
        elapsed = time.monotonic() - start
        assert elapsed < 10, f"{method}: cancel took {elapsed:.1f}s"
        # The same connection (and backend) keeps working.
        assert victim.execute("SELECT pg_backend_pid()").fetchone() == (pid,)


def test_cancel(conn):
    _cancel_from_thread("cancel")


def test_cancel_safe(conn):
    # libpq >= 17's PQcancelCreate path: a fresh connection that negotiates
    # SSL like a normal one (SSLRequest -> 'N') before sending the CancelRequest.
    _cancel_from_thread("cancel_safe")


def test_connection_info(conn):
    info = conn.info
    assert info.server_version >= 100000, info.server_version
    assert info.parameter_status("client_encoding") == "UTF8"
    assert info.backend_pid > 0
    conn.execute("SET application_name = 'pgcloak-psycopg'")
    assert info.parameter_status("application_name") == "pgcloak-psycopg"
    # Reconnecting many times in a row.
    for _ in range(20):
        with connect() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)


TESTS = [
    test_basic_params,
    test_executemany_fetch,
    test_prepared,
    test_binary,
    test_transaction_rollback,
    test_copy,
    test_pipeline,
    test_server_side_cursor,
    test_error_recovery,
    test_listen_notify,
    test_cancel,
    test_cancel_safe,
    test_connection_info,
]


def main():
    print(
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
        file=sys.stderr,
    )
    failed = []
    with connect(autocommit=True) as conn:
        for test in TESTS:
            start = time.monotonic()
            try:
                test(conn)
                status = "ok"
            except Exception:
                failed.append(test.__name__)
                status = "FAIL"
                traceback.print_exc()
                if conn.closed:
                    conn = connect(autocommit=True)
                elif conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
            ms = (time.monotonic() - start) * 1000
            print(f"  {test.__name__:<28} {status} ({ms:.0f} ms)", file=sys.stderr, flush=True)
    if failed:
        print(f"psycopg FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print("psycopg OK")


if __name__ == "__main__":
    main()
