/**
 * Restore to a moment across schema changes. Capture runs (installing its
 * event triggers) while the source's schema changes under writes: columns
 * added (with constant, stable and array defaults), renamed, dropped and
 * retyped without a rewrite, tables created (also by CREATE TABLE AS),
 * renamed and dropped, DDL and rows mixed in one transaction. Each moment's
 * columns and rows are recorded independently; `restore --lsn` to each must
 * give exactly those, on PostgreSQL 15 and 17. A rewrite (a retyped column)
 * is refused with its reason, and nothing is created; a moment whose schema
 * capture could not read (two changes while it was stopped) is refused, the
 * moment after the second is rebuilt.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGeneration } from '../../src/capture/schema-events.js';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { ChangeLog, lsnValue } from '../../src/repo/changelog.js';
import { runScope } from '../../src/repo/runs.js';
import { LocalStorage } from '../../src/storage/local.js';
import {
  CLI,
  connectTo,
  freshDatabase,
  runCli,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

interface Moment {
  lsn: string;
  /** Per table: its columns (name type) and its rows as sorted COPY lines. */
  tables: Record<string, { columns: string[]; rows: string[] }>;
}

/** Every user table's columns and rows. */
async function state(s: TestServer, db: string): Promise<Moment['tables']> {
  const c = await connectTo(s, db);
  try {
    const out: Moment['tables'] = {};
    const tables = await c.query<{ t: string }>(
      `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables
        WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`,
    );
    for (const { t } of tables.rows) {
      const cols = await c.query<{ d: string }>(
        `SELECT attname || ' ' || format_type(atttypid, atttypmod) AS d FROM pg_attribute
          WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
        [t],
      );
      const parts: Buffer[] = [];
      for await (const b of c.query(copyTo(`COPY ${t} TO STDOUT`)) as AsyncIterable<Buffer>)
        parts.push(b);
      out[t] = {
        columns: cols.rows.map((r) => r.d),
        rows: Buffer.concat(parts).toString('utf8').split('\n').filter(Boolean).sort(),
      };
    }
    return out;
  } finally {
    await c.end();
  }
}

async function position(c: PgClient): Promise<string> {
  return (await c.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l;
}

for (const server of testServers().filter((s) => s.major === 15 || s.major === 17)) {
  describe(`restore across schema changes (PostgreSQL ${server.major})`, () => {
    const name = `ddl${server.major}${Math.random().toString(16).slice(2, 8)}`;
    const env = { PW: server.password };
    let dir: string;
    let cleanup: () => Promise<void>;
    let db: string;
    let live: PgClient;
    let capture: ChildProcess | undefined;
    let captureErr = '';
    const moments: Moment[] = [];
    let rewriteLsn = '';

    const startCapture = async (): Promise<void> => {
      const before = captureErr.length;
      capture = spawn(
        process.execPath,
        [CLI, 'capture', name, '--flush-interval', '100ms', '--heartbeat', '300ms'],
        { cwd: dir, env: { PATH: process.env.PATH, ...env } },
      );
      capture.stderr!.on('data', (d: Buffer) => {
        captureErr += d.toString();
      });
      for (let i = 0; i < 100 && !captureErr.slice(before).includes('resuming from'); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(captureErr.slice(before)).toContain('resuming from');
    };
    const stopCapture = async (): Promise<void> => {
      const c = capture;
      capture = undefined;
      if (c === undefined || c.exitCode !== null) return;
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    };
    // Capture reads the schema right after each change arrives; a change
    // committing before that read makes the earlier one unrecorded (the last
    // test shows it). Moments here are apart, as separate migrations are:
    // each waits until the schema of the source's newest change is recorded.
    const settled = async (): Promise<void> => {
      const g = Number(await readGeneration(live));
      if (g === 0) return; // no schema change yet
      const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), runScope(name));
      for (let i = 0; i < 100; i++) {
        const refs = await log.schemaRecords();
        const last = refs.length === 0 ? undefined : await log.readSchema(refs.at(-1)!);
        if (last !== undefined && last.generation >= g) {
          expect(last.model, `schema of generation ${g} recorded`).not.toBeNull();
          return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`capture did not record the schema of generation ${g}`);
    };
    const record = async (): Promise<void> => {
      await settled();
      moments.push({ lsn: await position(live), tables: await state(server, db) });
    };
    const url = (d: string): string =>
      `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${d}`;
    const restoreAt = (lsn: string, into: string) =>
      runCli(['restore', name, '--lsn', lsn, '--to', url(into), '--create', '--confirm', into], {
        cwd: dir,
        env,
      });

    beforeAll(async () => {
      ({ dir, cleanup } = await tempDir());
      db = await freshDatabase(server, 'ddl');
      live = await connectTo(server, db);
      await live.query(`
        CREATE TABLE acct (id int PRIMARY KEY, name text NOT NULL, score int);
        INSERT INTO acct SELECT g, 'name ' || g, g * 3 FROM generate_series(1, 60) g;
        CREATE TABLE note (id bigint PRIMARY KEY, body text);
        INSERT INTO note SELECT g, E'body\\t' || g FROM generate_series(1, 30) g;
        CREATE TABLE gone (id int PRIMARY KEY);
        INSERT INTO gone SELECT generate_series(1, 5);`);
      expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      await startCapture();
      expect(captureErr).not.toContain('not recorded');
      const b = await runCli(['backup', name], { cwd: dir, env });
      expect(b.code, b.stderr).toBe(0);

      // 0: rows change before any schema change (the window starts in the old layout).
      await live.query('UPDATE acct SET score = -score WHERE id % 4 = 0');
      await live.query("INSERT INTO acct VALUES (100, 'early', 1)");
      await record();
      // 1: columns added with a constant, a stable (now()) and an array default; rows after.
      await live.query("ALTER TABLE acct ADD COLUMN tier text DEFAULT 'basic'");
      await live.query('ALTER TABLE acct ADD COLUMN since timestamptz DEFAULT now()');
      await live.query(`ALTER TABLE acct ADD COLUMN tags text[] DEFAULT '{"a b",c}'`);
      await live.query("ALTER TABLE acct ADD COLUMN nums int[] DEFAULT '{1,2}'");
      await live.query("UPDATE acct SET tier = 'gold' WHERE id % 5 = 0");
      await live.query("INSERT INTO acct (id, name, score, tier) VALUES (101, 'late', 2, 'new')");
      await record();
      // 2: a column renamed, one dropped; rows updated and deleted after.
      await live.query('ALTER TABLE acct RENAME COLUMN name TO full_name');
      await live.query('ALTER TABLE acct DROP COLUMN score');
      await live.query("UPDATE acct SET full_name = full_name || '!' WHERE id % 3 = 0");
      await live.query('DELETE FROM acct WHERE id % 7 = 0');
      await record();
      // 3: DDL and rows in one transaction; tables created (one by CREATE TABLE AS) and renamed.
      await live.query(`BEGIN;
        UPDATE note SET body = 'before the column' WHERE id = 1;
        ALTER TABLE note ADD COLUMN flag boolean;
        UPDATE note SET flag = (id % 2 = 0) WHERE id <= 10;
        CREATE TABLE tag (id int PRIMARY KEY, label varchar(20));
        INSERT INTO tag SELECT g, 'label ' || g FROM generate_series(1, 8) g;
        COMMIT`);
      await live.query('CREATE TABLE copied AS SELECT id, body FROM note WHERE id <= 5');
      await live.query('ALTER TABLE note RENAME TO memo');
      await live.query("INSERT INTO memo VALUES (31, 'renamed table', true)");
      await record();
      // 4: a retype without a rewrite, a table dropped, an index (no row effect).
      await live.query('ALTER TABLE tag ALTER COLUMN label TYPE varchar(100)');
      await live.query('DROP TABLE gone');
      await live.query('CREATE INDEX ON memo (flag)');
      await live.query("UPDATE tag SET label = 'x' WHERE id = 2");
      // Migrations of several DDLs in one transaction, rows written after
      // them in it (the last DDL's message can come after that row): two
      // columns' names swapped; a column dropped and added again under its
      // name; a table made by CREATE TABLE AS, given its key, then filled.
      await live.query(`BEGIN;
        ALTER TABLE acct ADD COLUMN extra text;
        ALTER TABLE acct RENAME COLUMN tier TO tmp;
        ALTER TABLE acct RENAME COLUMN full_name TO tier;
        ALTER TABLE acct RENAME COLUMN tmp TO full_name;
        UPDATE acct SET full_name = 'swapped' WHERE id = 2;
        COMMIT`);
      await live.query(`BEGIN;
        ALTER TABLE tag ADD COLUMN z text;
        ALTER TABLE tag DROP COLUMN z;
        ALTER TABLE tag ADD COLUMN z text;
        UPDATE tag SET z = 'z-upd' WHERE id = 3;
        COMMIT`);
      await live.query(`BEGIN;
        CREATE TABLE keyed_later AS SELECT g AS id, 'x' || g AS name FROM generate_series(1, 5) g;
        ALTER TABLE keyed_later ADD PRIMARY KEY (id);
        INSERT INTO keyed_later VALUES (6, 'x6');
        COMMIT`);
      await record();
      // 5: one column added (its schema record is the one a test loses).
      await live.query("ALTER TABLE acct ADD COLUMN lost text DEFAULT 'l'");
      await live.query("UPDATE acct SET lost = 'set' WHERE id = 4");
      await record();
      // 6: a rewrite: the retyped values are not in the log.
      rewriteLsn = await position(live);
      await live.query(
        'ALTER TABLE memo ALTER COLUMN flag TYPE int USING (CASE WHEN flag THEN 10 ELSE 0 END)',
      );
      await live.query("UPDATE acct SET tier = 'after rewrite' WHERE id = 1");
      moments.push({ lsn: await position(live), tables: {} });
      // Let capture store a heartbeat past the last moment.
      await new Promise((r) => setTimeout(r, 1500));
    });

    afterAll(async () => {
      await stopCapture();
      await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
      await live?.end();
      await cleanup();
    });

    it('rebuilds each moment: the tables as they were, every row', async () => {
      for (const [i, m] of moments.slice(0, 6).entries()) {
        const into = `ddl_${server.major}_${i}_${Date.now() % 100000}`;
        const r = await restoreAt(m.lsn, into);
        expect(r.code, r.stderr).toBe(0);
        const got = await state(server, into);
        expect(Object.keys(got), `tables at moment ${i}`).toEqual(Object.keys(m.tables));
        for (const [t, want] of Object.entries(m.tables)) {
          expect(got[t]!.columns, `columns of ${t} at moment ${i}`).toEqual(want.columns);
          expect(got[t]!.rows, `rows of ${t} at moment ${i}`).toEqual(want.rows);
        }
      }
      // The moments are different states (the test would not notice a rebuild stuck at one).
      expect(new Set(moments.slice(0, 6).map((m) => JSON.stringify(m.tables))).size).toBe(6);
    });

    it('makes a snapshot from the log across the changes, restored like a direct one', async () => {
      const m = moments[4]!;
      const f = await runCli(['backup', name, '--from-log', '--lsn', m.lsn, '--json'], {
        cwd: dir,
        env,
      });
      expect(f.code, f.stderr).toBe(0);
      const snap = (JSON.parse(f.stdout) as { snapshot: string }).snapshot;
      const into = `ddl_${server.major}_fl_${Date.now() % 100000}`;
      const r = await runCli(['restore', snap, '--to', url(into), '--create', '--confirm', into], {
        cwd: dir,
        env,
      });
      expect(r.code, r.stderr).toBe(0);
      const got = await state(server, into);
      expect(Object.keys(got)).toEqual(Object.keys(m.tables));
      for (const [t, want] of Object.entries(m.tables)) expect(got[t], t).toEqual(want);
    });

    it('refuses a moment after a table rewrite, naming it, and creates nothing', async () => {
      const into = `ddl_${server.major}_rw_${Date.now() % 100000}`;
      const r = await restoreAt(moments[6]!.lsn, into);
      expect(r.code).not.toBe(0);
      // From the first snapshot the rewrite is met in the log; from the one
      // made from the log (it has the boolean column) the retype is seen first.
      expect(r.stderr).toMatch(
        /memo was rewritten at .*a column retyped|column flag of public\.memo was retyped/,
      );
      expect(r.stderr).toMatch(/backup after the change/);
      const exists = await live.query('SELECT 1 FROM pg_database WHERE datname = $1', [into]);
      expect(exists.rowCount).toBe(0);
      // Just before the rewrite is still a moment like any other.
      const ok = await restoreAt(rewriteLsn, `${into}_before`);
      expect(ok.code, ok.stderr).toBe(0);
    });

    it('fails as damage (exit 8) when a schema record is lost, naming it; check --read-data finds it', async () => {
      // The record of moment 5's column: without it, the schema of moment 4
      // (recorded) was taken for moment 5.
      const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), runScope(name));
      const [from, to] = [lsnValue(moments[4]!.lsn), lsnValue(moments[5]!.lsn)];
      const refs = (await log.schemaRecords()).filter((r) => r.endLsn > from && r.endLsn <= to);
      expect(refs).toHaveLength(1);
      const ref = refs[0]!;
      const file = path.join(dir, 'repo', ref.key);
      const aside = `${file}.aside`;
      await rename(file, aside);
      try {
        const into = `ddl_${server.major}_lost_${Date.now() % 100000}`;
        const r = await restoreAt(moments[5]!.lsn, into);
        expect(r.code, r.stderr).toBe(ExitCode.damaged);
        expect(r.stderr).toContain(`change-log object ${ref.key} is missing`);
        expect(r.stderr).toContain('changed the schema');
        const exists = await live.query('SELECT 1 FROM pg_database WHERE datname = $1', [into]);
        expect(exists.rowCount).toBe(0);
        // Moments before that transaction need no record of it.
        const before = await restoreAt(moments[4]!.lsn, `${into}_b`);
        expect(before.code, before.stderr).toBe(0);
        const c = await runCli(['check', '--read-data', '--json'], { cwd: dir, env });
        expect(c.code).toBe(ExitCode.damaged);
        const findings = (JSON.parse(c.stdout) as { findings: { kind: string; object: string }[] })
          .findings;
        expect(findings).toEqual([
          expect.objectContaining({ kind: 'changelog-missing', object: ref.key }),
        ]);
      } finally {
        await rename(aside, file);
      }
      expect((await runCli(['check', '--read-data'], { cwd: dir, env })).code).toBe(0);
    });

    it.runIf(server.major === 17)(
      'refuses a moment whose schema capture could not read, and rebuilds the one after',
      async () => {
        // A snapshot after the rewrite above, to start from.
        const b = await runCli(['backup', name], { cwd: dir, env });
        expect(b.code, b.stderr).toBe(0);
        // Two changes while capture is stopped: when it reads the schema for
        // the first, the second has committed, so the first's is not known.
        await stopCapture();
        await live.query('ALTER TABLE tag ADD COLUMN a int DEFAULT 1');
        const between = await position(live);
        await live.query('ALTER TABLE tag ADD COLUMN b int DEFAULT 2');
        await live.query('UPDATE tag SET b = 3 WHERE id = 3');
        const after = { lsn: await position(live), tables: await state(server, db) };
        await startCapture();
        await new Promise((r) => setTimeout(r, 1500));
        const refused = await restoreAt(between, `ddl_unrec_${Date.now() % 100000}`);
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toContain('was not recorded');
        // With tables chosen: one the unrecorded change left alone restores;
        // the one it changed is refused.
        const chosen = (table: string, into: string) =>
          runCli(
            [
              'restore',
              name,
              '--lsn',
              between,
              '--to',
              url(into),
              '--create',
              '--confirm',
              into,
              '--table',
              table,
            ],
            { cwd: dir, env },
          );
        const alone = `ddl_alone_${Date.now() % 100000}`;
        const a = await chosen('acct', alone);
        expect(a.code, a.stderr).toBe(0);
        expect((await state(server, alone))['public.acct']).toEqual(
          (await state(server, db))['public.acct'],
        );
        const changed = await chosen('tag', `ddl_changed_${Date.now() % 100000}`);
        expect(changed.code).toBe(ExitCode.failed);
        expect(changed.stderr).toContain('the schema after that change was not recorded');
        const into = `ddl_after_${Date.now() % 100000}`;
        const r = await restoreAt(after.lsn, into);
        expect(r.code, r.stderr).toBe(0);
        const got = await state(server, into);
        for (const [t, want] of Object.entries(after.tables)) expect(got[t], t).toEqual(want);

        // An undo whose window starts at such a moment reads in the snapshot's
        // tables (as before schema changes were followed): nothing in its way changed columns.
        const b2 = await runCli(['backup', name], { cwd: dir, env });
        expect(b2.code, b2.stderr).toBe(0);
        await stopCapture();
        await live.query('ALTER TABLE tag ADD COLUMN c int DEFAULT 4');
        const t1 = (
          await live.query<{ t: string }>(
            `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
          )
        ).rows[0]!.t;
        await live.query('ALTER TABLE tag ADD COLUMN d int DEFAULT 5');
        const acctBefore = (await state(server, db))['public.acct'];
        expect(acctBefore).toBeDefined();
        await live.query('DELETE FROM acct WHERE id <= 3');
        await startCapture();
        await new Promise((r) => setTimeout(r, 1500));
        const u = await runCli(['undo', name, '--since', t1, '--apply', '--confirm', name], {
          cwd: dir,
          env,
        });
        expect(u.code, u.stderr).toBe(0);
        expect((await state(server, db))['public.acct']).toEqual(acctBefore);

        // A damaged schema record is found by check --read-data.
        const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), runScope(name));
        const ref = (await log.schemaRecords()).at(-1)!;
        const file = path.join(dir, 'repo', ref.key);
        const bytes = await readFile(file);
        bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0xff;
        await writeFile(file, bytes);
        const c = await runCli(['check', '--read-data', '--json'], { cwd: dir, env });
        expect(c.code).not.toBe(0);
        expect(c.stdout).toContain(ref.key);
      },
    );
  });
}
