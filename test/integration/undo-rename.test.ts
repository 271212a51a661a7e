/**
 * `flashback undo` across table renames: a migration that renames a table
 * inside the window, or after it, or swaps a new table in under the old
 * name. The table is followed by its OID: its rows go back into it under
 * the name it has now; a table dropped since is refused by name.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { type CaptureProcess, quickCapture, serverMoment } from '../harness/capture.js';
import { connectTo, freshDatabase, runCli, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

describe('undo across table renames (PostgreSQL 17)', () => {
  const name = `ren${Math.random().toString(16).slice(2, 8)}`;
  const env = { PW: server.password };
  let dir: string;
  let cleanup: () => Promise<void>;
  let live: PgClient;
  let capture: CaptureProcess;
  /** A moment after the backup, before any rename. */
  let atBackup: string;
  const run = (args: string[]) => runCli(args, { cwd: dir, env });
  const moment = () => serverMoment(live);
  const rows = async (table: string) =>
    (await live.query<{ id: string; v: string }>(`SELECT id, v FROM ${table} ORDER BY id`)).rows;
  /** Until capture has stored what was committed (a heartbeat past it). */
  const settle = () => new Promise((r) => setTimeout(r, 1500));
  const xidOf = async (statement: string) => {
    await live.query('BEGIN');
    const x = (await live.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
    await live.query(statement);
    await live.query('COMMIT');
    return x;
  };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    const db = await freshDatabase(server, 'ren');
    live = await connectTo(server, db);
    await live.query(`
      CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 20) g;
      CREATE TABLE gone (id int PRIMARY KEY);
      INSERT INTO gone SELECT generate_series(1, 5);`);
    expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
    capture = quickCapture(dir, env, name).start();
    await capture.streaming();
    expect((await run(['backup', name])).code).toBe(0);
    atBackup = await moment();
  });

  afterAll(async () => {
    await capture?.stop();
    await run(['capture', name, '--drop-slot', '--confirm', name]);
    await live?.end();
    await cleanup();
  });

  it('a table renamed inside the window: its changes under both names are undone, into it', async () => {
    const before = await rows('items');
    const t1 = await moment();
    await live.query('DELETE FROM items WHERE id <= 3');
    await live.query('ALTER TABLE items RENAME TO things');
    await live.query('DELETE FROM things WHERE id BETWEEN 4 AND 6');
    await live.query("UPDATE things SET v = 'changed' WHERE id = 7");
    const t2 = await moment();
    await settle();

    const preview = await run(['undo', name, '--since', t1, '--until', t2]);
    expect(preview.code, preview.stderr).toBe(0);
    expect(preview.stdout).toMatch(/public\.things +6 +1 +0 +0\n/);
    expect(preview.stdout).toContain(
      'note: public.items was renamed to public.things since the window began: its rows are put back into public.things',
    );
    // Named either way.
    const old = await run(['undo', name, '--since', t1, '--until', t2, '--table', 'items']);
    expect(old.code, old.stderr).toBe(0);
    expect(old.stdout).toMatch(/public\.things +6 +1 +0 +0\n/);

    const applied = await run([
      'undo',
      name,
      '--since',
      t1,
      '--until',
      t2,
      '--table',
      'things',
      '--apply',
      '--confirm',
      name,
    ]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(await rows('things')).toEqual(before);
  });

  it('a table renamed after the transaction, and a new one given its old name: the rows go back into the renamed one', async () => {
    await settle();
    const before = await rows('things');
    const xid = await xidOf('DELETE FROM things WHERE id IN (10, 11)');
    const t3 = await moment();
    // The migration swaps tables: the old one keeps its rows under a new name.
    await live.query('ALTER TABLE things RENAME TO things_old');
    await live.query('CREATE TABLE things (id int PRIMARY KEY, v text NOT NULL)');
    await live.query("INSERT INTO things VALUES (1, 'new table')");
    await settle();

    const byTx = await run(['undo', name, '--tx', xid, '--apply', '--confirm', name]);
    expect(byTx.code, byTx.stderr).toBe(0);
    expect(byTx.stdout).toContain('public.things was renamed to public.things_old');
    expect(await rows('things_old')).toEqual(before);
    expect(await rows('things')).toEqual([{ id: '1', v: 'new table' }]);

    // A window over the swap: the new table's rows are left alone, as created in it.
    const window = await run(['undo', name, '--since', t3]);
    expect(window.code, window.stderr).toBe(0);
    expect(window.stdout).toContain(
      'note: public.things was created in the window: its 1 change(s) are left alone',
    );
  });

  it('a table dropped since the transaction is refused by name, and nothing is written', async () => {
    const xid = await xidOf('DELETE FROM gone WHERE id = 1');
    await live.query('DROP TABLE gone');
    const things = await rows('things_old');
    await settle();
    const r = await run(['undo', name, '--tx', xid, '--apply', '--confirm', name]);
    expect(r.code).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      `public.gone, whose rows the window changed, is not in "${name}" now (dropped since`,
    );
    expect(await rows('things_old')).toEqual(things);
  });

  it("restore --table under the snapshot's name puts rows back into the table it is now (snapshot and --at)", async () => {
    // items was renamed to things, then things_old (tests above).
    const before = await rows('things_old');
    await live.query('DELETE FROM things_old WHERE id BETWEEN 12 AND 15');
    const restore = (more: string[], where: string) =>
      run([
        'restore',
        name,
        ...more,
        '--to',
        name,
        '--table',
        'items',
        '--where',
        where,
        '--confirm',
        name,
      ]);
    const plain = await restore([], 'id IN (12, 13)');
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/public\.things_old +merge +20 +2 +0 +0\n/);
    expect(plain.stdout).toContain(
      'note: public.items of the snapshot is public.things_old now (the same table by its OID, renamed since): its rows went into public.things_old\n',
    );
    const at = await restore(['--at', atBackup], 'id IN (14, 15)');
    expect(at.code, at.stderr).toBe(0);
    expect(at.stdout).toContain('its rows went into public.things_old');
    expect(await rows('things_old')).toEqual(before);
    // The new table under the old name is left alone.
    expect(await rows('things')).toEqual([{ id: '1', v: 'new table' }]);
  });
});
