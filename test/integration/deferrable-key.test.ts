/**
 * A table with a DEFERRABLE primary key: the server cannot use such a key
 * as replica identity, so capture's event trigger gives a table created
 * while it runs REPLICA IDENTITY FULL (its updates keep working); and a
 * window in which rows of it change keys (two rows can hold one key inside
 * such a transaction) is refused by name, never rebuilt wrong.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { type CaptureProcess, quickCapture, serverMoment } from '../harness/capture.js';
import { connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

describe('a DEFERRABLE primary key (PostgreSQL 17)', () => {
  it('gets a usable identity, and key shifts in a window are refused, not rebuilt wrong', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'deferred');
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    const url = (d: string) =>
      `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${d}`;
    const live = await connectTo(server, db);
    const moment = () => serverMoment(live);
    const rows = async (d: string) => {
      const c = await connectTo(server, d);
      try {
        return (await c.query('SELECT id, v FROM chain ORDER BY id')).rows;
      } finally {
        await c.end();
      }
    };
    const restored: string[] = [];
    const restoreAt = (at: string) => {
      const into = `deferred_r${restored.length}`;
      restored.push(into);
      return run([
        'restore',
        'deferred',
        '--at',
        at,
        '--to',
        url(into),
        '--create',
        '--confirm',
        into,
      ]);
    };
    let capture: CaptureProcess | undefined;
    try {
      await live.query('CREATE TABLE seed (id int PRIMARY KEY)');
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  deferred:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      capture = quickCapture(dir, env, 'deferred').start();
      await capture.streaming();
      // Created while capture runs: FULL, so its updates are not refused.
      await live.query(`
        CREATE TABLE chain (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, v text);
        INSERT INTO chain SELECT g, 'c' || g FROM generate_series(1, 10) g`);
      const identity = await live.query<{ r: string }>(
        "SELECT relreplident AS r FROM pg_class WHERE relname = 'chain'",
      );
      expect(identity.rows[0]!.r).toBe('f');
      expect((await run(['backup', 'deferred'])).code).toBe(0);
      await live.query("UPDATE chain SET v = 'changed' WHERE id = 5");
      const before = await moment();
      const atBefore = await rows(db);
      // Each row moves onto the next one's key before that one moves on.
      await live.query('UPDATE chain SET id = id + 1');
      const after = await moment();
      await new Promise((r) => setTimeout(r, 1500));
      await capture.stop();
      capture = undefined;

      const ok = await restoreAt(before);
      expect(ok.code, ok.stderr).toBe(0);
      expect(await rows(restored[0]!)).toEqual(atBefore);
      const refused = await restoreAt(after);
      expect(refused.code).toBe(ExitCode.failed);
      expect(refused.stderr).toContain(
        'the primary key of public.chain is DEFERRABLE and the change log moves rows of it to other keys',
      );
      const exists = await sql(
        server,
        'postgres',
        `SELECT 1 FROM pg_database WHERE datname = '${restored[1]}'`,
      );
      expect(exists).toEqual([]);
    } finally {
      await capture?.stop();
      await run(['capture', 'deferred', '--drop-slot', '--confirm', 'deferred']);
      await live.end();
      for (const r of restored) await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${r}`);
      await cleanup();
    }
  });
});
