// node-postgres (pg) through pgcloak.
//
// Usage: node node_pg_smoke.js postgresql://user:pw@host:port/db
// Every step runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr.
// Prints "node-postgres OK" on stdout and exits 0 only if all passed.
'use strict';

const assert = require('node:assert/strict');
const { Client, Pool } = require('pg');

const url = process.argv[2];
const config = { connectionString: url, connectionTimeoutMillis: 10000 };

async function withClient(fn) {
  const client = new Client(config);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const tests = {
  async parameterized(c) {
    await c.query('DROP TABLE IF EXISTS node_smoke');
    await c.query(
      'CREATE TABLE node_smoke (id serial PRIMARY KEY, name text NOT NULL, score int, tags text[], doc jsonb)'
    );
    const ins = await c.query(
      'INSERT INTO node_smoke (name, score, tags, doc) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) RETURNING id',
      ['ann', 10, ['a', 'b'], { k: 1 }, 'ben', null, [], { k: [2, 3] }]
    );
    assert.equal(ins.rowCount, 2);
    const r = await c.query('SELECT name, score, tags, doc FROM node_smoke WHERE name = $1', ['ann']);
    assert.deepEqual(r.rows, [{ name: 'ann', score: 10, tags: ['a', 'b'], doc: { k: 1 } }]);
    const b = await c.query('SELECT score, doc FROM node_smoke WHERE name = $1', ['ben']);
    assert.deepEqual(b.rows[0], { score: null, doc: { k: [2, 3] } });
    // Simple-protocol multi-statement query.
    const multi = await c.query('SELECT 1 AS one; SELECT 2 AS two');
    assert.equal(multi.length, 2);
    assert.equal(multi[1].rows[0].two, 2);
    // rowMode: array, and a Buffer parameter.
    const arr = await c.query({ text: 'SELECT $1::bytea AS b, 42 AS n', values: [Buffer.from([0, 255])], rowMode: 'array' });
    assert.deepEqual(arr.rows[0], [Buffer.from([0, 255]), 42]);
  },

  async preparedStatements(c) {
    // The first use sends Parse with the name; later uses only Bind/Execute.
    for (let i = 0; i < 10; i++) {
      const r = await c.query({ name: 'node-smoke-by-name', text: 'SELECT id, name FROM node_smoke WHERE name = $1', values: [i % 2 ? 'ann' : 'ben'] });
      assert.equal(r.rows.length, 1);
      assert.equal(r.rows[0].name, i % 2 ? 'ann' : 'ben');
    }
    for (let i = 0; i < 5; i++) {
      const r = await c.query({ name: 'node-smoke-add', text: 'SELECT $1::int + $2::int AS s', values: [i, 100] });
      assert.equal(r.rows[0].s, i + 100);
    }
    const ps = await c.query("SELECT name FROM pg_prepared_statements WHERE name LIKE 'node-smoke-%' ORDER BY name");
    assert.deepEqual(ps.rows.map((x) => x.name), ['node-smoke-add', 'node-smoke-by-name']);
  },

  async transaction(c) {
    await c.query('BEGIN');
    await c.query("INSERT INTO node_smoke (name) VALUES ('committed')");
    await c.query('COMMIT');
    await c.query('BEGIN');
    await c.query("INSERT INTO node_smoke (name) VALUES ('rolled-back')");
    const inside = await c.query("SELECT count(*)::int AS n FROM node_smoke WHERE name = 'rolled-back'");
    assert.equal(inside.rows[0].n, 1);
    await c.query('ROLLBACK');
    const r = await c.query("SELECT name FROM node_smoke WHERE name IN ('committed', 'rolled-back')");
    assert.deepEqual(r.rows, [{ name: 'committed' }]);
  },

  async errorRecovery(c) {
    await assert.rejects(c.query('SELECT 1/0'), (e) => e.code === '22012' && /division by zero/.test(e.message));
    await assert.rejects(c.query('SELECT * FROM no_such_table'), (e) => e.code === '42P01');
    // Error in the extended protocol, with a named statement.
    await assert.rejects(c.query({ name: 'node-smoke-bad', text: 'SELECT $1::int AS x', values: ['nope'] }), (e) => e.code === '22P02');
    assert.equal((await c.query('SELECT 1 AS x')).rows[0].x, 1);
    // Failed transaction: aborted until ROLLBACK.
    await c.query('BEGIN');
    await assert.rejects(c.query('SELECT 1/0'), (e) => e.code === '22012');
    await assert.rejects(c.query('SELECT 1'), (e) => e.code === '25P02');
    await c.query('ROLLBACK');
    assert.equal((await c.query('SELECT $1::text AS t', ['fine'])).rows[0].t, 'fine');
    await assert.rejects(c.query('SELEC oops'), (e) => e.code === '42601');
    assert.equal((await c.query('SELECT 3 AS a')).rows[0].a, 3);
  },

  async listenNotify(c) {
    await withClient(async (listener) => {
      const got = [];
      let wake;
      listener.on('notification', (n) => {
        got.push([n.channel, n.payload]);
        if (got.length === 2) wake();
      });
      const done = new Promise((resolve) => (wake = resolve));
      await listener.query('LISTEN node_smoke_channel');
      await c.query("NOTIFY node_smoke_channel, 'one'");
      await c.query("SELECT pg_notify('node_smoke_channel', $1)", ['two']);
      let timer;
      const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`notifications not delivered, got ${JSON.stringify(got)}`)), 5000)));
      try {
        await Promise.race([done, timeout]);
      } finally {
        clearTimeout(timer);
      }
      assert.deepEqual(got, [['node_smoke_channel', 'one'], ['node_smoke_channel', 'two']]);
    });
  },

  async bigResult(c) {
    const r = await c.query('SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 100000) g');
    assert.equal(r.rowCount, 100000);
    assert.equal(r.rows.length, 100000);
    assert.equal(r.rows[99999].id, 100000);
    // The same through the extended protocol.
    const p = await c.query('SELECT g FROM generate_series(1, $1::int) g', [100000]);
    assert.equal(p.rowCount, 100000);
  },

  async pool() {
    const pool = new Pool({ ...config, max: 4 });
    try {
      // 40 concurrent queries over at most 4 connections.
      const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => pool.query('SELECT $1::int * 2 AS v, pg_backend_pid() AS pid', [i])));
      rs.forEach((r, i) => assert.equal(r.rows[0].v, i * 2));
      const pids = new Set(rs.map((r) => r.rows[0].pid));
      assert.ok(pids.size >= 1 && pids.size <= 4, `pids: ${[...pids]}`);
      // A checked-out client with a transaction, released back to the pool.
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query("INSERT INTO node_smoke (name) VALUES ('from-pool')");
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      const n = await pool.query("SELECT count(*)::int AS n FROM node_smoke WHERE name = 'from-pool'");
      assert.equal(n.rows[0].n, 1);
      // An error on a pooled connection does not poison the pool.
      await assert.rejects(pool.query('SELECT 1/0'), (e) => e.code === '22012');
      assert.equal((await pool.query('SELECT 5 AS v')).rows[0].v, 5);
    } finally {
      await pool.end();
    }
  },
};

async function main() {
  console.error(`pg ${require('pg/package.json').version}, node ${process.version}`);
  const failed = [];
  const client = new Client(config);
  client.on('error', (e) => console.error('client error event:', e));
  await client.connect();
  for (const [name, test] of Object.entries(tests)) {
    const start = Date.now();
    let status = 'ok';
    try {
      await test(client);
    } catch (e) {
      status = 'FAIL';
      failed.push(name);
      console.error(e);
      await client.query('ROLLBACK').catch(() => {});
    }
    console.error(`  ${name.padEnd(22)} ${status} (${Date.now() - start} ms)`);
  }
  await client.end();
  if (failed.length) {
    console.error(`node-postgres FAILED: ${failed.join(', ')}`);
    process.exit(1);
  }
  console.log('node-postgres OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
