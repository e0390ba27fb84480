#!/usr/bin/env bash
# Installs the pinned client libraries that tests/clients.rs drives through pgcloak:
#   Python: psycopg 3 + SQLAlchemy 2, Django 5.2, asyncpg, psycopg2, pg8000 and jwcrypto in
#           tests/clients/.venv (from requirements.txt)
#   Node:   node-postgres (pg) in tests/clients/node_modules (from package-lock.json)
# Idempotent: each half is skipped while its stamp matches the pin file's hash.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup.sh: $python not found (need Python >= 3.10)" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm not found (need Node.js >= 18)" >&2; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -c1-64; }

want=$(hash_of requirements.txt)
if [ "$(cat .venv/.pgcloak-stamp 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import psycopg, sqlalchemy, django, jwcrypto, asyncpg, psycopg2, pg8000' 2>/dev/null; then
  echo "setup.sh: installing Python clients into tests/clients/.venv"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.pgcloak-stamp
fi

want=$(hash_of package.json package-lock.json)
if [ "$(cat node_modules/.pgcloak-stamp 2>/dev/null)" != "$want" ] || [ ! -f node_modules/pg/package.json ]; then
  echo "setup.sh: installing node-postgres into tests/clients/node_modules"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.pgcloak-stamp
fi

versions=$(.venv/bin/python - <<'PY'
import importlib.metadata as m
import psycopg
print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}), "
      f"SQLAlchemy {m.version('SQLAlchemy')}, Django {m.version('Django')}, asyncpg {m.version('asyncpg')}, "
      f"psycopg2 {m.version('psycopg2-binary')}, pg8000 {m.version('pg8000')}, jwcrypto {m.version('jwcrypto')}")
PY
)
echo "setup.sh: $versions, pg $(node -p 'require("pg/package.json").version')"
