/**
 * Undo after a migration changed the table's columns (after the bad
 * transaction, before the undo): a column dropped since cannot take its
 * values back, the others do; a column renamed since takes them under its
 * name now; a column dropped and added again under the same name is a new
 * column, not the old one. Each is said in the notes. (It was an internal
 * error, exit 70: the staged rows named the columns of before.)
 */
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { type CapturedTarget, capturedTarget, serverMoment } from '../harness/capture.js';
import { connectTo, freshDatabase, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

describe('undo across columns changed since the window (PostgreSQL 17)', () => {
  it('puts rows back into the columns the table has now', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'undocols');
    let captured: CapturedTarget | undefined;
    try {
      await sql(
        server,
        db,
        `CREATE TABLE notes (id int PRIMARY KEY, tenant_id int, a text, b text, c text);
         INSERT INTO notes SELECT i, i % 5, 'a' || i, 'b' || i, 'c' || i FROM generate_series(1, 50) i;
         CREATE TABLE logs (tenant_id int, msg text, extra text);
         ALTER TABLE logs REPLICA IDENTITY FULL;
         INSERT INTO logs SELECT i % 5, 'm' || i, 'x' || i FROM generate_series(1, 20) i;`,
      );
      captured = await capturedTarget(server, db, 'cols', dir, async (run) => {
        // Before capture: said in undo's words, not a restore's.
        const early = await run(['undo', 'cols', '--tx', '1']);
        expect(early.code).toBe(3);
        expect(early.stderr).toContain(
          'target "cols" has no change log: undo reads the changes to undo from one',
        );
      });
      const run = captured.run;
      const notesBefore = await sql(server, db, 'SELECT id, a FROM notes ORDER BY id');
      const logsBefore = await sql(server, db, 'SELECT tenant_id, msg FROM logs ORDER BY msg');

      // The bad transaction.
      const c = await connectTo(server, db);
      await c.query('BEGIN');
      await c.query('DELETE FROM notes WHERE tenant_id = 2');
      await c.query("UPDATE notes SET a = 'bad' WHERE tenant_id = 3");
      await c.query('DELETE FROM logs WHERE tenant_id = 1');
      const xid = (await c.query<{ x: string }>('SELECT pg_current_xact_id()::xid::text AS x'))
        .rows[0]!.x;
      await c.query('COMMIT');
      // Then a migration: b dropped, a renamed, c dropped and added again, logs.extra dropped.
      await c.query(`ALTER TABLE notes DROP COLUMN b;
        ALTER TABLE notes RENAME COLUMN a TO aa;
        ALTER TABLE notes DROP COLUMN c;
        ALTER TABLE notes ADD COLUMN c text DEFAULT 'new';
        ALTER TABLE logs DROP COLUMN extra`);
      await c.end();
      await new Promise((r) => setTimeout(r, 1500));

      const undo = await run(['undo', 'cols', '--tx', xid, '--apply', '--json']);
      expect(undo.code, undo.stderr).toBe(0);
      const report = JSON.parse(undo.stdout) as { notes: string[] };
      expect(report.notes).toEqual(
        expect.arrayContaining([
          'column b of public.notes was dropped since the window began: its values are not put back (the other columns are)',
          'column a of public.notes was renamed to aa since the window began: its values are put back under that name',
          'column c of public.notes was dropped since the window began: its values are not put back (the other columns are)',
          'column extra of public.logs was dropped since the window began: its values are not put back (the other columns are)',
        ]),
      );
      // Every row is back, with its value of a under aa; the new c has its default.
      const notes = await sql(server, db, 'SELECT id, aa, c FROM notes ORDER BY id');
      expect(notes.map((r) => [r.id, r.aa])).toEqual(notesBefore.map((r) => [r.id, r.a]));
      const back = notes.filter((r) => Number(r.id) % 5 === 2);
      expect(back.length).toBe(10);
      expect(new Set(back.map((r) => r.c))).toEqual(new Set(['new']));
      expect(await sql(server, db, 'SELECT tenant_id, msg FROM logs ORDER BY msg')).toEqual(
        logsBefore,
      );

      // Run twice by mistake: the keyed rows are already as before (not
      // conflicts), and nothing is written.
      const again = await run(['undo', 'cols', '--tx', xid, '--apply', '--json']);
      expect(again.code, again.stderr).toBe(0);
      const second = JSON.parse(again.stdout) as {
        tables: Array<{ table: string; reinsert: number; revert: number; conflicts: number }>;
        notes: string[];
        xids: number[];
      };
      expect(second.tables.find((t) => t.table === 'public.notes')).toMatchObject({
        reinsert: 0,
        revert: 0,
        conflicts: 0,
      });
      expect(second.notes).toContain(
        'public.notes: 20 row(s) are already as they were before the changes (put back or removed since): nothing to do for them',
      );
      expect(second.xids).toEqual([]);
      const text = await run(['undo', 'cols', '--tx', xid, '--apply']);
      expect(text.stdout).toContain('nothing to apply: no row needed writing; nothing was written');
    } finally {
      await captured?.stop();
      await cleanup();
    }
  });

  it('with --table, a column change of another table in the window does not refuse the undo', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'undoscope');
    let captured: CapturedTarget | undefined;
    try {
      await sql(
        server,
        db,
        `CREATE TABLE orders (id int PRIMARY KEY, status text);
         INSERT INTO orders SELECT i, 'open' FROM generate_series(1, 30) i;
         CREATE TABLE users (id int PRIMARY KEY, name text);
         INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 10) i;`,
      );
      captured = await capturedTarget(server, db, 'scope', dir);
      const run = captured.run;
      const c = await connectTo(server, db);
      const since = await serverMoment(c);
      await c.query("UPDATE orders SET status = 'cancelled'");
      await c.query('ALTER TABLE users ADD COLUMN phone text');
      await c.query("UPDATE users SET phone = '555' WHERE id = 1");
      const until = await serverMoment(c);
      await c.end();
      await new Promise((r) => setTimeout(r, 1500));

      const window = ['undo', 'scope', '--since', since, '--until', until];
      const all = await run(window);
      expect(all.code).toBe(1);
      expect(all.stderr).toContain('public.users');
      const one = await run([...window, '--table', 'orders', '--apply']);
      expect(one.code, one.stderr).toBe(0);
      expect(
        await sql(server, db, "SELECT count(*) FILTER (WHERE status = 'open') AS n FROM orders"),
      ).toEqual([{ n: '30' }]);
    } finally {
      await captured?.stop();
      await cleanup();
    }
  });

  it('refuses a transaction that dropped a column (its values are gone though no row changed), and a window the log stopped short of', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'undodrop');
    let captured: CapturedTarget | undefined;
    try {
      await sql(
        server,
        db,
        `CREATE TABLE settings (id int PRIMARY KEY, tenant_id int, plan text);
         INSERT INTO settings SELECT i, i % 3, 'plan ' || i FROM generate_series(1, 6) i;`,
      );
      captured = await capturedTarget(server, db, 'drop', dir);
      const c = await connectTo(server, db);
      // A migration replaces the column: every row's value is lost, no row change is logged.
      await c.query('BEGIN');
      await c.query('ALTER TABLE settings DROP COLUMN plan');
      await c.query("ALTER TABLE settings ADD COLUMN plan text DEFAULT 'free'");
      const { rows } = await c.query<{ x: string }>(
        'SELECT (txid_current() % 4294967296)::text AS x',
      );
      await c.query('COMMIT');
      await c.end();
      await new Promise((r) => setTimeout(r, 1500));
      // Before, "0 change(s) in the window … applies cleanly", exit 0.
      const r = await captured.run(['undo', 'drop', '--tx', rows[0]!.x]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('column plan of public.settings was dropped at');
      expect(r.stderr).toContain('--before-xid');

      // Capture stops; the application goes on writing. Before, `--since`
      // undid "to the end of the log" without a word, and the transaction
      // written since was "not in the change log: check the id".
      const run = captured.run;
      const app = await connectTo(server, db);
      const since = await serverMoment(app);
      await app.query("UPDATE settings SET plan = 'captured' WHERE id = 2");
      await new Promise((r) => setTimeout(r, 1500));
      await captured.stop();
      captured = undefined;
      await app.query('BEGIN');
      await app.query("UPDATE settings SET plan = 'late' WHERE id = 1");
      const late = await app.query<{ x: string }>(
        'SELECT (txid_current() % 4294967296)::text AS x',
      );
      await app.query('COMMIT');
      await app.end();
      await new Promise((r) => setTimeout(r, 11_000));
      const window = await run(['undo', 'drop', '--since', since]);
      expect(window.code).toBe(ExitCode.usage);
      expect(window.stderr).toMatch(
        /the change log of "drop" reaches only \S+, not now: undo --since without --until runs to now/,
      );
      const tx = await run(['undo', 'drop', '--tx', late.rows[0]!.x]);
      expect(tx.code).toBe(ExitCode.usage);
      expect(tx.stderr).toContain('(is capture running?)');
    } finally {
      await captured?.stop();
      await cleanup();
    }
  });
});
