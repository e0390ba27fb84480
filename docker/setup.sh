#!/usr/bin/env bash
# Makes the files docker/compose.yaml needs and git must not hold, in docker/ (or in the
# directory given as $1):
#   certs/ca.crt, ca.key                a CA (ca.key stays on the host: sign with it, never mount it)
#   certs/postgres.crt, postgres.key    the postgres service's certificate, for the name "postgres"
#   secrets/pgcloak_master_key          pgcloak's master key (base64 of 32 random bytes)
#   secrets/postgres_password           the Postgres superuser's password
# A file that exists is kept (delete it to make it anew; a new master key cannot read what
# the old one wrote). Needs openssl.
set -euo pipefail
dir=${1:-$(dirname "$0")}
command -v openssl >/dev/null || { echo "setup.sh: openssl not found" >&2; exit 1; }
umask 077
mkdir -p "$dir/certs" "$dir/secrets"
# secrets/ is private: other users of the host cannot reach the files inside, whatever
# their modes (compose mounts the files themselves, so the containers need no way in).
# certs/ is mounted as a directory, which the postgres server (uid 999) must enter.
chmod 700 "$dir/secrets"
chmod 755 "$dir/certs"
cd "$dir"

made() { echo "setup.sh: made $dir/$1"; }

if [ ! -s secrets/pgcloak_master_key ]; then
  openssl rand -base64 32 > secrets/pgcloak_master_key
  made secrets/pgcloak_master_key
fi
if [ ! -s secrets/postgres_password ]; then
  openssl rand -hex 16 > secrets/postgres_password
  made secrets/postgres_password
fi
# Read inside the containers as their users: pgcloak runs as uid 10001, so its key must be
# readable by others (the 0700 directory above keeps the host's other users out).
chmod 0444 secrets/pgcloak_master_key secrets/postgres_password

cd certs
if [ ! -s ca.crt ] || [ ! -s ca.key ]; then
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=pgcloak docker CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  rm -f postgres.crt # signed by an earlier CA
  made certs/ca.crt
fi
if [ ! -s postgres.crt ] || [ ! -s postgres.key ]; then
  openssl req -new -nodes -newkey rsa:2048 -keyout postgres.key -out postgres.csr \
    -subj "/CN=postgres" 2>/dev/null
  printf 'subjectAltName=DNS:postgres\nextendedKeyUsage=serverAuth\n' > postgres.ext
  openssl x509 -req -in postgres.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile postgres.ext -out postgres.crt 2>/dev/null
  rm -f postgres.csr postgres.ext
  made certs/postgres.crt
fi
# Certificates are public; postgres.key is read by the postgres container's root (its
# entrypoint copies it to a private file for the server); ca.key by no container.
chmod 0444 ca.crt postgres.crt
chmod 0400 ca.key postgres.key
echo "setup.sh: ready; run: docker compose -f $dir/compose.yaml up --build"
