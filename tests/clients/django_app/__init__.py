"""A tiny Django app for django_pii.py: one model whose PII columns pgcloak encrypts, with
the migrations `makemigrations` writes for it (the second is an AlterField)."""
