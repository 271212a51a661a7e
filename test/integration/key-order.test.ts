/**
 * `backup --from-log` writes rows in key order without asking PostgreSQL:
 * its comparator must sort keys exactly as the server's ORDER BY does, for
 * every key type it accepts (src/pg/key-order.ts, through from-log's keyOrderFor).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyOrderFor } from '../../src/backup/from-log.js';
import type { PgClient } from '../../src/pg/connect.js';
import { compareSortKeys, sortKey } from '../../src/pg/key-order.js';
import type { SchemaModel } from '../../src/pg/schema/model.js';
import type { TableSnapshot } from '../../src/repo/snapshots.js';
import { connectTo, freshDatabase, sql, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

const CASES: Array<{ type: string; values: string[] }> = [
  {
    type: 'bigint',
    // Around 2^53, where integers stop being exact as numbers (they are compared as bigints past it).
    values: [
      '-9223372036854775808',
      '-9007199254740993',
      '-9007199254740991',
      '-1',
      '0',
      '7',
      '10',
      '9007199254740991',
      '9007199254740992',
      '9007199254740993',
      '9223372036854775807',
    ],
  },
  {
    type: 'text COLLATE "C"',
    // Past ASCII, byte order is not JavaScript's (UTF-16) order: U+FB00 (bytes EF ..)
    // sorts before U+1F600 (F0 ..), whose UTF-16 form starts with a surrogate, 0xD83D.
    values: [
      'a',
      'a b',
      'ab',
      'a\t',
      'A',
      'é',
      'e',
      '',
      'z~',
      'a ',
      '\ufb00',
      '😀',
      'ÿ',
      'Ā',
      'a😀',
      'a\ufb00',
    ],
  },
  // char(n) compares without its trailing blanks: 'a\t' sorts after 'a'.
  { type: 'character(3) COLLATE "C"', values: ['a', 'a\t', 'a b', 'ab', 'A', '', 'b\u0001', 'b'] },
  {
    type: 'uuid',
    values: [
      '00000000-0000-0000-0000-000000000000',
      'ffffffff-0000-0000-0000-000000000001',
      '7f000000-0000-0000-0000-000000000000',
    ],
  },
  { type: 'boolean', values: ['true', 'false'] },
];

describe('key order of backup --from-log', () => {
  let db: string;
  let c: PgClient;
  beforeAll(async () => {
    db = await freshDatabase(server, 'keyorder');
    c = await connectTo(server, db);
  });
  afterAll(async () => {
    await c?.end();
    await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  });

  it.each(CASES)('sorts $type keys as ORDER BY does', async ({ type, values }) => {
    await c.query(`DROP TABLE IF EXISTS k; CREATE TABLE k (id ${type} PRIMARY KEY)`);
    await c.query(`INSERT INTO k SELECT unnest($1::text[])::${type.replace(/ COLLATE.*/, '')}`, [
      values,
    ]);
    // The server's order, values as the server prints them (as COPY and pgoutput send them; char(n) padded).
    const ordered = (await c.query<{ id: string }>('SELECT id FROM k ORDER BY id')).rows.map(
      (r) => r.id,
    );
    const column = (
      await c.query<{ t: string; coll: string | null }>(
        `SELECT format_type(a.atttypid, a.atttypmod) AS t,
                CASE WHEN a.attcollation <> 0 THEN quote_ident(co.collname) END AS coll
           FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation
          WHERE a.attrelid = 'k'::regclass AND a.attname = 'id'`,
      )
    ).rows[0]!;
    const schema = {
      tables: [
        {
          schema: 'public',
          name: 'k',
          columns: [
            {
              name: 'id',
              type: column.t,
              ...(column.coll === null ? {} : { collation: column.coll }),
            },
          ],
        },
      ],
    } as unknown as SchemaModel;
    const t = { schema: 'public', name: 'k', key: ['id'] } as unknown as TableSnapshot;
    const orders = keyOrderFor(schema, t);
    const ours = [...ordered]
      .reverse()
      .sort((x, y) => compareSortKeys(sortKey(orders, [x]), sortKey(orders, [y])));
    expect(ours).toEqual(ordered);
  });
});
