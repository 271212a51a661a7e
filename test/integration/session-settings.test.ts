/**
 * A database whose settings change how values look in text (DateStyle
 * SQL, DMY; a TimeZone changed between the snapshot and later changes;
 * extra_float_digits 0; IntervalStyle sql_standard): a backup, the change
 * log and a restore all work in fixed settings, so every value comes back
 * as it was, and a timestamptz key matches across the zone change.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { PgClient } from '../../src/pg/connect.js';
import { type CaptureProcess, quickCapture, serverMoment } from '../harness/capture.js';
import { connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

/** Every row, each value as text in fixed settings (whatever the database's are). */
async function rows(database: string): Promise<string[][]> {
  const c = await connectTo(server, database);
  try {
    await c.query(
      "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = 'postgres'",
    );
    const r = await c.query<{ k: string; d: string; ts: string; f: string; i: string; v: string }>(
      'SELECT k::text, d::text, ts::text, f::text, i::text, v FROM dated ORDER BY k',
    );
    return r.rows.map((x) => [x.k, x.d, x.ts, x.f, x.i, x.v]);
  } finally {
    await c.end();
  }
}

describe('values in text whatever the database settings (PostgreSQL 17)', () => {
  it('backup, change log and restore keep dates, zones, floats and intervals exact', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'styles');
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    const url = (d: string) =>
      `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${d}`;
    await sql(
      server,
      'postgres',
      `ALTER DATABASE ${db} SET DateStyle = 'SQL, DMY';
       ALTER DATABASE ${db} SET TimeZone = 'America/New_York';
       ALTER DATABASE ${db} SET extra_float_digits = 0;
       ALTER DATABASE ${db} SET IntervalStyle = 'sql_standard'`,
    );
    // (A new session takes the database's settings.)
    const live: PgClient = await connectTo(server, db);
    const restored: string[] = [];
    let capture: CaptureProcess | undefined;
    try {
      await live.query(`
        CREATE TABLE dated (k timestamptz PRIMARY KEY, d date, ts timestamp, f float8, i interval, v text);
        INSERT INTO dated VALUES
          ('2025-01-01 00:00:00+00', '2024-03-10', '2024-03-10 11:12:13.123456', 1.0 / 3, '-1 day +02:00:00', 'a'),
          ('2025-06-30 23:59:59.999999+00', '2024-02-28', '2024-12-01 00:00:00', 0.1 + 0.2, '1 year 2 mons -3 days', 'b')`);
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  styles:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      capture = quickCapture(dir, env, 'styles').start();
      await capture.streaming();
      const b = await run(['backup', 'styles']);
      expect(b.code, b.stderr).toBe(0);
      const atSnapshot = await rows(db);

      // The zone changes after the snapshot; a row is then updated by its timestamptz key.
      await sql(server, 'postgres', `ALTER DATABASE ${db} SET TimeZone = 'Asia/Tokyo'`);
      const later = await connectTo(server, db);
      await later.query("UPDATE dated SET v = 'updated' WHERE k = '2025-01-01 09:00:00+09'");
      await later.query(
        "INSERT INTO dated VALUES ('2025-03-01 12:00:00+09', '2024-03-11', NULL, 1e-300, '00:00:00.000001', 'c')",
      );
      await later.end();
      const now = await rows(db);
      const moment = await serverMoment(live);
      await new Promise((r) => setTimeout(r, 1500));
      await capture.stop();
      capture = undefined;

      const snap = await run([
        'restore',
        'latest',
        '--to',
        url('styles_snap'),
        '--create',
        '--confirm',
        'styles_snap',
      ]);
      restored.push('styles_snap');
      expect(snap.code, snap.stderr).toBe(0);
      expect(await rows('styles_snap')).toEqual(atSnapshot);

      const at = await run([
        'restore',
        'styles',
        '--at',
        moment,
        '--to',
        url('styles_at'),
        '--create',
        '--confirm',
        'styles_at',
      ]);
      restored.push('styles_at');
      expect(at.code, at.stderr).toBe(0);
      expect(await rows('styles_at')).toEqual(now);
      expect(now.map((r) => r[5])).toEqual(['updated', 'c', 'b']);

      const h = await run(['history', 'dated', '2025-01-01 00:00:00+00', '--json']);
      expect(h.code, h.stderr).toBe(0);
      const versions = JSON.parse(h.stdout) as Array<{ op: string; row: { v: string; d: string } }>;
      expect(versions.map((v) => [v.op, v.row.v, v.row.d])).toEqual([
        ['snapshot', 'a', '2024-03-10'],
        ['update', 'updated', '2024-03-10'],
      ]);
    } finally {
      await capture?.stop();
      await run(['capture', 'styles', '--drop-slot', '--confirm', 'styles']);
      await live.end();
      for (const r of restored) await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${r}`);
      await cleanup();
    }
  });

  it('keeps regclass, regtype, bytea and xml exact, and is not cancelled by timeouts, whatever the database sets', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'paths');
    const copy = `${db}_copy`;
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    try {
      await sql(
        server,
        db,
        `CREATE SCHEMA app;
         CREATE TABLE app.items (id int PRIMARY KEY); CREATE TABLE public.items (id int PRIMARY KEY);
         CREATE TYPE app.t AS (a int); CREATE TYPE public.t AS (b int);
         CREATE TABLE misc (id int PRIMARY KEY, r regclass, ty regtype, b bytea, x xml);
         INSERT INTO misc VALUES (1, 'app.items', 'app.t', '\\xdeadbeef', 'just text'),
                                 (2, 'public.items', 'public.t', '\\x00ff', '<a>b</a>');`,
      );
      // Settings an application database may well have; every one of them
      // changed a value's text, refused a value, or could cancel the work.
      await sql(
        server,
        'postgres',
        `ALTER DATABASE ${db} SET search_path = app, public;
         ALTER DATABASE ${db} SET bytea_output = 'escape';
         ALTER DATABASE ${db} SET xmloption = document;
         ALTER DATABASE ${db} SET statement_timeout = '1ms'`,
      );
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  paths:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      const b = await run(['backup', 'paths']);
      expect(b.code, b.stderr).toBe(0);
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${copy}`;
      const r = await run(['restore', 'latest', '--to', url, '--create', '--confirm', copy]);
      expect(r.code, r.stderr).toBe(0);
      // Read in fixed settings (the harness's sessions have Flashback's).
      const read = (d: string) =>
        sql(server, d, 'SELECT id, r::text, ty::text, b::text, x::text FROM misc ORDER BY id');
      const expected = [
        { id: '1', r: 'app.items', ty: 'app.t', b: '\\xdeadbeef', x: 'just text' },
        { id: '2', r: 'items', ty: 't', b: '\\x00ff', x: '<a>b</a>' },
      ];
      expect(await read(db)).toEqual(expected);
      expect(await read(copy)).toEqual(expected);

      // Back into the database itself, whose xmloption is document and search_path app first.
      await sql(server, db, 'DELETE FROM misc');
      const back = await run(['restore', 'latest', '--table', 'misc', '--to', 'paths']);
      expect(back.code, back.stderr).toBe(0);
      expect(await read(db)).toEqual(expected);
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${copy}`);
      await cleanup();
    }
  });
});
