"""Django 5.2 on psycopg 3 through pgcloak, as a new Django user would run it: `migrate`
(CreateModel, then an AlterField CharField -> TextField on a PII column), bulk_create of
hundreds of rows (Django's `INSERT ... SELECT * FROM UNNEST(...)`), filter/get/update/
delete on PII columns, both with Django's default client-side binding (values inlined by
psycopg) and with `server_side_binding` (parameters), and the refusals a user meets.

Usage: django_pii.py postgresql://user:pw@host:port/db

The proxy's policy (tests/clients.rs, PII_POLICY): in `dj_people` (django_app.Person),
`email` is deterministic and `first_name`/`last_name` are randomized; in `dj_short`,
`first_name` is randomized.

Every check runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr, and the
SQL Django sent for bulk_create and AlterField goes to stderr too. Prints "django_pii OK" on
stdout and exits 0 only if all passed. Before that it prints, one per line, what the
application reads back through pgcloak at the end, for tests/clients.rs:

    stored dj_people <id> <column> <hex of the UTF-8 value, or - for NULL>
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django  # noqa: E402
from django_db import database  # noqa: E402
from django.conf import settings  # noqa: E402

PII_COLUMNS = ("email", "first_name", "last_name")


settings.configure(
    DATABASES={
        "default": database(sys.argv[1]),
        "server": database(sys.argv[1], server_side_binding=True),
    },
    INSTALLED_APPS=["django_app"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    USE_TZ=True,
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import NotSupportedError, connection, connections, models  # noqa: E402

from django_app.models import Person  # noqa: E402

FIRST_NAMES = ("Bulk", "Zoë", "Ann", None)


def people(prefix, n):
    return [
        Person(
            email=f"{prefix}{i}@example.com",
            first_name=FIRST_NAMES[i % len(FIRST_NAMES)],
            last_name=None if i % 5 == 0 else f"{prefix.title()} {i}",
            note=f"{prefix} note {i}",
        )
        for i in range(n)
    ]


class Wire:
    """Django's execute_wrapper recording each statement as psycopg put it on the wire (its
    `_query`: the SQL with $n or with the values inlined, and the parameters' type OIDs and
    formats), e.g. `with Wire("default") as wire: ...; wire.sent("INSERT")`."""

    def __init__(self, alias):
        self.alias, self.statements = alias, []

    def __call__(self, execute, sql, params, many, context):
        try:
            return execute(sql, params, many, context)
        finally:
            query = getattr(context["cursor"].cursor, "_query", None)
            if query is not None and query.query is not None:
                self.statements.append((query.query.decode(), query.types, query.formats))

    def __enter__(self):
        self.wrapper = connections[self.alias].execute_wrapper(self)
        self.wrapper.__enter__()
        return self

    def __exit__(self, *exc):
        return self.wrapper.__exit__(*exc)

    def sent(self, fragment):
        """The statements sent that contain `fragment`, with their parameter types/formats."""
        return [s for s in self.statements if fragment in s[0]]


def show(what, sql, limit=400):
    print(f"{what}: {sql[:limit]}{' ...' if len(sql) > limit else ''}", file=sys.stderr)


def refused(exc, column):
    """pgcloak's refusal: SQLSTATE 0A000 (Django's NotSupportedError) naming the column."""
    assert isinstance(exc, NotSupportedError), repr(exc)
    assert getattr(exc.__cause__, "sqlstate", None) == "0A000", repr(exc.__cause__)
    assert f"public.{column}" in str(exc), str(exc)


def check_migrate_initial():
    assert connection.Database.__name__ == "psycopg", connection.Database
    with Wire("default") as wire:
        call_command("migrate", "django_app", "0001", verbosity=0)
    [(create, _, _)] = wire.sent('CREATE TABLE "dj_people"')
    show("CreateModel", create)
    assert '"email" varchar(200) NOT NULL UNIQUE' in create, create


def check_bulk_create():
    for alias, prefix, n in [("default", "bulk", 300), ("server", "param", 200)]:
        with Wire(alias) as wire:
            created = Person.objects.using(alias).bulk_create(people(prefix, n))
        assert len({p.pk for p in created}) == n and all(p.pk for p in created)
        [(insert, types, formats)] = wire.sent('INSERT INTO "dj_people"')
        show(f"bulk_create ({alias})", insert)
        if types:
            print(f"bulk_create ({alias}) parameter types {list(types)}, formats {[int(f) for f in formats]}", file=sys.stderr)
        assert 'SELECT * FROM UNNEST((' in insert, insert
        assert ")::varchar[]" in insert and ")::text[]" in insert, insert
        # Client-side binding inlines the arrays; server-side binding sends $1...$4.
        assert ("$1" in insert) == (alias == "server"), insert
        # Read back through pgcloak, in both bindings.
        back = {p.email: p for p in Person.objects.using(alias).filter(pk__in=[p.pk for p in created])}
        assert len(back) == n
        for p in people(prefix, n):
            q = back[p.email]
            assert (q.first_name, q.last_name, q.note) == (p.first_name, p.last_name, p.note), (q, p)


def check_queries():
    for alias, prefix in [("default", "bulk"), ("server", "param")]:
        objects = Person.objects.using(alias)
        assert objects.get(email=f"{prefix}7@example.com").last_name == f"{prefix.title()} 7"
        assert list(objects.filter(email=f"{prefix}8@example.com").values_list("first_name", flat=True)) == ["Bulk"]
        emails = [f"{prefix}{i}@example.com" for i in (1, 2, 3)] + ["nobody@example.com"]
        assert objects.filter(email__in=emails).count() == 3
        assert not objects.filter(email="nobody@example.com").exists()
        assert objects.filter(first_name__isnull=True, email__in=emails).count() == 1  # {prefix}3
        # update() with a filter on a deterministic column, and save() of an instance.
        assert objects.filter(email=f"{prefix}10@example.com").update(last_name="Updated", first_name="Ann") == 1
        p = objects.get(email=f"{prefix}10@example.com")
        assert (p.first_name, p.last_name) == ("Ann", "Updated")
        p.email = f"{prefix}10-renamed@example.com"
        p.last_name = None
        p.save()
        assert objects.get(pk=p.pk).email == f"{prefix}10-renamed@example.com"
        # delete() of a filtered queryset and of an instance.
        deleted, _ = objects.filter(email__in=[f"{prefix}11@example.com", f"{prefix}12@example.com"]).delete()
        assert deleted == 2
        objects.get(email=f"{prefix}13@example.com").delete()
        assert not objects.filter(email=f"{prefix}13@example.com").exists()
        # create() and get_or_create() send single-row INSERTs.
        objects.create(email=f"{prefix}-single@example.com", first_name="Single", last_name="Row")
        again, made = objects.get_or_create(email=f"{prefix}-single@example.com")
        assert not made and again.first_name == "Single"


def check_refusals():
    # Equality on a randomized column and LIKE on any PII column are refused, clearly;
    # the connection goes on.
    for query in [
        lambda: list(Person.objects.filter(first_name="Bulk")),
        lambda: list(Person.objects.filter(email__startswith="bulk")),
        lambda: list(Person.objects.order_by("email")[:3]),
    ]:
        try:
            query()
            raise AssertionError("not refused")
        except NotSupportedError as e:
            column = "dj_people.first_name" if "first_name" in str(e) else "dj_people.email"
            refused(e, column)
    assert Person.objects.count() == 500 - 6 + 2


# Values that array literals must quote or escape (psycopg inlines them client-side).
TRICKY = ["O'Neil", 'say "hi"', "a,b", "back\\slash", "NULL", "{braces}", "", " spaced ", "tab\there", "Zoë 😀"]


def check_bulk_create_quoting_and_conflicts():
    for alias in ("default", "server"):
        objects = Person.objects.using(alias)
        rows = [Person(email=f"{alias}-tricky{i}@example.com", first_name=v, last_name=v[::-1]) for i, v in enumerate(TRICKY)]
        objects.bulk_create(rows)
        back = {p.email: (p.first_name, p.last_name) for p in objects.filter(email__in=[r.email for r in rows])}
        assert back == {r.email: (r.first_name, r.last_name) for r in rows}, back
        # ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.first_name, and DO NOTHING.
        with Wire(alias) as wire:
            objects.bulk_create(
                [Person(email=f"{alias}-tricky{i}@example.com", first_name=f"Upsert {i}") for i in (0, 1)]
                + [Person(email=f"{alias}-upserted@example.com", first_name="New", last_name="Upsert")],
                update_conflicts=True,
                unique_fields=["email"],
                update_fields=["first_name"],
            )
            objects.bulk_create(
                [Person(email=f"{alias}-tricky2@example.com", first_name="Ignored"), Person(email=f"{alias}-ignored@example.com", first_name="Kept")],
                ignore_conflicts=True,
            )
        for sql, _, _ in wire.sent("ON CONFLICT"):
            show(f"bulk_create ({alias}, conflicts)", sql[sql.index("ON CONFLICT") - 60:], 200)
        got = {
            p.email: p.first_name
            for p in objects.filter(email__in=[f"{alias}-{e}@example.com" for e in ("tricky0", "tricky1", "tricky2", "upserted", "ignored")])
        }
        assert got == {
            f"{alias}-tricky0@example.com": "Upsert 0",
            f"{alias}-tricky1@example.com": "Upsert 1",
            f"{alias}-tricky2@example.com": TRICKY[2],
            f"{alias}-upserted@example.com": "New",
            f"{alias}-ignored@example.com": "Kept",
        }, got


def check_short_varchar():
    # CharField(max_length=50) on a randomized column: too short for its ciphertext, so the
    # CREATE TABLE is refused with the length needed (a migration's CreateModel sends the same).
    class Short(models.Model):
        first_name = models.CharField(max_length=50)

        class Meta:
            app_label = "django_app"
            db_table = "dj_short"

    try:
        with connection.schema_editor() as editor:
            editor.create_model(Short)
        raise AssertionError("CharField(max_length=50) on a randomized column was not refused")
    except NotSupportedError as e:
        refused(e, "dj_short.first_name")
        assert "cannot be varchar(50)" in str(e) and "needs varchar(59)" in str(e), str(e)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('dj_short') IS NULL")
        assert cursor.fetchone() == (True,)


def check_alter_field():
    with Wire("default") as wire:
        call_command("migrate", "django_app", verbosity=0)
    [(alter, _, _)] = wire.sent('ALTER COLUMN "email" TYPE')
    show("AlterField", alter)
    assert alter == 'ALTER TABLE "dj_people" ALTER COLUMN "email" TYPE text USING "email"::text', alter
    for sql, _, _ in wire.sent("_like"):
        show("AlterField (index)", sql)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'dj_people' AND column_name = 'email'"
        )
        assert cursor.fetchone() == ("text",)
    # The values survive unchanged: still decrypted, still searchable, still unique.
    assert Person.objects.get(email="bulk7@example.com").last_name == "Bulk 7"
    assert Person.objects.using("server").get(email="param9@example.com").first_name == "Zoë"


def check_alter_field_to_charfield_is_refused():
    # Unapplying 0002 alters email back to CharField(max_length=200): Django sends
    # `TYPE varchar(200) USING "email"::varchar(200)`, an explicit cast that would silently cut
    # envelopes longer than 200 characters. Refused; the migration is rolled back whole.
    with Wire("default") as wire:
        try:
            call_command("migrate", "django_app", "0001", verbosity=0)
            raise AssertionError("AlterField to CharField(max_length=200) was not refused")
        except NotSupportedError as e:
            refused(e, "dj_people.email")
            assert "would silently cut the ciphertexts" in str(e), str(e)
    [(alter, _, _)] = wire.sent('ALTER COLUMN "email" TYPE')
    show("AlterField back (refused)", alter)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'django_app'")
        assert cursor.fetchone() == (2,)
    assert Person.objects.get(email="bulk7@example.com").last_name == "Bulk 7"


CHECKS = [
    check_migrate_initial,
    check_bulk_create,
    check_queries,
    check_refusals,
    check_bulk_create_quoting_and_conflicts,
    check_short_varchar,
    check_alter_field,
    check_alter_field_to_charfield_is_refused,
]


def print_stored():
    for p in Person.objects.order_by("pk"):
        for column in PII_COLUMNS:
            value = getattr(p, column)
            print(f"stored dj_people {p.pk} {column} {'-' if value is None else value.encode().hex()}")


def main():
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok   {check.__name__}", file=sys.stderr)
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}", file=sys.stderr)
            traceback.print_exc()
    if failed:
        sys.exit(1)
    print_stored()
    print("django_pii OK")


if __name__ == "__main__":
    main()
