"""SQLAlchemy 2 ORM and psycopg 3 on tables whose columns pgcloak encrypts, as a new user
would write them.

Usage: sqlalchemy_pii.py postgresql://user:pw@host:port/db

The proxy's policy (tests/clients.rs, PII_POLICY): in `users` (the SQLAlchemy model),
`contacts` (psycopg) and `sa_short`, `email` is deterministic and `first_name`/`last_name`
are randomized.

Every check runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr. Prints
"sqlalchemy_pii OK" on stdout and exits 0 only if all passed. Before that it prints, one per
line, what the application reads back through pgcloak at the end, for tests/clients.rs to
compare with what Postgres stores:

    stored <table> <id> <column> <hex of the UTF-8 value, or - for NULL>

"""

import functools
import sys
import time
import traceback

import psycopg
import sqlalchemy
from psycopg import errors
from sqlalchemy import String, create_engine, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

URL = sys.argv[1]
PII_COLUMNS = ("first_name", "last_name", "email")


def engine_for(**kwargs):
    url = make_url(URL).set(drivername="postgresql+psycopg")
    return create_engine(url, pool_size=2, connect_args={"connect_timeout": 10}, **kwargs)


def psycopg_connect(**kwargs):
    return psycopg.connect(URL, connect_timeout=10, **kwargs)


class Base(DeclarativeBase):
    pass


class User(Base):
    """The model as a new user writes it: create_all sends CREATE TABLE users (...,
    UNIQUE (email)), which works on deterministic ciphertext."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str]
    last_name: Mapped[str]
    email: Mapped[str] = mapped_column(unique=True)


def refused(exc, column):
    """Asserts that the SQLAlchemy error `exc` is pgcloak's refusal naming `column`."""
    orig = exc.orig
    assert isinstance(orig, errors.FeatureNotSupported), repr(orig)
    assert orig.sqlstate == "0A000", orig.sqlstate
    assert f"public.users.{column}" in str(orig), str(orig)
    return str(orig)


# --- SQLAlchemy ORM ---------------------------------------------------------------------


def sa_crud():
    # The engine's defaults: a flush of several new objects is one "insertmanyvalues"
    # batch, INSERT ... SELECT ... FROM (VALUES ...) (see sa_batching_forms).
    engine = engine_for(pool_pre_ping=True)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    with Session(engine) as session:
        ada = User(first_name="Ada", last_name="Lovelace", email="ada@example.com")
        session.add(ada)
        session.commit()  # INSERT ... VALUES (%(first_name)s::VARCHAR, ...) RETURNING users.id
        ada_id = ada.id
        session.add_all(
            [
                User(first_name="Alan", last_name="Turing", email="alan@example.com"),
                User(first_name="Grace", last_name="Hopper", email="grace@example.com"),
                # Same first name as above: a randomized column stores two different ciphertexts.
                User(first_name="Alan", last_name="Kay", email="alan.kay@example.com"),
                User(first_name="Édith", last_name="Piaf ☃", email="edith@example.com"),
            ]
        )
        session.commit()
        # Core bulk INSERT (executemany, no RETURNING) through the ORM session.
        session.execute(
            insert(User),
            [
                {"first_name": f"Bulk{i}", "last_name": f"Row{i}", "email": f"bulk{i}@example.com"}
                for i in range(20)
            ],
        )
        session.commit()

    with Session(engine) as session:
        ada = session.get(User, ada_id)
        assert (ada.first_name, ada.last_name, ada.email) == ("Ada", "Lovelace", "ada@example.com")
        alan = session.query(User).filter_by(email="alan@example.com").one()
        assert (alan.first_name, alan.last_name) == ("Alan", "Turing"), alan
        grace = session.scalars(select(User).filter_by(email="grace@example.com")).one()
        assert grace.last_name == "Hopper"
        found = session.scalars(
            select(User.last_name).where(User.email.in_(["alan.kay@example.com", "edith@example.com"]))
        ).all()
        assert sorted(found) == ["Kay", "Piaf ☃"], found
        assert session.query(User).filter_by(email="nobody@example.com").one_or_none() is None
        # Sorting happens in the application: ORDER BY a PII column is refused (below).
        names = sorted(session.scalars(select(User.first_name).where(User.id <= 5)).all())
        assert names == ["Ada", "Alan", "Alan", "Grace", "Édith"], names

        alan.first_name = "Alan M."
        session.commit()  # UPDATE users SET first_name=%(first_name)s::VARCHAR WHERE users.id = ...
        session.expire_all()
        assert session.get(User, alan.id).first_name == "Alan M."

        assert session.scalar(select(func.count()).select_from(User)) == 25
        assert session.query(User).count() == 25  # SELECT count(*) FROM (SELECT users.email, ...)
        assert session.query(User).filter_by(email="bulk7@example.com").count() == 1
        assert session.scalar(select(func.count(User.email.distinct()))) == 25

        for i in range(10, 20):
            session.delete(session.scalars(select(User).filter_by(email=f"bulk{i}@example.com")).one())
        session.commit()
        assert session.scalar(select(func.count()).select_from(User)) == 15
        assert session.query(User).filter_by(email="bulk15@example.com").one_or_none() is None

    # What cannot work on ciphertext is refused; the session rolls back and goes on.
    with Session(engine) as session:
        try:
            session.scalars(select(User).filter_by(first_name="Ada")).all()
            raise AssertionError("= on a randomized column was accepted")
        except sqlalchemy.exc.NotSupportedError as e:
            message = refused(e, "first_name")
            assert "randomized" in message, message
            session.rollback()
        try:
            session.scalars(select(User).order_by(User.last_name)).all()
            raise AssertionError("ORDER BY a PII column was accepted")
        except sqlalchemy.exc.NotSupportedError as e:
            refused(e, "last_name")
            session.rollback()
        try:
            session.scalars(select(User).where(User.email.like("%@example.com"))).all()
            raise AssertionError("LIKE on a PII column was accepted")
        except sqlalchemy.exc.NotSupportedError as e:
            refused(e, "email")
            session.rollback()
        assert session.get(User, ada_id).email == "ada@example.com"
    engine.dispose()


def sa_batching_forms():
    # With the engine's defaults, a flush of several new objects whose ids the server makes
    # is sent as one "insertmanyvalues" batch:
    #   INSERT INTO users (first_name, last_name, email) SELECT p0::VARCHAR, p1::VARCHAR,
    #   p2::VARCHAR FROM (VALUES (%(first_name__0)s::VARCHAR, ..., 0), (..., 1)) AS
    #   imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1
    # pgcloak traces each selected column back to its VALUES column and encrypts those.
    engine = engine_for()
    statements = []
    sqlalchemy.event.listen(
        engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement)
    )
    with Session(engine) as session:
        before = session.scalar(select(func.count()).select_from(User))
        batch = [
            User(first_name="Batch", last_name="One", email="batch1@example.com"),
            User(first_name="Batch", last_name="Two", email="batch2@example.com"),
        ]
        session.add_all(batch)
        session.commit()
        assert any("FROM (VALUES" in s and "sen_counter" in s for s in statements), statements
        assert session.scalar(select(func.count()).select_from(User)) == before + 2
        assert [u.email for u in batch] == ["batch1@example.com", "batch2@example.com"]
        session.expire_all()
        got = session.scalars(select(User).filter_by(email="batch2@example.com")).one()
        assert (got.id, got.last_name) == (batch[1].id, "Two"), (got.id, got.last_name)
        # UNIQUE (email) from create_all holds on ciphertext, in a batch too.
        session.add_all(
            [
                User(first_name="Dup", last_name="A", email="dup@example.com"),
                User(first_name="Dup", last_name="B", email="batch1@example.com"),
            ]
        )
        try:
            session.commit()
            raise AssertionError("a duplicate email was accepted")
        except sqlalchemy.exc.IntegrityError as e:
            assert e.orig.sqlstate == "23505", e.orig.sqlstate
            # Postgres quotes the stored value; pgcloak decrypts it, never shows ciphertext.
            assert "pgc1$" not in str(e.orig), str(e.orig)
            session.rollback()
        assert session.scalar(select(func.count()).select_from(User)) == before + 2
        # One new object per flush is a plain INSERT ... VALUES ... RETURNING.
        session.add(User(first_name="Single", last_name="Flush", email="single@example.com"))
        session.commit()
        # Core executemany with RETURNING: one multi-row VALUES.
        ids = session.scalars(
            insert(User).returning(User.id),
            [
                {"first_name": "Multi", "last_name": "A", "email": "multi.a@example.com"},
                {"first_name": "Multi", "last_name": "B", "email": "multi.b@example.com"},
            ],
        ).all()
        assert len(ids) == 2, ids
        session.commit()
        got = session.scalars(select(User.last_name).where(User.id.in_(ids))).all()
        assert sorted(got) == ["A", "B"], got
    engine.dispose()


class IndexedBase(DeclarativeBase):
    pass


class IndexedUser(IndexedBase):
    __tablename__ = "sa_indexed"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(index=True)


def sa_index_email():
    # create_all sends CREATE INDEX ix_sa_indexed_email ON sa_indexed (email): equality
    # lookups on deterministic ciphertext can use it.
    engine = engine_for()
    IndexedBase.metadata.drop_all(engine)
    IndexedBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([IndexedUser(email=f"ix{i}@example.com") for i in range(50)])
        session.commit()
        assert session.scalars(select(IndexedUser).filter_by(email="ix7@example.com")).one().id == 8
    with psycopg_connect(autocommit=True) as conn:
        indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'sa_indexed'").fetchall()
        assert ("ix_sa_indexed_email",) in indexes, indexes
    IndexedBase.metadata.drop_all(engine)
    engine.dispose()


class ShortBase(DeclarativeBase):
    pass


class ShortName(ShortBase):
    __tablename__ = "sa_short"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(50))


def sa_short_varchar():
    # The stored envelope is longer than the plaintext (at least 43 characters for a
    # one-character deterministic value, 59 randomized, see docs/FORMAT.md): pgcloak refuses
    # String(50) for a randomized column at CREATE TABLE, naming the length needed, instead
    # of letting every later INSERT fail with "value too long".
    engine = engine_for()
    ShortBase.metadata.drop_all(engine)
    try:
        ShortBase.metadata.create_all(engine)
        raise AssertionError("varchar(50) accepted for a randomized PII column")
    except sqlalchemy.exc.DBAPIError as e:
        assert e.orig.sqlstate == "0A000", e.orig.sqlstate
        assert "cannot be varchar(50)" in str(e.orig), str(e.orig)
    engine.dispose()


# --- psycopg 3 --------------------------------------------------------------------------


def psycopg_check(test):
    """Runs `test(conn)` on a fresh autocommit connection."""

    @functools.wraps(test)
    def run():
        with psycopg_connect(autocommit=True) as conn:
            test(conn)

    return run



@psycopg_check
def pg_setup(conn):
    conn.execute("DROP TABLE IF EXISTS contacts")
    conn.execute(
        "CREATE TABLE contacts (id int PRIMARY KEY, first_name text, last_name text, "
        "email text, note text)"
    )


@psycopg_check
def pg_params(conn):
    # psycopg binds server-side by default: Parse/Bind with $n, encrypted in the Bind.
    conn.execute(
        "INSERT INTO contacts (id, first_name, last_name, email, note) VALUES (%s, %s, %s, %s, %s)",
        (1, "Ann", "Lee", "ann@example.com", "plain note"),
    )
    conn.execute(
        "INSERT INTO contacts (id, first_name, last_name, email) "
        "VALUES (%(id)s, %(first)s, %(last)s, %(email)s)",
        {"id": 2, "first": "Bob", "last": "Ray", "email": "bob@example.com"},
    )
    conn.execute(
        "INSERT INTO contacts (id, first_name, last_name, email) VALUES (%s, %s, %s, %s)",
        (3, None, "Nobody", None),
    )
    row = conn.execute(
        "SELECT id, first_name, last_name, note FROM contacts WHERE email = %s", ("ann@example.com",)
    ).fetchone()
    assert row == (1, "Ann", "Lee", "plain note"), row
    rows = conn.execute(
        "SELECT id FROM contacts WHERE email IN (%s, %s) ORDER BY id", ("bob@example.com", "ann@example.com")
    ).fetchall()
    assert rows == [(1,), (2,)], rows
    assert conn.execute("SELECT first_name, email FROM contacts WHERE id = 3").fetchone() == (None, None)
    assert conn.execute("SELECT id FROM contacts WHERE email IS NULL").fetchall() == [(3,)]
    conn.execute("UPDATE contacts SET last_name = %s WHERE email = %s", ("Lee-Smith", "ann@example.com"))
    assert conn.execute("SELECT last_name FROM contacts WHERE id = 1").fetchone() == ("Lee-Smith",)


@psycopg_check
def pg_executemany(conn):
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO contacts (id, first_name, last_name, email) VALUES (%s, %s, %s, %s)",
            [(100 + i, f"Many{i}", f"Last{i}", f"many{i}@example.com") for i in range(50)],
        )
        cur.executemany(
            "INSERT INTO contacts (id, first_name, last_name, email) VALUES (%s, %s, %s, %s) "
            "RETURNING id, first_name, email",
            [(200 + i, f"Ret{i}", "R", f"ret{i}@example.com") for i in range(3)],
            returning=True,
        )
        got = []
        while True:
            got.append(cur.fetchone())
            if not cur.nextset():
                break
    assert got == [(200 + i, f"Ret{i}", f"ret{i}@example.com") for i in range(3)], got
    assert conn.execute("SELECT count(*) FROM contacts WHERE id >= 100").fetchone() == (53,)


@psycopg_check
def pg_prepared_and_binary(conn):
    with conn.cursor() as cur:
        # Explicitly prepared, then past psycopg's prepare_threshold (5): named statements.
        for i in range(8):
            cur.execute("SELECT first_name FROM contacts WHERE email = %s", (f"many{i}@example.com",), prepare=True)
            assert cur.fetchone() == (f"Many{i}",)
        for i in range(8):
            cur.execute("SELECT last_name FROM contacts WHERE email = %s", (f"many{i}@example.com",))
            assert cur.fetchone() == (f"Last{i}",)
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT first_name, email FROM contacts WHERE email = %s", ("bob@example.com",), binary=True
        )
        assert cur.fetchall() == [("Bob", "bob@example.com")]
        cur.execute(
            "INSERT INTO contacts (id, first_name, email) VALUES (%s, %s, %s)",
            (4, "Binary", "binary@example.com"),
            binary=True,
        )
    # Client-side binding: the values are SQL literals, which pgcloak encrypts in the text.
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(
            "INSERT INTO contacts (id, first_name, last_name, email) VALUES (%s, %s, %s, %s)",
            (5, "O'Client", "Side", "client@example.com"),
        )
        cur.execute("SELECT id, first_name FROM contacts WHERE email = %s", ("client@example.com",))
        assert cur.fetchall() == [(5, "O'Client")]


@psycopg_check
def pg_copy(conn):
    with conn.cursor() as cur:
        with cur.copy("COPY contacts (id, first_name, last_name, email) FROM STDIN") as copy:
            for i in range(300):
                last = None if i % 10 == 0 else f"Tab\t{i} back\\slash\nnewline"
                copy.write_row((1000 + i, f"Copy{i}", last, f"copy{i}@example.com"))
        assert cur.rowcount == 300, cur.rowcount
        # A raw block in COPY text format, with an escape and a NULL.
        with cur.copy("COPY contacts (id, email, first_name) FROM STDIN") as copy:
            copy.write(b"2000\traw1@example.com\tRaw\\tOne\n2001\traw2@example.com\t\\N\n")
    assert conn.execute(
        "SELECT first_name, last_name FROM contacts WHERE email = %s", ("copy7@example.com",)
    ).fetchone() == ("Copy7", "Tab\t7 back\\slash\nnewline")
    assert conn.execute(
        "SELECT first_name, last_name FROM contacts WHERE email = %s", ("copy20@example.com",)
    ).fetchone() == ("Copy20", None)
    assert conn.execute(
        "SELECT id, first_name FROM contacts WHERE email IN (%s, %s) ORDER BY id",
        ("raw1@example.com", "raw2@example.com"),
    ).fetchall() == [(2000, "Raw\tOne"), (2001, None)]


@psycopg_check
def pg_named_cursor(conn):
    # A server-side cursor: DECLARE ... CURSOR FOR with the parameter bound (encrypted in
    # the Bind), then FETCHes whose rows come back decrypted.
    with conn.transaction():
        with conn.cursor(name="pii_cursor") as cur:
            cur.itersize = 50
            cur.execute(
                "SELECT id, first_name, email FROM contacts WHERE email <> %s AND id >= 1000 AND id < 1200",
                ("copy3@example.com",),
            )
            rows = list(cur)
    assert len(rows) == 199, len(rows)
    assert {(i, f"Copy{i - 1000}", f"copy{i - 1000}@example.com") for i in range(1000, 1200) if i != 1003} == set(rows)


@psycopg_check
def pg_refused(conn):
    # Autocommit: the refusal ends the statement, the connection goes on.
    try:
        conn.execute("SELECT id FROM contacts WHERE first_name = %s", ("Ann",))
        raise AssertionError("= on a randomized column was accepted")
    except errors.FeatureNotSupported as e:
        assert e.sqlstate == "0A000", e.sqlstate
        assert "public.contacts.first_name" in str(e), str(e)
        assert "Ann" not in str(e), str(e)
    assert conn.execute("SELECT first_name FROM contacts WHERE id = 1").fetchone() == ("Ann",)
    # In a transaction: the refusal aborts it like any error; roll back, then go on.
    with psycopg_connect() as tx:
        tx.execute("INSERT INTO contacts (id, first_name, email) VALUES (%s, %s, %s)", (6, "Tx", "tx@example.com"))
        try:
            tx.execute("SELECT id FROM contacts WHERE first_name = %s", ("Tx",))
            raise AssertionError("= on a randomized column was accepted")
        except errors.FeatureNotSupported as e:
            assert "public.contacts.first_name" in str(e), str(e)
        assert tx.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        tx.rollback()
        assert tx.execute("SELECT count(*) FROM contacts WHERE email = %s", ("tx@example.com",)).fetchone() == (0,)
        tx.commit()
    # A list parameter for = ANY(...): each element is encrypted.
    rows = conn.execute(
        "SELECT id FROM contacts WHERE email = ANY(%s) ORDER BY id", (["ann@example.com", "bob@example.com", "x"],)
    ).fetchall()
    assert rows == [(1,), (2,)], rows
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id FROM contacts WHERE email = ANY(%s) ORDER BY id", (["bob@example.com"],), binary=True)
        assert cur.fetchall() == [(2,)]
    assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)


TESTS = [
    sa_crud,
    sa_batching_forms,
    sa_index_email,
    sa_short_varchar,
    pg_setup,
    pg_params,
    pg_executemany,
    pg_prepared_and_binary,
    pg_copy,
    pg_named_cursor,
    pg_refused,
]


def print_stored():
    """What the application reads back at the end, for tests/clients.rs."""
    with psycopg_connect(autocommit=True) as conn:
        for table in ("users", "contacts"):
            rows = conn.execute(f"SELECT id, {', '.join(PII_COLUMNS)} FROM {table} ORDER BY id").fetchall()
            for row in rows:
                for column, value in zip(PII_COLUMNS, row[1:]):
                    shown = "-" if value is None else value.encode().hex()
                    print(f"stored {table} {row[0]} {column} {shown}")


def run(tests):
    failed = []
    for test in tests:
        name = test.__name__
        start = time.monotonic()
        try:
            test()
            status = "ok"
        except Exception:
            failed.append(name)
            status = "FAIL"
            traceback.print_exc()
        ms = (time.monotonic() - start) * 1000
        print(f"  {name:<28} {status} ({ms:.0f} ms)", file=sys.stderr, flush=True)
    return failed


def main():
    print(
        f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__} ({psycopg.pq.__impl__})",
        file=sys.stderr,
    )
    failed = run(TESTS)
    print_stored()
    if failed:
        print(f"sqlalchemy_pii FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print("sqlalchemy_pii OK")


if __name__ == "__main__":
    main()
