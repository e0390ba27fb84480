"""The model as a new Django user writes it. The policy (tests/clients.rs, PII_POLICY)
names `dj_people`: `email` deterministic, `first_name` and `last_name` randomized."""

from django.db import models


class Person(models.Model):
    # 0001 created it as CharField(max_length=200); 0002 alters it to TextField.
    email = models.TextField(unique=True)
    first_name = models.TextField(null=True)
    last_name = models.CharField(max_length=200, null=True)
    note = models.TextField(default="")

    class Meta:
        app_label = "django_app"
        db_table = "dj_people"
