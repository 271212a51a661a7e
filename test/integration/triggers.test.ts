/**
 * `--disable-triggers` on restore and undo: rows merged into a live table go
 * in as the snapshot and the log have them, not as a trigger stamping
 * `updated_at` rewrites them, and the triggers are left exactly as they
 * were (one the user had disabled stays disabled, one enabled ALWAYS stays
 * so), even with a deferred foreign key whose checks are queued by the
 * writes. Without the flag the triggers fire (the documented default); a
 * role that does not own the table is refused with nothing written.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { type CaptureProcess, quickCapture } from '../harness/capture.js';
import { connectTo, freshDatabase, runCli, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 15)!;

describe('--disable-triggers (PostgreSQL 15)', () => {
  const name = `trg${Math.random().toString(16).slice(2, 8)}`;
  const env = { PW: server.password, CLERK_PW: 'clerk-secret' };
  let dir: string;
  let cleanup: () => Promise<void>;
  let live: PgClient;
  let capture: CaptureProcess;
  const run = (args: string[]) => runCli(args, { cwd: dir, env });
  /** Until capture has stored what was committed (a heartbeat past it). */
  const settle = () => new Promise((r) => setTimeout(r, 1500));
  const items = async (where: string) =>
    (
      await live.query<{ id: string; v: string; updated_at: string }>(
        `SELECT id, v, updated_at::text FROM items WHERE ${where} ORDER BY id`,
      )
    ).rows;
  /** undo of one transaction, on items only (its audit rows would be undone too), triggers off. */
  const undoItems = (xid: string, ...more: string[]) =>
    run(['undo', name, '--tx', xid, '--table', 'items', '--disable-triggers', ...more]);
  const audited = async () =>
    Number((await live.query<{ n: string }>('SELECT count(*)::text AS n FROM audit')).rows[0]!.n);
  const triggerStates = async () =>
    (
      await live.query<{ tgname: string; tgenabled: string }>(
        `SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal ORDER BY 1`,
      )
    ).rows;
  const xidOf = async (statement: string) => {
    await live.query('BEGIN');
    const x = (await live.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
    await live.query(statement);
    await live.query('COMMIT');
    return x;
  };
  const states = [
    { tgname: 'audit', tgenabled: 'O' },
    { tgname: 'audit_always', tgenabled: 'A' },
    { tgname: 'refuse', tgenabled: 'D' },
    { tgname: 'stamp', tgenabled: 'O' },
  ];
  const OLD = '2020-01-01 00:00:00+00';

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    const db = await freshDatabase(server, 'trg');
    live = await connectTo(server, db);
    await live.query(`
      SET TIME ZONE 'UTC';
      CREATE TABLE parents (id int PRIMARY KEY);
      INSERT INTO parents VALUES (1);
      CREATE TABLE items (
        id int PRIMARY KEY,
        parent int NOT NULL REFERENCES parents DEFERRABLE INITIALLY DEFERRED,
        v text NOT NULL,
        updated_at timestamptz NOT NULL);
      CREATE TABLE audit (n serial PRIMARY KEY, what text);
      CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
      CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO audit (what) VALUES (TG_NAME || ' ' || TG_OP || ' ' || NEW.id); RETURN NULL; END $$;
      CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'refuse must stay disabled'; END $$;
      INSERT INTO items SELECT g, 1, 'v' || g, '${OLD}' FROM generate_series(1, 10) g;`);
    // (Apart: the deferred checks of the insert would stop ALTER TABLE in one transaction.)
    await live.query(`
      CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION stamp();
      CREATE TRIGGER audit AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit();
      CREATE TRIGGER audit_always AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audit();
      ALTER TABLE items ENABLE ALWAYS TRIGGER audit_always;
      CREATE TRIGGER refuse BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse();
      ALTER TABLE items DISABLE TRIGGER refuse;
      DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fb_clerk') THEN
          CREATE ROLE fb_clerk LOGIN PASSWORD 'clerk-secret';
        END IF;
      END $$;
      GRANT SELECT, INSERT, UPDATE, DELETE ON items, parents TO fb_clerk;
      GRANT INSERT ON audit TO fb_clerk;
      GRANT USAGE ON SEQUENCE audit_n_seq TO fb_clerk;`);
    expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
    const target = (key: string, user: string, pw: string) =>
      `  ${key}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: ${user}\n    password_env: ${pw}\n`;
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n${target(name, 'postgres', 'PW')}${target('clerk', 'fb_clerk', 'CLERK_PW')}`,
    );
    capture = quickCapture(dir, env, name).start();
    await capture.streaming();
    expect((await run(['backup', name])).code).toBe(0);
    expect(await triggerStates()).toEqual(states);
  });

  afterAll(async () => {
    await capture?.stop();
    await run(['capture', name, '--drop-slot', '--confirm', name]);
    await live?.end();
    await cleanup();
  });

  it('restore: rows go back as in the snapshot, no trigger fires, and the triggers are as they were', async () => {
    const original = await items('id <= 3');
    await live.query('DELETE FROM items WHERE id <= 3');
    const restoreRows = (where: string, more: string[]) =>
      run([
        'restore',
        name,
        '--to',
        name,
        '--table',
        'items',
        '--where',
        where,
        '--confirm',
        name,
        ...more,
      ]);

    const dry = await restoreRows('id <= 2', ['--disable-triggers', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(
      'user triggers to switch off while merging: public.items.audit, public.items.audit_always, public.items.stamp\n',
    );
    expect(await items('id <= 3')).toEqual([]);

    const r = await restoreRows('id <= 2', ['--disable-triggers']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('user triggers switched off while merging: public.items.audit,');
    expect(await items('id <= 2')).toEqual(original.slice(0, 2));
    expect(await audited()).toBe(0);
    expect(await triggerStates()).toEqual(states);

    // Without the flag they fire: the row is stamped and audited twice.
    const fired = await restoreRows('id = 3', []);
    expect(fired.code, fired.stderr).toBe(0);
    const [row3] = await items('id = 3');
    expect(row3!.v).toBe('v3');
    expect(row3!.updated_at).not.toBe(OLD);
    expect(await audited()).toBe(2);
  });

  it('undo: the plan, the direct put-back and the --out script leave the triggers off, then as they were', async () => {
    // Reverts: the plan's path (an update is not a put-back of deleted rows).
    const before = await items('id BETWEEN 4 AND 5');
    const bad = await xidOf("UPDATE items SET v = 'wrong' WHERE id BETWEEN 4 AND 5");
    const auditedBefore = await audited();
    await settle();
    const out = path.join(dir, 'undo.sql');
    const preview = await undoItems(bad, '--out', out);
    expect(preview.code, preview.stderr).toBe(0);
    expect(preview.stdout).toContain(
      'user triggers to switch off while writing: public.items.audit, public.items.audit_always, public.items.stamp\n',
    );
    const script = await readFile(out, 'utf8');
    expect(script).toContain('ALTER TABLE ONLY public.items DISABLE TRIGGER audit_always;\n');
    expect(script).toContain(
      'SET CONSTRAINTS ALL IMMEDIATE;\nALTER TABLE ONLY public.items ENABLE TRIGGER audit;\nALTER TABLE ONLY public.items ENABLE ALWAYS TRIGGER audit_always;\nALTER TABLE ONLY public.items ENABLE TRIGGER stamp;\nCOMMIT;\n',
    );
    const undone = await undoItems(bad, '--apply', '--confirm', name);
    expect(undone.code, undone.stderr).toBe(0);
    expect(undone.stdout).toMatch(/public\.items +0 +2 +0 +0\n/);
    // The stamp of the bad update is set back too: the row is as before it.
    expect(await items('id BETWEEN 4 AND 5')).toEqual(before);
    expect(await audited()).toBe(auditedBefore);
    expect(await triggerStates()).toEqual(states);

    // Rows a DELETE removed go straight back (no plan), triggers off too;
    // the parent's check is deferred, and runs before the triggers go back on.
    const gone = await items('id BETWEEN 6 AND 7');
    const del = await xidOf('DELETE FROM items WHERE id BETWEEN 6 AND 7');
    await settle();
    const back = await undoItems(del, '--apply', '--confirm', name);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(/public\.items +2 +0 +0 +0\n/);
    expect(await items('id BETWEEN 6 AND 7')).toEqual(gone);
    expect(await audited()).toBe(auditedBefore);
    expect(await triggerStates()).toEqual(states);
  });

  it('refuses a role that does not own the table, with nothing written (exit 1)', async () => {
    await live.query('DELETE FROM items WHERE id = 8');
    // (Two names for one database: the guard wants that said once.)
    expect((await run(['targets', 'accept', 'clerk', '--confirm', 'clerk'])).code).toBe(0);
    const r = await run([
      'restore',
      name,
      '--to',
      'clerk',
      '--table',
      'items',
      '--where',
      'id = 8',
      '--disable-triggers',
      '--confirm',
      'clerk',
    ]);
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      '--disable-triggers: must be owner of table items; nothing was restored',
    );
    expect(r.stderr).toContain("hint: switching a table's triggers off needs its owner");
    expect(await items('id = 8')).toEqual([]);
    expect(await triggerStates()).toEqual(states);
  });
});
