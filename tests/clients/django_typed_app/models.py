"""A Django model with typed fields on PII columns (tests/typed_clients.rs, DJANGO_COLUMNS:
in `dj_typed`, email/dob/balance/prefs/joined are deterministic, active is randomized, each
with the type of its field). The fields are Django's own: through pgcloak the columns look
like date, numeric(10,2), boolean, jsonb and timestamptz. Only the table differs from what
Django would create: its PII columns are text (they hold envelopes), which 0001_initial
creates with RunSQL while telling Django's migration state about the ordinary fields."""

from django.db import models


class TypedPerson(models.Model):
    email = models.TextField(unique=True)
    dob = models.DateField(null=True)
    balance = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    active = models.BooleanField(null=True)
    prefs = models.JSONField(null=True)
    joined = models.DateTimeField(null=True)
    note = models.TextField(default="")

    class Meta:
        app_label = "django_typed_app"
        db_table = "dj_typed"
