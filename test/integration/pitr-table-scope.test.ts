/**
 * `restore --at … --table T` rebuilds T alone: a change in another table
 * that Flashback cannot rebuild (here a key change that left a large
 * TOASTed value unsent) refuses a restore of that table or of the whole
 * database, never one of T; and a --table that matches nothing is refused
 * before the log is read. A dry run into a database to create counts the
 * moment's rows.
 */
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { type CapturedTarget, capturedTarget, serverMoment } from '../harness/capture.js';
import { connectTo, freshDatabase, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

/** A value far over the TOAST threshold, stored out of line (STORAGE EXTERNAL below). */
const BIG = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)";

describe('restore --at --table rebuilds only the tables asked for (PostgreSQL 17)', () => {
  it('a key change with an unsent TOASTed value elsewhere refuses only restores of that table; a dry run counts the rows of the moment', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'scope');
    let captured: CapturedTarget | undefined;
    const fresh = `${db}_whole`;
    try {
      await sql(
        server,
        db,
        `CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs VALUES (1, 'one', ${BIG});
         CREATE TABLE orders (id int PRIMARY KEY, total numeric);
         INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 20) g;`,
      );
      captured = await capturedTarget(server, db, 'scope', dir);
      const run = captured.run;

      const live = await connectTo(server, db);
      // The key of a docs row moves; its body is not sent (unchanged, out of line).
      await live.query('UPDATE docs SET id = 101 WHERE id = 1');
      await live.query('UPDATE orders SET total = total + 1 WHERE id <= 5');
      await live.query('INSERT INTO orders VALUES (21, 210)');
      const moment = await serverMoment(live);
      await live.query('DELETE FROM orders WHERE id <= 10');
      await live.end();
      await new Promise((r) => setTimeout(r, 1500));

      // A restore of the moment, of one table.
      const atMoment = (table: string, rest: string[]) =>
        run(['restore', 'scope', '--at', moment, '--table', table, ...rest]);
      const whole = await run([
        'restore',
        'scope',
        '--at',
        moment,
        '--to',
        `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${fresh}`,
        '--create',
        '--confirm',
        fresh,
      ]);
      expect(whole.code).toBe(ExitCode.failed);
      expect(whole.stderr).toContain('key of a row of public.docs changed');

      // The deleted orders go back into the live database, as they were at the moment.
      const orders = await atMoment('orders', ['--to', 'scope']);
      expect(orders.code, orders.stderr).toBe(0);
      const rows = await sql(server, db, 'SELECT id, total::text FROM orders ORDER BY id');
      expect(rows.map((r) => [r.id, r.total])).toEqual(
        Array.from({ length: 21 }, (_, i) => [
          String(i + 1),
          String((i + 1) * 10 + (i < 5 ? 1 : 0)),
        ]),
      );

      // A dry run into a database to create counts the moment's rows, not the snapshot's 20.
      const planned = await atMoment('orders', [
        '--to',
        `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${fresh}`,
        '--create',
        '--dry-run',
        '--json',
      ]);
      expect(planned.code, planned.stderr).toBe(0);
      const plan = (
        JSON.parse(planned.stdout) as {
          plan: { tables: Array<{ name: string; insert: number; snapshotRows: number }> };
        }
      ).plan;
      expect(plan.tables.map((t) => [t.name, t.snapshotRows, t.insert])).toEqual([
        ['orders', 20, 21],
      ]);

      const docs = await atMoment('docs', ['--to', 'scope']);
      expect(docs.code).toBe(ExitCode.failed);
      expect(docs.stderr).toContain('key of a row of public.docs changed');

      const typo = await atMoment('ordres', ['--to', 'scope']);
      expect(typo.code).toBe(ExitCode.usage);
      // Named as a moment's tables are (the base snapshot's may differ: renamed since).
      expect(typo.stderr).toMatch(
        /no table at \S+ \(snapshot \S+ and the change log\) matches "ordres"\nhint: tables then: .*public\.orders/,
      );
      // (Before reading: no "as of … transaction(s) from the change log" line.)
      expect(typo.stderr).not.toContain('from the change log');
    } finally {
      await captured?.stop();
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${fresh}`);
      await cleanup();
    }
  });

  it('a column retyped, or a key added, in another table refuses only restores of that table', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'scope2');
    let captured: CapturedTarget | undefined;
    try {
      await sql(
        server,
        db,
        `CREATE TABLE accounts (id int PRIMARY KEY, tenant_id int NOT NULL, name text);
         INSERT INTO accounts SELECT g, g % 5, 'account ' || g FROM generate_series(1, 50) g;
         CREATE TABLE unrelated (id int PRIMARY KEY, v int);
         INSERT INTO unrelated SELECT g, g FROM generate_series(1, 10) g;
         CREATE TABLE keyless (id int NOT NULL, v text);
         ALTER TABLE keyless REPLICA IDENTITY FULL;
         INSERT INTO keyless VALUES (1, 'one');`,
      );
      captured = await capturedTarget(server, db, 'scope2', dir);
      const live = await connectTo(server, db);
      // Migrations on other tables: a column retyped (a rewrite), a key added.
      await live.query('ALTER TABLE unrelated ALTER COLUMN v TYPE bigint');
      await live.query('ALTER TABLE keyless ADD PRIMARY KEY (id)');
      const moment = await serverMoment(live);
      await live.query('DELETE FROM accounts WHERE tenant_id = 4');
      await live.end();
      await new Promise((r) => setTimeout(r, 1500));

      const atMoment = (table: string) =>
        captured!.run([
          'restore',
          'scope2',
          '--at',
          moment,
          '--table',
          table,
          '--where',
          'tenant_id = 4',
          '--to',
          'scope2',
        ]);
      // Before, both were refused for the other tables' changes.
      const accounts = await atMoment('accounts');
      expect(accounts.code, accounts.stderr).toBe(0);
      expect(await sql(server, db, 'SELECT count(*) AS n FROM accounts')).toEqual([{ n: '50' }]);
      const retyped = await captured.run([
        'restore',
        'scope2',
        '--at',
        moment,
        '--table',
        'unrelated',
        '--to',
        'scope2',
        '--dry-run',
      ]);
      expect(retyped.code).toBe(ExitCode.failed);
      expect(retyped.stderr).toContain('column v of public.unrelated was retyped');
    } finally {
      await captured?.stop();
      await cleanup();
    }
  });
});
