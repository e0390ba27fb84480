"""psycopg 3 through pgcloak over TLS, with libpq's defaults for channel binding.

Usage: tls_clients.py URL CA_FILE
Prints "psycopg TLS OK" and exits 0 when the client leg is TLS, verified, and the
session works (including a PII round trip when the table `tls_people` is in the policy).
"""

import sys

import psycopg

URL, CA = sys.argv[1], sys.argv[2]

with psycopg.connect(URL, sslmode="verify-full", sslrootcert=CA, connect_timeout=10) as conn:
    assert conn.pgconn.ssl_in_use, "the client leg is not TLS"
    conn.execute("CREATE TABLE IF NOT EXISTS tls_people (id int, email text)")
    conn.execute("INSERT INTO tls_people (id, email) VALUES (%s, %s)", (1, "py@example.com"))
    row = conn.execute("SELECT email FROM tls_people WHERE email = %s", ("py@example.com",)).fetchone()
    assert row == ("py@example.com",), row
print("psycopg TLS OK")
