// node-postgres through pgcloak over TLS, verifying pgcloak's certificate.
//
// Usage: node node_tls.js URL CA_FILE
// Prints "node-postgres TLS OK" and exits 0 when the connection is TLS and works.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { Client } = require('pg');

async function main() {
  const [url, ca] = process.argv.slice(2);
  const client = new Client({
    connectionString: url,
    ssl: { ca: fs.readFileSync(ca, 'utf8'), servername: 'localhost', rejectUnauthorized: true },
    connectionTimeoutMillis: 10000,
  });
  await client.connect();
  try {
    assert.ok(client.connection.stream.encrypted, 'the client leg is not TLS');
    await client.query('CREATE TABLE IF NOT EXISTS tls_people (id int, email text)');
    await client.query('INSERT INTO tls_people (id, email) VALUES ($1, $2)', [2, 'node@example.com']);
    const res = await client.query('SELECT email FROM tls_people WHERE email = $1', ['node@example.com']);
    assert.deepEqual(res.rows, [{ email: 'node@example.com' }]);
  } finally {
    await client.end();
  }
  console.log('node-postgres TLS OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
