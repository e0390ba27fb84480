"""The Django DATABASES entry for a libpq URL, shared by the Django client scripts."""

import urllib.parse


def database(url, **options):
    """`url`: postgresql://user:password@host:port/name; `options`: psycopg OPTIONS."""
    parts = urllib.parse.urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": urllib.parse.unquote(parts.username or ""),
        "PASSWORD": urllib.parse.unquote(parts.password or ""),
        "HOST": parts.hostname,
        "PORT": str(parts.port),
        "OPTIONS": {"connect_timeout": 10, **options},
    }
