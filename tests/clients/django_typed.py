"""Django 5.2 on psycopg 3 through pgcloak with typed PII columns (issue 13): a model with
DateField, DecimalField(max_digits=10, decimal_places=2), BooleanField, JSONField and an
aware DateTimeField on columns the policy types as date, numeric(10,2), boolean, jsonb and
timestamptz (django_typed_app.TypedPerson, table `dj_typed`).

What a Django user meets: a migration that creates the fields as Django would (`"dob" date`)
is refused by pgcloak, since an encrypted column holds text envelopes; the migration that
works creates the table with RunSQL (PII columns as text) inside SeparateDatabaseAndState,
so Django's state keeps the ordinary fields (django_typed_app/migrations/0001_initial.py).
Then create, filter by value (=, IN, IS NULL), bulk_create, update, save and read back with
Django's Python types, with Django's default client-side binding (values inlined by psycopg
as `'1990-05-17'::date`) and with `server_side_binding` (parameters typed by psycopg).

Usage: django_typed.py postgresql://user:pw@host:port/db [default|server ...]

`default` uses Django's client-side binding, `server` server_side_binding; both by default.

Every check runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr, with the
SQL Django sent. Prints "django_typed OK" on stdout and exits 0 only if all passed.
"""

import os
import sys
import traceback
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django  # noqa: E402
from django_db import database  # noqa: E402
from django.conf import settings  # noqa: E402



settings.configure(
    DATABASES={
        "default": database(sys.argv[1]),
        "server": database(sys.argv[1], server_side_binding=True),
    },
    INSTALLED_APPS=["django_typed_app"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    USE_TZ=True,
    TIME_ZONE="Europe/Paris",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import NotSupportedError, connection, connections, models  # noqa: E402

from django_typed_app.models import TypedPerson  # noqa: E402

ALIASES = ("default", "server")
UTC2 = timezone(timedelta(hours=2))


class Wire:
    """Records the SQL each statement put on the wire (psycopg's `_query`)."""

    def __init__(self, alias):
        self.alias, self.statements = alias, []

    def __call__(self, execute, sql, params, many, context):
        try:
            return execute(sql, params, many, context)
        finally:
            query = getattr(context["cursor"].cursor, "_query", None)
            if query is not None and query.query is not None:
                self.statements.append((query.query.decode(), query.types))

    def __enter__(self):
        self.wrapper = connections[self.alias].execute_wrapper(self)
        self.wrapper.__enter__()
        return self

    def __exit__(self, *exc):
        for sql, types in self.statements:
            print(f"  {self.alias}: {sql[:300]}{' ...' if len(sql) > 300 else ''} {list(types or [])}", file=sys.stderr)
        return self.wrapper.__exit__(*exc)


def refused(exc, column, fragment=""):
    """pgcloak's refusal: SQLSTATE 0A000 (Django's NotSupportedError) naming the column."""
    assert isinstance(exc, NotSupportedError), repr(exc)
    assert getattr(exc.__cause__, "sqlstate", None) == "0A000", repr(exc.__cause__)
    assert f"public.dj_typed.{column}" in str(exc) and fragment in str(exc), str(exc)


def person(i, prefix):
    return TypedPerson(
        email=f"{prefix}{i}@example.com",
        dob=date(1980 + i % 30, 1 + i % 12, 1 + i % 28),
        balance=Decimal(i) / 4,
        active=i % 3 == 0 if i % 7 else None,
        prefs={"tier": ["gold", "silver"][i % 2], "n": i, "tags": [i, 2.5]},
        joined=datetime(2024, 1, 1, 12, 0, tzinfo=UTC2) + timedelta(hours=i),
        note=f"{prefix} {i}",
    )


def same(p, q):
    """Compares two instances' fields, with types (Decimal with 2 places, aware datetimes)."""
    for field in ("email", "dob", "balance", "active", "prefs", "joined", "note"):
        a, b = getattr(p, field), getattr(q, field)
        assert a == b, f"{field}: {a!r} != {b!r}"
        assert a is None or type(a) is type(b), f"{field}: {type(a)} != {type(b)}"
    assert q.balance is None or q.balance.as_tuple().exponent == -2, q.balance
    assert type(q.dob) is date, repr(q.dob)
    assert q.joined.utcoffset() is not None


def check_migrate():
    with Wire("default"):
        call_command("migrate", "django_typed_app", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'django_typed_app'")
        assert cursor.fetchone() == (1,)


def check_create_and_read(alias):
    objects = TypedPerson.objects.using(alias)
    for i in (1, 2):
        p = person(i, f"{alias}-create")
        with Wire(alias):
            p.save(using=alias)
        same(p, objects.get(pk=p.pk))
    empty = objects.create(email=f"{alias}-nulls@example.com")
    got = objects.get(pk=empty.pk)
    assert (got.dob, got.balance, got.active, got.prefs, got.joined) == (None,) * 5


def check_filter(alias):
    objects = TypedPerson.objects.using(alias)
    p = person(1, f"{alias}-create")
    for lookup in [
        {"dob": p.dob},
        {"balance": Decimal("0.250")},
        {"prefs": {"tags": [1, 2.5], "n": 1, "tier": "silver"}},
        {"joined": p.joined.astimezone(timezone.utc)},
        {"dob__in": [p.dob, date(2100, 1, 1)]},
        {"email": p.email, "balance__isnull": False},
    ]:
        with Wire(alias):
            got = list(objects.filter(**lookup).values_list("email", flat=True))
        assert got == [p.email], f"{alias} {lookup}: {got}"
    assert objects.filter(dob__isnull=True).count() == 1
    # Ranges and ordering stay refused on encrypted columns.
    for query, column in [
        (lambda: list(objects.filter(dob__gt=date(2000, 1, 1))), "dob"),
        (lambda: list(objects.order_by("joined")[:1]), "joined"),
        (lambda: list(objects.filter(prefs__tier="gold")), "prefs"),
        (lambda: list(objects.filter(active=True)), "active"),
    ]:
        try:
            query()
            raise AssertionError(f"{column}: not refused")
        except NotSupportedError as e:
            refused(e, column)


def check_bulk_create(alias):
    objects = TypedPerson.objects.using(alias)
    rows = [person(i, f"{alias}-bulk") for i in range(60)]
    with Wire(alias):
        created = objects.bulk_create(rows)
    assert all(p.pk for p in created)
    back = {q.email: q for q in objects.filter(email__in=[p.email for p in rows])}
    assert len(back) == len(rows)
    for p in rows:
        same(p, back[p.email])


def check_update_and_save(alias):
    objects = TypedPerson.objects.using(alias)
    email = f"{alias}-bulk5@example.com"
    with Wire(alias):
        assert objects.filter(email=email).update(dob=date(1999, 12, 31), balance=Decimal("7.1")) == 1
    p = objects.get(email=email)
    assert (p.dob, p.balance) == (date(1999, 12, 31), Decimal("7.10"))
    p.prefs, p.active, p.joined = {"changed": True}, False, datetime(2020, 2, 29, 23, 0, tzinfo=timezone.utc)
    p.save()
    q = objects.get(dob=date(1999, 12, 31), email=email)
    same(p, q)


SCHEMA = [check_migrate]
CHECKS = [check_create_and_read, check_filter, check_bulk_create, check_update_and_save]


def main():
    failed = 0
    aliases = sys.argv[2:] or ALIASES
    runs = [(check, ()) for check in SCHEMA] + [(check, (alias,)) for alias in aliases for check in CHECKS]
    for check, args in runs:
        name = " ".join([check.__name__, *args])
        print(f"---- {name}", file=sys.stderr)
        try:
            check(*args)
            print(f"ok   {name}", file=sys.stderr)
        except Exception:
            failed += 1
            print(f"FAIL {name}", file=sys.stderr)
            traceback.print_exc()
    if failed:
        sys.exit(1)
    print("django_typed OK")


if __name__ == "__main__":
    main()
