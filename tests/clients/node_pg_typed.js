// node-postgres (pg) on typed PII columns (issue 13) through pgcloak, compared with a table
// of real types: every statement runs on `node_pii` (PII columns, text in Postgres, typed by
// the policy) and on `node_real` (the same columns with real types). pg sends parameters as
// untyped text (a JS Date as local time with its offset) and parses results by the OIDs of
// the RowDescription: date and timestamptz as Date, numeric as a string, boolean, jsonb as
// an object, integer as a number, uuid as a string, bytea as a Buffer.
//
// Usage: node node_pg_typed.js postgresql://user:pw@host:port/db
//
// tests/typed_clients.rs creates both tables (TYPED_COLUMNS there) and the policy. Every
// step runs even if an earlier one failed; each prints "ok"/"FAIL" to stderr. Prints
// "node_pg_typed OK" on stdout and exits 0 only if all passed.
'use strict';

process.env.TZ = 'UTC'; // pg turns a date into a Date at local midnight

const assert = require('node:assert/strict');
const { Client } = require('pg');

const url = process.argv[2];
const PII = 'node_pii';
const TABLES = [PII, 'node_real'];
const COLUMNS = ['dob', 'amount', 'active', 'attrs', 'seen', 'n', 'uid', 'blob'];
const NAMES = COLUMNS.join(', ');
const INSERT = (t) => `INSERT INTO ${t} (id, ${NAMES}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`;

const ROWS = [
  [1, '1990-05-17', '1234.5', true, { tier: 'gold', tags: [1, 2.5] }, new Date('2024-03-01T12:30:00+02:00'), 7,
    'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', Buffer.from([0, 255, 112, 105, 105])],
  // A Date for the date column (pg sends it with its time and offset), a number for numeric.
  [2, new Date(Date.UTC(2000, 1, 29)), -0.01, false, { a: null, z: 'Zoë' }, new Date('1999-12-31T23:59:59.999Z'), -2147483648,
    '00000000-0000-0000-0000-000000000000', Buffer.alloc(0)],
  [3, null, null, null, null, null, null, null, null],
];
const EXPECTED = [
  { id: 1, dob: new Date('1990-05-17T00:00:00Z'), amount: '1234.50', active: true, attrs: { tier: 'gold', tags: [1, 2.5] },
    seen: new Date('2024-03-01T10:30:00Z'), n: 7, uid: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', blob: Buffer.from([0, 255, 112, 105, 105]) },
  { id: 2, dob: new Date('2000-02-29T00:00:00Z'), amount: '-0.01', active: false, attrs: { a: null, z: 'Zoë' },
    seen: new Date('1999-12-31T23:59:59.999Z'), n: -2147483648, uid: '00000000-0000-0000-0000-000000000000', blob: Buffer.alloc(0) },
  { id: 3, dob: null, amount: null, active: null, attrs: null, seen: null, n: null, uid: null, blob: null },
];

// JSON.stringify'd by pg only for plain objects: keep them as pg would send them.
const params = (row) => row;

const tests = {
  async insertAndRead(c) {
    for (const t of TABLES) {
      await c.query(`DELETE FROM ${t}`);
      for (const row of ROWS) await c.query(INSERT(t), params(row));
    }
    const pii = await c.query(`SELECT id, ${NAMES} FROM ${PII} ORDER BY id`);
    const real = await c.query(`SELECT id, ${NAMES} FROM node_real ORDER BY id`);
    assert.deepEqual(pii.rows, real.rows);
    assert.deepEqual(pii.rows, EXPECTED);
    assert.ok(pii.rows[0].dob instanceof Date && pii.rows[0].seen instanceof Date);
    assert.deepEqual(pii.fields.map((f) => [f.name, f.dataTypeID, f.dataTypeModifier]),
      real.fields.map((f) => [f.name, f.dataTypeID, f.dataTypeModifier]));
  },

  async namedStatementAndLiterals(c) {
    // A named statement (Parse once, Bind many) and a simple-protocol literal.
    for (const t of TABLES) {
      await c.query({ name: `ins-${t}`, text: `INSERT INTO ${t} (id, dob, amount) VALUES ($1, $2, $3)`, values: [10, '2020-01-02', '5'] });
      await c.query({ name: `ins-${t}`, text: `INSERT INTO ${t} (id, dob, amount) VALUES ($1, $2, $3)`, values: [11, '2020-01-03', '6.125'] });
      await c.query(`INSERT INTO ${t} (id, dob, active) VALUES (12, '2020-01-04', 'yes')`);
      const r = await c.query(`SELECT id, dob, amount, active FROM ${t} WHERE id >= 10 ORDER BY id`);
      assert.deepEqual(r.rows, [
        { id: 10, dob: new Date('2020-01-02T00:00:00Z'), amount: '5.00', active: null },
        { id: 11, dob: new Date('2020-01-03T00:00:00Z'), amount: '6.13', active: null },
        { id: 12, dob: new Date('2020-01-04T00:00:00Z'), amount: null, active: true },
      ], t);
      await c.query(`DELETE FROM ${t} WHERE id >= 10`);
    }
  },

  async equalitySearch(c) {
    for (const t of TABLES) {
      for (const [where, values, ids] of [
        ['dob = $1', ['1990-05-17'], [1]],
        ['dob = $1', [new Date(Date.UTC(2000, 1, 29))], [2]],
        ['amount = $1', ['1234.500'], [1]],
        ['amount = $1', [-0.01], [2]],
        ['attrs = $1', [{ tags: [1, 2.5], tier: 'gold' }], [1]],
        ['seen = $1', [new Date('2024-03-01T10:30:00Z')], [1]],
        ['n = $1', [7], [1]],
        ['uid = $1', ['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'], [1]],
        ['dob = ANY($1)', [['1990-05-17', '2000-02-29', '2021-01-01']], [1, 2]],
        ['dob IN ($1, $2)', ['1990-05-17', '1999-01-01'], [1]],
        ['dob IS NULL', [], [3]],
      ]) {
        const r = await c.query(`SELECT id FROM ${t} WHERE ${where} ORDER BY id`, values);
        assert.deepEqual(r.rows.map((x) => x.id), ids, `${t} WHERE ${where}`);
      }
    }
    await assert.rejects(c.query(`SELECT id FROM ${PII} ORDER BY dob`), (e) => {
      assert.equal(e.code, '0A000', e.message);
      assert.ok(e.message.includes(`${PII}.dob`), e.message);
      return true;
    });
  },

  async invalidValues(c) {
    for (const [column, value, code] of [
      ['dob', '2020-13-45', '22008'],
      ['dob', 'soon', '22007'],
      ['amount', '123456789.5', '22003'],
      ['amount', 'NaN?', '22P02'],
      ['active', 'maybe', '22P02'],
      ['attrs', '{', '22P02'],
      ['n', 3000000000, '22003'],
      ['uid', '123', '22P02'],
    ]) {
      const codes = [];
      for (const t of TABLES) {
        await assert.rejects(c.query(`INSERT INTO ${t} (id, ${column}) VALUES (20, $1)`, [value]), (e) => {
          codes.push(e.code);
          if (t === PII) {
            assert.ok(e.message.includes(`${PII}.${column}`), e.message);
            assert.ok(!e.message.includes(String(value)), e.message);
          }
          return true;
        });
      }
      assert.deepEqual(codes, [code, code], `${column} = ${value}`);
    }
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  },
};

async function main() {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 10000 });
  await c.connect();
  let failed = 0;
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test(c);
      console.error(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.error(`FAIL ${name}\n${e.stack}`);
    }
  }
  await c.end();
  if (failed) process.exit(1);
  console.log('node_pg_typed OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
