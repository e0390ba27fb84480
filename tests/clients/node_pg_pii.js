// node-postgres (pg) on a table whose columns pgcloak encrypts, as a Node application
// would use it: parameters (sent as untyped text), named statements, arrays, transactions,
// a pool, and the refusals it must be able to recover from.
//
// Usage: node node_pg_pii.js postgresql://user:pw@host:port/db
//
// The proxy's policy (tests/clients.rs, PII_POLICY): in `node_people`, `email` is
// deterministic and `first_name`/`last_name` are randomized; `note` is plain.
//
// Every step runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr. Prints
// "node_pg_pii OK" on stdout and exits 0 only if all passed. Before that it prints, one per
// line, what the application reads back through pgcloak at the end, for tests/clients.rs to
// compare with what Postgres stores:
//
//     stored node_people <id> <column> <hex of the UTF-8 value, or - for NULL>
'use strict';

const assert = require('node:assert/strict');
const { Client, Pool } = require('pg');

const url = process.argv[2];
const config = { connectionString: url, connectionTimeoutMillis: 10000 };
const PII_COLUMNS = ['email', 'first_name', 'last_name'];

// pgcloak's refusal: SQLSTATE 0A000 naming the column, never the value.
async function refused(c, query, values, column, value) {
  await assert.rejects(c.query(query, values), (e) => {
    assert.equal(e.code, '0A000', e.message);
    assert.ok(e.message.includes(`public.node_people.${column}`), e.message);
    if (value) assert.ok(!e.message.includes(value), e.message);
    return true;
  });
}

const tests = {
  async schema(c) {
    await c.query('DROP TABLE IF EXISTS node_people');
    await c.query(
      'CREATE TABLE node_people (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text, note text)'
    );
  },

  async insertAndRead(c) {
    const ins = await c.query(
      'INSERT INTO node_people (email, first_name, last_name, note) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) RETURNING id, email, first_name',
      ['ann@example.com', 'Ann', 'Lee', 'first', 'ben@example.com', 'Ann', null, 'second']
    );
    assert.deepEqual(ins.rows, [
      { id: 1, email: 'ann@example.com', first_name: 'Ann' },
      { id: 2, email: 'ben@example.com', first_name: 'Ann' },
    ]);
    // A literal in a simple-protocol query (no values: node-postgres sends Query).
    await c.query("INSERT INTO node_people (email, first_name, last_name) VALUES ('cy@example.com', 'Cy', 'O''Neil')");
    const all = await c.query('SELECT * FROM node_people ORDER BY id');
    assert.deepEqual(
      all.rows.map((r) => [r.id, r.email, r.first_name, r.last_name, r.note]),
      [
        [1, 'ann@example.com', 'Ann', 'Lee', 'first'],
        [2, 'ben@example.com', 'Ann', null, 'second'],
        [3, 'cy@example.com', 'Cy', "O'Neil", null],
      ]
    );
  },

  async searchByEmail(c) {
    for (let i = 0; i < 6; i++) {
      const email = i % 2 ? 'ann@example.com' : 'cy@example.com';
      const r = await c.query({
        name: 'node-pii-by-email',
        text: 'SELECT id, first_name FROM node_people WHERE email = $1',
        values: [email],
      });
      assert.deepEqual(r.rows, [i % 2 ? { id: 1, first_name: 'Ann' } : { id: 3, first_name: 'Cy' }]);
    }
    // A JS array becomes a text[] parameter: each element is encrypted.
    const any = await c.query('SELECT id FROM node_people WHERE email = ANY($1) ORDER BY id', [
      ['ben@example.com', 'cy@example.com', 'nobody@example.com'],
    ]);
    assert.deepEqual(any.rows.map((r) => r.id), [2, 3]);
    const inList = await c.query('SELECT count(*)::int AS n FROM node_people WHERE email IN ($1, $2)', [
      'ann@example.com',
      'nobody@example.com',
    ]);
    assert.equal(inList.rows[0].n, 1);
  },

  async updateAndUpsert(c) {
    const u = await c.query('UPDATE node_people SET last_name = $1 WHERE email = $2 RETURNING last_name', [
      'Baker',
      'ben@example.com',
    ]);
    assert.deepEqual(u.rows, [{ last_name: 'Baker' }]);
    const up = await c.query(
      'INSERT INTO node_people (email, first_name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.first_name RETURNING id, first_name',
      ['cy@example.com', 'Cyrus']
    );
    assert.deepEqual(up.rows, [{ id: 3, first_name: 'Cyrus' }]);
    // The UNIQUE constraint works on deterministic ciphertext.
    await assert.rejects(
      c.query('INSERT INTO node_people (email) VALUES ($1)', ['ann@example.com']),
      (e) => e.code === '23505'
    );
  },

  // Knex's `.alter()`: drop default, drop not null, then `type T using ("c"::T)`, in a
  // transaction as knex migrations run. To text it works on ciphertext; to varchar(n) the
  // explicit cast would silently cut envelopes longer than n, so pgcloak refuses it.
  async knexAlter(c) {
    const knex = (type) => [
      'alter table "node_people" alter column "last_name" drop default',
      'alter table "node_people" alter column "last_name" drop not null',
      `alter table "node_people" alter column "last_name" type ${type} using ("last_name"::${type})`,
    ];
    await c.query('ALTER TABLE node_people ALTER COLUMN last_name TYPE varchar(200)');
    await c.query('BEGIN');
    for (const sql of knex('varchar(255)').slice(0, 2)) await c.query(sql);
    await assert.rejects(c.query(knex('varchar(255)')[2]), (e) => {
      assert.equal(e.code, '0A000', e.message);
      assert.ok(e.message.includes('would silently cut the ciphertexts of encrypted column public.node_people.last_name'), e.message);
      return true;
    });
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    for (const sql of knex('text')) await c.query(sql);
    await c.query('COMMIT');
    const t = await c.query(
      "SELECT data_type FROM information_schema.columns WHERE table_name = 'node_people' AND column_name = 'last_name'"
    );
    assert.equal(t.rows[0].data_type, 'text');
    const r = await c.query('SELECT last_name FROM node_people WHERE email = $1', ['ben@example.com']);
    assert.deepEqual(r.rows, [{ last_name: 'Baker' }]);
  },

  async transactionRollback(c) {
    await c.query('BEGIN');
    await c.query('INSERT INTO node_people (email, first_name) VALUES ($1, $2)', ['gone@example.com', 'Gone']);
    await c.query('ROLLBACK');
    const r = await c.query('SELECT count(*)::int AS n FROM node_people WHERE email = $1', ['gone@example.com']);
    assert.equal(r.rows[0].n, 0);
  },

  async refusalsLeaveTheClientUsable(c) {
    await refused(c, 'SELECT id FROM node_people WHERE email LIKE $1', ['%@example.com'], 'email');
    await refused(c, 'SELECT id FROM node_people WHERE first_name = $1', ['Ann'], 'first_name');
    await refused(c, "UPDATE node_people SET last_name = upper('secret-value') WHERE id = 1", [], 'last_name', 'secret-value');
    await refused(c, 'SELECT id FROM node_people ORDER BY email', [], 'email');
    const r = await c.query('SELECT count(*)::int AS n FROM node_people');
    assert.equal(r.rows[0].n, 3);
  },

  async pool() {
    const pool = new Pool({ ...config, max: 4 });
    try {
      const ids = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          pool
            .query('INSERT INTO node_people (email, first_name, last_name) VALUES ($1, $2, $3) RETURNING id', [
              `pool${i}@example.com`,
              'Pool',
              `Member ${i}`,
            ])
            .then((r) => r.rows[0].id)
        )
      );
      assert.equal(new Set(ids).size, 12);
      const back = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          pool.query('SELECT last_name FROM node_people WHERE email = $1', [`pool${i}@example.com`])
        )
      );
      assert.deepEqual(back.map((r) => r.rows[0].last_name), Array.from({ length: 12 }, (_, i) => `Member ${i}`));
    } finally {
      await pool.end();
    }
  },
};

async function printStored(c) {
  const r = await c.query(`SELECT id, ${PII_COLUMNS.join(', ')} FROM node_people ORDER BY id`);
  for (const row of r.rows) {
    for (const column of PII_COLUMNS) {
      const value = row[column];
      const shown = value === null ? '-' : Buffer.from(value, 'utf8').toString('hex');
      console.log(`stored node_people ${row.id} ${column} ${shown}`);
    }
  }
}

async function main() {
  console.error(`pg ${require('pg/package.json').version}, node ${process.version}`);
  const failed = [];
  const client = new Client(config);
  client.on('error', (e) => console.error('client error event:', e));
  await client.connect();
  for (const [name, test] of Object.entries(tests)) {
    let status = 'ok';
    try {
      await test(client);
    } catch (e) {
      status = 'FAIL';
      failed.push(name);
      console.error(e);
      await client.query('ROLLBACK').catch(() => {});
    }
    console.error(`  ${name.padEnd(28)} ${status}`);
  }
  await printStored(client);
  await client.end();
  if (failed.length) {
    console.error(`node_pg_pii FAILED: ${failed.join(', ')}`);
    process.exit(1);
  }
  console.log('node_pg_pii OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
