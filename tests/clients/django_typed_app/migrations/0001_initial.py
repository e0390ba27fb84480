# What `makemigrations` generates for the model: the fields with their real types. Through
# pgcloak, the columns the policy declares typed (`dob: { type: date }`, ...) are created as
# text (they hold envelopes), and the application still sees their types.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="TypedPerson",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("email", models.TextField(unique=True)),
                ("dob", models.DateField(null=True)),
                ("balance", models.DecimalField(decimal_places=2, max_digits=10, null=True)),
                ("active", models.BooleanField(null=True)),
                ("prefs", models.JSONField(null=True)),
                ("joined", models.DateTimeField(null=True)),
                ("note", models.TextField(default="")),
            ],
            options={"db_table": "dj_typed"},
        ),
    ]
