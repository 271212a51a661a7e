/** The lean COPY TO reader against real servers: the same bytes as pg-copy-streams, errors, backpressure, and a usable connection after. */
import { readFile } from 'node:fs/promises';
import { to as copyTo } from 'pg-copy-streams';
import { beforeAll, describe, expect, it } from 'vitest';
import { CopyOut } from '../../src/pg/copy-out.js';
import { qualify } from '../../src/pg/schema/quote.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { connectTo, freshDatabase, sql, type TestServer, testServers } from '../harness/pg.js';
import { FIXTURE, readModel } from '../harness/schema.js';

async function collect(stream: AsyncIterable<Buffer>, slow = false): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of stream) {
    parts.push(Buffer.from(b));
    if (slow) await new Promise((r) => setTimeout(r, 1));
  }
  return Buffer.concat(parts);
}

describe.each(testServers().map((s) => [s.major, s] as const))(
  'COPY TO reader on PostgreSQL %i',
  (_major, server: TestServer) => {
    let db: string;
    beforeAll(async () => {
      db = await freshDatabase(server, 'copyout');
      const c = await connectTo(server, db);
      await createSampleDatabase(c, { tenants: 10 });
      await c.query(await readFile(FIXTURE, 'utf8'));
      await c.end();
    });

    it('yields exactly the bytes pg-copy-streams yields, for every table', async () => {
      const c = await connectTo(server, db);
      try {
        const model = await readModel(server, db);
        for (const t of model.tables.filter((x) => x.hasData)) {
          const q = `COPY (SELECT * FROM ONLY ${qualify(t.schema, t.name)}) TO STDOUT`;
          const ours = await collect(c.query(new CopyOut(q)) as unknown as AsyncIterable<Buffer>);
          const theirs = await collect(c.query(copyTo(q)) as AsyncIterable<Buffer>);
          expect(ours.equals(theirs), t.name).toBe(true);
        }
        // The connection is usable after each COPY.
        expect((await c.query('SELECT 42 AS n')).rows[0]).toEqual({ n: '42' });
      } finally {
        await c.end();
      }
    });

    it('holds back reading under a slow consumer and still delivers every byte', async () => {
      const c = await connectTo(server, db);
      try {
        const q = 'COPY files TO STDOUT';
        const slow = await collect(
          c.query(new CopyOut(q)) as unknown as AsyncIterable<Buffer>,
          true,
        );
        const fast = await collect(c.query(copyTo(q)) as AsyncIterable<Buffer>);
        expect(slow.equals(fast)).toBe(true);
      } finally {
        await c.end();
      }
    });

    it('reports a server error and leaves the connection usable', async () => {
      const c = await connectTo(server, db);
      try {
        await expect(
          collect(
            c.query(
              new CopyOut('COPY no_such_table TO STDOUT'),
            ) as unknown as AsyncIterable<Buffer>,
          ),
        ).rejects.toThrow(/relation "no_such_table" does not exist/);
        // An error after rows were sent: division by zero on a late row.
        const late = 'COPY (SELECT 1 / (1000 - g) FROM generate_series(1, 2000) g) TO STDOUT';
        await expect(
          collect(c.query(new CopyOut(late)) as unknown as AsyncIterable<Buffer>),
        ).rejects.toThrow(/division by zero/);
        expect((await c.query('SELECT 1 AS n')).rows[0]).toEqual({ n: '1' });
      } finally {
        await c.end();
      }
      expect(await sql(server, db, 'SELECT 1 AS ok')).toEqual([{ ok: '1' }]);
    });
  },
);
