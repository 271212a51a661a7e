/**
 * `flashback undo`, replaying the incidents of the brief on the sample SaaS
 * database while capture runs and the application keeps writing:
 * (a) a DELETE with a wrong predicate: undo of that transaction brings back
 *     exactly those rows and keeps every later write; a bad UPDATE whose rows
 *     were written again later shows conflicts with their three versions;
 * (b) a migration deletes one file kind for some tenants, new files arrive:
 *     undo by window, table and predicate, tenant by tenant in a given order;
 * (c) an old copy is loaded over a table by another tool (TRUNCATE and
 *     reload): undo of the window puts the table back as it was, keeping what
 *     was written after.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { resolveTarget } from '../../src/config/targets.js';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { Repository } from '../../src/repo/repository.js';
import { SnapshotStore } from '../../src/repo/snapshots.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { openStorage } from '../../src/storage/open.js';
import {
  type Conflict,
  type ConflictPolicy,
  type UndoProgress,
  type UndoTable,
  undo,
} from '../../src/undo/undo.js';
import { holdPruneLock } from '../harness/lock.js';
import { CLI, connectTo, freshDatabase, runCli, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;
const env = { PW: server.password };

async function rows(c: PgClient, sql: string): Promise<string[]> {
  const parts: Buffer[] = [];
  for await (const b of c.query(copyTo(`COPY (${sql}) TO STDOUT`)) as AsyncIterable<Buffer>)
    parts.push(b);
  return Buffer.concat(parts).toString('utf8').split('\n').filter(Boolean).sort();
}

async function clock(c: PgClient): Promise<string> {
  return (
    await c.query<{ t: string }>(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    )
  ).rows[0]!.t;
}

async function xidOf(c: PgClient, statements: string[]): Promise<number> {
  await c.query('BEGIN');
  const x = Number((await c.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x);
  for (const s of statements) await c.query(s);
  await c.query('COMMIT');
  return x;
}

describe('undo', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let live: PgClient;
  let capture: ChildProcess;
  let captureErr = '';
  const name = `undo${Math.random().toString(16).slice(2, 8)}`;
  const undoCli = (args: string[]) => runCli(['undo', name, ...args], { cwd: dir, env });
  const settle = () => new Promise((r) => setTimeout(r, 900)); // > flush interval + heartbeat
  /** A terminal whose user confirms the guard's prompt only after `write` (the application writing meanwhile) is done. */
  const answersAfter = (write: () => Promise<unknown>) => {
    const input = Object.assign(new PassThrough(), { isTTY: true });
    const t = {
      prompted: false,
      io: {
        input,
        output: {
          write: (text: string) => {
            if (!t.prompted && text.includes('to continue')) {
              t.prompted = true;
              void write().then(() => input.write(`${name}\n`));
            }
            return true;
          },
        },
      },
    };
    return t;
  };

  /** `undo --tx xid --apply` through the library, its prompt answered only once `write` is done. */
  const applyWhilePromptWaits = async (
    xid: number,
    write: () => Promise<unknown>,
    conflicts?: ConflictPolicy,
  ) => {
    const config = parseConfig(await readFile(path.join(dir, 'flashback.yaml'), 'utf8'), undefined);
    const terminal = answersAfter(write);
    const report = await undo({
      repo: await Repository.open(openStorage(path.join(dir, 'repo'))),
      target: resolveTarget(name, config, env),
      selection: { kind: 'tx', xid },
      mode: 'apply',
      io: terminal.io,
      ...(conflicts === undefined ? {} : { conflicts }),
    });
    expect(terminal.prompted).toBe(true);
    return report;
  };

  /** Runs a script as an undo script's header says, with Debian's psql; `env` adds to the session's environment. */
  const psqlFile = (file: string, extra: NodeJS.ProcessEnv = {}) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(
        '/usr/bin/psql',
        [
          ...['-h', server.host, '-p', String(server.port), '-U', server.user, '-d', db],
          ...['-v', 'ON_ERROR_STOP=1', '-q', '-f', file],
        ],
        {
          env: { ...process.env, PGPASSWORD: server.password, ...extra },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      p.on('exit', (code) => resolve({ code, stderr }));
    });

  /** Two new accounts, then the transaction (its xid) that adds 100 to their ids, both captured. */
  const renumbered = async (...accounts: Array<[number, string]>) => {
    await live.query(
      `INSERT INTO accounts VALUES ${accounts.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ')}`,
      accounts.flat(),
    );
    await settle();
    const x = await xidOf(live, [
      `UPDATE accounts SET id = id + 100 WHERE id IN (${accounts.map(([id]) => id).join(', ')})`,
    ]);
    await settle();
    return x;
  };

  /**
   * The application writing, on a connection of its own, over and over
   * until stopped: the stop resolves to how many times it wrote.
   */
  const keepWriting = async (write: (app: PgClient, n: number) => Promise<unknown>) => {
    const app = await connectTo(server, db);
    let writing = true;
    let n = 0;
    const loop = (async () => {
      while (writing) await write(app, n++);
    })();
    return async () => {
      writing = false;
      await loop.finally(() => app.end());
      return n;
    };
  };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'undo');
    live = await connectTo(server, db);
    await createSampleDatabase(live, { tenants: 12 });
    await live.query('ALTER TABLE events REPLICA IDENTITY FULL');
    await live.query(
      'CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE TABLE order_items (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders ON DELETE CASCADE, what text)',
    );
    await live.query(
      "CREATE TABLE carts (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text NOT NULL); CREATE TABLE cart_lines (id int PRIMARY KEY, cart_id int NOT NULL REFERENCES carts ON DELETE CASCADE, what text); INSERT INTO carts (owner) SELECT 'owner ' || g FROM generate_series(1, 20) g; INSERT INTO cart_lines SELECT g, (g - 1) % 20 + 1, 'line ' || g FROM generate_series(1, 60) g",
    );
    await live.query(
      "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL UNIQUE); INSERT INTO accounts VALUES (1, 'a@example.com'), (2, 'b@example.com'), (3, 'c@example.com')",
    );
    // Keys its collation compares without case: `User1` and `user1` are one key.
    await live.query(
      `CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
       CREATE TABLE handles (h text COLLATE nocase PRIMARY KEY, n int NOT NULL);
       INSERT INTO handles SELECT 'User' || g, g FROM generate_series(1, 5) g`,
    );
    await live.query(
      "CREATE TABLE teams (id int PRIMARY KEY, name text NOT NULL UNIQUE); CREATE TABLE members (id int PRIMARY KEY, team_id int NOT NULL REFERENCES teams ON DELETE CASCADE ON UPDATE CASCADE); INSERT INTO teams VALUES (1, 'red'); INSERT INTO members VALUES (10, 1)",
    );
    // Renumbered rows under a trigger that stamps every write.
    await live.query(
      `CREATE TABLE renum (id int PRIMARY KEY, v text NOT NULL, touched timestamptz);
       CREATE FUNCTION renum_touch() RETURNS trigger LANGUAGE plpgsql AS
         'BEGIN NEW.touched := clock_timestamp(); RETURN NEW; END';
       CREATE TRIGGER renum_touch BEFORE INSERT OR UPDATE ON renum FOR EACH ROW EXECUTE FUNCTION renum_touch();
       INSERT INTO renum (id, v) VALUES (1, 'a'), (3, 'b'), (5, 'c'), (6, 'd')`,
    );
    // Bodies large and random enough to be stored out of line (TOAST): an
    // update of another column sends them to the log as "unchanged".
    await live.query(
      "CREATE TABLE docs (id int PRIMARY KEY, title text, body text); INSERT INTO docs SELECT g, 'title ' || g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 400) i) FROM generate_series(1, 3) g",
    );
    // Its columns change after the snapshot (schema changes before a window).
    await live.query(
      "CREATE TABLE shelf (id int PRIMARY KEY, v text NOT NULL); INSERT INTO shelf SELECT g, 'item ' || g FROM generate_series(1, 10) g",
    );
    // Tenants' shops and their items (ON UPDATE CASCADE), undone tenant by tenant.
    await live.query(
      `CREATE TABLE shops (id int PRIMARY KEY, tenant int NOT NULL);
       CREATE TABLE shop_items (id int PRIMARY KEY, shop_id int NOT NULL REFERENCES shops ON DELETE CASCADE ON UPDATE CASCADE, tenant int NOT NULL);
       INSERT INTO shops SELECT g, g % 3 FROM generate_series(1, 30) g;
       INSERT INTO shop_items SELECT g, (g - 1) % 30 + 1, ((g - 1) % 30 + 1) % 3 FROM generate_series(1, 90) g`,
    );
    // Big enough for the pick threads (32 chunks or more hold deleted keys).
    await live.query(
      'CREATE TABLE readings (id bigint PRIMARY KEY, sensor int NOT NULL, payload text NOT NULL); INSERT INTO readings SELECT g, g % 50, md5(g::text) || md5((g * 3)::text) FROM generate_series(1, 500000) g',
    );
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
    capture = spawn(
      process.execPath,
      [CLI, 'capture', name, '--flush-interval', '100ms', '--heartbeat', '300ms'],
      {
        cwd: dir,
        env: { PATH: process.env.PATH, ...env },
      },
    );
    capture.stderr!.on('data', (d: Buffer) => {
      captureErr += d.toString();
    });
    for (let i = 0; i < 100 && !captureErr.includes('resuming from'); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(captureErr).toContain('resuming from');
    const b = await runCli(['backup', name], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);
  });

  afterAll(async () => {
    capture?.kill('SIGTERM');
    await new Promise((r) => capture?.once('exit', r));
    await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
    await live?.end();
    await cleanup();
  });

  it('(a) undoes a DELETE with a wrong predicate, keeping later writes; conflicts show three versions', async () => {
    const before = await rows(live, 'SELECT * FROM workflow_steps');
    const bad = await xidOf(live, ['DELETE FROM workflow_steps WHERE tenant_id IN (2, 3)']);
    // The application goes on: new steps, and an update of a surviving step.
    await live.query(
      "WITH s AS (INSERT INTO subscribers (tenant_id, email, status, attributes, created_at) VALUES (4, 'late@example.com', 'active', '{}', now()) RETURNING id) INSERT INTO workflow_steps (tenant_id, workflow_id, subscriber_id, step, updated_at) SELECT 4, (SELECT min(id) FROM workflows WHERE tenant_id = 4), id, 1, now() FROM s",
    );
    await live.query(
      'UPDATE workflow_steps SET step = step + 10 WHERE id = (SELECT min(id) FROM workflow_steps WHERE tenant_id = 5)',
    );
    const afterApp = await rows(live, 'SELECT * FROM workflow_steps');
    await settle();

    // And it keeps writing while the undo runs, on a connection of its own:
    // a new subscriber with a step for tenant 4, and tenant 5's first step
    // moved on, over and over.
    const tenant5First = (
      await live.query<{ id: string }>(
        'SELECT min(id)::text AS id FROM workflow_steps WHERE tenant_id = 5',
      )
    ).rows[0]!.id;
    const stopWriting = await keepWriting(async (app, n) => {
      await app.query(
        "WITH s AS (INSERT INTO subscribers (tenant_id, email, status, attributes, created_at) VALUES (4, 'during-undo-' || $1 || '@example.com', 'active', '{}', now()) RETURNING id) INSERT INTO workflow_steps (tenant_id, workflow_id, subscriber_id, step, updated_at) SELECT 4, (SELECT min(id) FROM workflows WHERE tenant_id = 4), id, 1, now() FROM s",
        [n],
      );
      await app.query('UPDATE workflow_steps SET step = step + 1 WHERE id = $1', [tenant5First]);
    });

    // A path that cannot be written is refused before the log is read.
    const nowhere = await undoCli(['--tx', String(bad), '--out', path.join(dir, 'no', 'u.sql')]);
    expect(nowhere.code).toBe(ExitCode.usage);
    expect(nowhere.stderr).toContain(`the directory ${path.join(dir, 'no')} does not exist`);
    const out = path.join(dir, 'undo-a.sql');
    const preview = await undoCli(['--tx', String(bad), '--out', out, '--json']);
    expect(preview.code, preview.stderr).toBe(0);
    const plan = JSON.parse(preview.stdout) as {
      tables: Array<{
        table: string;
        reinsert: number;
        revert: number;
        delete: number;
        conflicts: number;
      }>;
      validation: { ok: boolean };
      applied: boolean;
    };
    const deleted = before.filter((l) => ['2', '3'].includes(l.split('\t')[1]!)).length;
    expect(plan.tables).toEqual([
      { table: 'public.workflow_steps', reinsert: deleted, revert: 0, delete: 0, conflicts: 0 },
    ]);
    expect(plan.validation.ok).toBe(true);
    expect(plan.applied).toBe(false);
    expect(await readFile(out, 'utf8')).toMatch(/INSERT INTO public\.workflow_steps/);

    const applied = await undoCli(['--tx', String(bad), '--apply', '--confirm', name]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/applied in 1 transaction\(s\): \d+/);
    const writes = await stopWriting();
    expect(writes).toBeGreaterThan(0);
    // Every row is back, and the later writes are kept.
    const now = await rows(live, 'SELECT * FROM workflow_steps');
    const tenant = (l: string) => l.split('\t')[1]!;
    // Exactly the deleted rows are back ...
    expect(now.filter((l) => ['2', '3'].includes(tenant(l)))).toEqual(
      before.filter((l) => ['2', '3'].includes(tenant(l))),
    );
    // ... and every other row is as the application left it: before the
    // undo a new step and an updated one; during it, every write.
    const fields = (l: string) => l.split('\t');
    const moved = (l: string) => fields(l)[0] === tenant5First;
    expect(now.filter((l) => !['2', '3', '4'].includes(tenant(l)) && !moved(l))).toEqual(
      afterApp.filter((l) => !['2', '3', '4'].includes(tenant(l)) && !moved(l)),
    );
    expect(Number(fields(now.find(moved)!)[4])).toBe(
      Number(fields(afterApp.find(moved)!)[4]) + writes,
    );
    const tenant4 = now.filter((l) => tenant(l) === '4');
    expect(tenant4.length).toBe(afterApp.filter((l) => tenant(l) === '4').length + writes);
    for (const l of afterApp.filter((x) => tenant(x) === '4')) expect(tenant4).toContain(l);
    expect(afterApp.length).toBe(before.length - deleted + 1);

    // A bad UPDATE, one of whose rows is written again later: a conflict, skipped and shown.
    // (the row written again is one the bad update did change)
    const victim = (
      await live.query<{ id: string }>(
        "SELECT min(id)::text AS id FROM subscribers WHERE tenant_id = 6 AND status <> 'unsubscribed'",
      )
    ).rows[0]!.id;
    const statusesBefore = await rows(
      live,
      'SELECT id, status FROM subscribers WHERE tenant_id = 6',
    );
    const badUpdate = await xidOf(live, [
      "UPDATE subscribers SET status = 'unsubscribed' WHERE tenant_id = 6",
    ]);
    const again = (
      await live.query<{ id: string }>(
        "UPDATE subscribers SET email = 'new@example.com' WHERE id = $1 RETURNING id::text AS id",
        [victim],
      )
    ).rows[0]!.id;
    await settle();
    const u = await undoCli(['--tx', String(badUpdate), '--apply', '--confirm', name, '--json']);
    expect(u.code, u.stderr).toBe(0);
    const r = JSON.parse(u.stdout) as {
      tables: Array<{ revert: number; conflicts: number }>;
      conflicts: Array<{
        before: { id: string; status: string };
        after: { status: string };
        now: { email: string };
      }>;
    };
    expect(r.tables[0]!.conflicts).toBe(1);
    expect(r.conflicts[0]!.before.id).toBe(again);
    expect(r.conflicts[0]!.after.status).toBe('unsubscribed');
    expect(r.conflicts[0]!.now.email).toBe('new@example.com');
    // Each version's values in the server's own text form, as psql shows them.
    const liveRow = (
      await live.query<Record<string, string | null>>(
        'SELECT id::text, tenant_id::text, email, status, attributes::text, created_at::text FROM subscribers WHERE id = $1',
        [again],
      )
    ).rows[0]!;
    expect(r.conflicts[0]!.now).toEqual(liveRow);
    // Every other row of tenant 6 is back to its status; the conflicting one is left as written since.
    const statuses = await rows(live, 'SELECT id, status FROM subscribers WHERE tenant_id = 6');
    expect(statuses.filter((l) => !l.startsWith(`${again}\t`))).toEqual(
      statusesBefore.filter((l) => !l.startsWith(`${again}\t`)),
    );
    expect(statuses).toContain(`${again}\tunsubscribed`);
  });

  it('(b) undoes a migration by window, table and predicate, tenant by tenant in a given order', async () => {
    const invoicesBefore = await rows(live, "SELECT * FROM files WHERE kind = 'invoice'");
    const since = await clock(live);
    await live.query("DELETE FROM files WHERE kind IN ('invoice', 'image') AND tenant_id % 2 = 0");
    await live.query(
      "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) VALUES (2, 'invoice', 'arrived-after.pdf', 1, sha256('x'), now())",
    );
    const until = await clock(live);
    await settle();
    const est = await undoCli([
      '--since',
      since,
      '--until',
      until,
      '--table',
      'files',
      '--where',
      "kind = 'invoice'",
      '--by',
      'tenant_id',
      '--order',
      '8,4',
      '--estimate',
      '--json',
    ]);
    expect(est.code, est.stderr).toBe(0);
    const e = JSON.parse(est.stdout) as {
      tenants: Array<{ value: string; rows: number; estimatedSeconds: number }>;
    };
    expect(e.tenants.slice(0, 2).map((t) => t.value)).toEqual(['8', '4']);
    const perTenant = (t: string) => invoicesBefore.filter((l) => l.split('\t')[1] === t).length;
    for (const t of e.tenants) {
      // The invoice that arrived later is in the window too: the plan deletes it (it is a window insert).
      expect(t.rows, `tenant ${t.value}`).toBe(perTenant(t.value) + (t.value === '2' ? 1 : 0));
      expect(t.estimatedSeconds).toBeGreaterThan(0);
    }
    // Invoices keep arriving while the undo runs (after the window: kept).
    const stopWriting = await keepWriting((app, n) =>
      app.query(
        "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) VALUES (4, 'invoice', 'during-undo-' || $1, 1, sha256('y'), now())",
        [n],
      ),
    );
    const applied = await undoCli([
      '--since',
      since,
      '--until',
      until,
      '--table',
      'files',
      '--where',
      "kind = 'invoice'",
      '--by',
      'tenant_id',
      '--order',
      '8,4',
      '--apply',
      '--confirm',
      name,
    ]);
    expect(applied.code, applied.stderr).toBe(0);
    const order = [...applied.stderr.matchAll(/undo tenant_id = (\d+):/g)].map((m) => m[1]);
    expect(order.slice(0, 2)).toEqual(['8', '4']);
    const writes = await stopWriting();
    expect(writes).toBeGreaterThan(0);
    expect(
      await rows(
        live,
        "SELECT * FROM files WHERE kind = 'invoice' AND name NOT LIKE 'during-undo-%'",
      ),
    ).toEqual(invoicesBefore);
    expect(
      (
        await rows(
          live,
          "SELECT id FROM files WHERE kind = 'invoice' AND name LIKE 'during-undo-%'",
        )
      ).length,
    ).toBe(writes);
    await live.query("DELETE FROM files WHERE name LIKE 'during-undo-%'"); // (later tests count files)
    // Images were not part of the predicate: still deleted.
    expect(
      (await rows(live, "SELECT id FROM files WHERE kind = 'image' AND tenant_id % 2 = 0")).length,
    ).toBe(0);
  });

  it('(c) undoes an old copy loaded over a table (TRUNCATE and reload), keeping later writes', async () => {
    const before = await rows(live, 'SELECT * FROM tenants');
    const since = await clock(live);
    // The "old copy": half the tenants, with old names.
    await live.query('BEGIN');
    await live.query('CREATE TEMP TABLE old_tenants AS SELECT * FROM tenants WHERE id % 2 = 1');
    await live.query("UPDATE old_tenants SET name = name || ' (old)'");
    await live.query('ALTER TABLE files DROP CONSTRAINT files_tenant_id_fkey');
    await live.query('ALTER TABLE subscribers DROP CONSTRAINT subscribers_tenant_id_fkey');
    await live.query('ALTER TABLE workflows DROP CONSTRAINT workflows_tenant_id_fkey');
    await live.query('ALTER TABLE workflow_steps DROP CONSTRAINT workflow_steps_tenant_id_fkey');
    await live.query('TRUNCATE tenants');
    await live.query('INSERT INTO tenants OVERRIDING SYSTEM VALUE SELECT * FROM old_tenants');
    await live.query('COMMIT');
    const until = await clock(live);
    // Written after: a new tenant.
    await live.query(
      "INSERT INTO tenants (name, plan, created_at) VALUES ('brand-new', 'free', now())",
    );
    await settle();
    // And new tenants sign up while the undo runs.
    const stopWriting = await keepWriting((app, n) =>
      app.query(
        "INSERT INTO tenants (name, plan, created_at) VALUES ('during-undo-' || $1, 'free', now())",
        [n],
      ),
    );
    const r = await undoCli([
      '--since',
      since,
      '--until',
      until,
      '--table',
      'tenants',
      '--apply',
      '--confirm',
      name,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as {
      tables: Array<{ reinsert: number; revert: number; delete: number }>;
    };
    expect(plan.tables[0]).toMatchObject({
      reinsert: before.length - Math.ceil(before.length / 2),
      revert: Math.ceil(before.length / 2),
      delete: 0,
    });
    const writes = await stopWriting();
    expect(writes).toBeGreaterThan(0);
    const now = await rows(live, 'SELECT * FROM tenants');
    const later = (l: string) => l.includes('\tbrand-new\t') || l.includes('\tduring-undo-');
    expect(now.filter((l) => !later(l))).toEqual(before);
    expect(now.filter(later).length).toBe(1 + writes);
  });

  it('on a table without a key, undoes no half of an update written since, and shows the conflict', async () => {
    const before = await rows(live, 'SELECT * FROM events');
    const bad = await xidOf(live, [
      "UPDATE events SET kind = 'bad' WHERE tenant_id = 7 AND kind = 'open'",
    ]);
    // The application changes one of those rows again.
    const fixed = (
      await live.query(
        "UPDATE events SET kind = 'app-fixed' WHERE ctid = (SELECT min(ctid) FROM events WHERE tenant_id = 7 AND kind = 'bad')",
      )
    ).rowCount;
    expect(fixed).toBe(1);
    await settle();
    const now = await rows(live, 'SELECT * FROM events');
    const r = await undoCli(['--tx', String(bad), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { tables: UndoTable[]; conflicts: Conflict[] };
    const changed = before.filter((l) => l.startsWith('7\topen\t')).length;
    // Every row of the update held back: which old row became which new one is unknown.
    expect(report.tables[0]).toMatchObject({ reinsert: 0, delete: 0, conflicts: 2 * changed });
    expect(report.conflicts.length).toBe(Math.min(20, 2 * changed));
    expect(report.conflicts).toContainEqual(
      expect.objectContaining({
        table: 'public.events',
        op: 'delete',
        before: null,
        now: null,
        after: expect.objectContaining({ tenant_id: '7', kind: 'bad' }),
        why: expect.stringContaining('the row the changes added is no longer in it'),
      }),
    );
    // Nothing written: before, the old version came back beside the row the application fixed.
    expect(await rows(live, 'SELECT * FROM events')).toEqual(now);
    // Put the rows back as they were, for the tests after this one.
    await live.query(
      "UPDATE events SET kind = 'open' WHERE tenant_id = 7 AND kind IN ('bad', 'app-fixed')",
    );
    expect(await rows(live, 'SELECT * FROM events')).toEqual(before);
  });

  it('on a table without a key, an undo run beside the same undo waiting for its confirmation puts nothing back twice', async () => {
    const before = await rows(live, 'SELECT * FROM events');
    const bad = await xidOf(live, ["DELETE FROM events WHERE tenant_id = 8 AND kind = 'click'"]);
    await settle();
    const removed = before.filter((l) => l.startsWith('8\tclick\t')).length;
    expect(removed).toBeGreaterThan(0);
    let other: { code: number; stdout: string } | undefined;
    const report = await applyWhilePromptWaits(bad, async () => {
      other = await undoCli(['--tx', String(bad), '--apply', '--confirm', name, '--json']);
    });
    expect(other?.code).toBe(0);
    expect(JSON.parse(other!.stdout).tables[0]).toMatchObject({ reinsert: removed });
    // The one that waited found every row back already: none put back twice.
    expect(report.tables[0]).toMatchObject({
      reinsert: 0,
      conflicts: removed,
      lateConflicts: removed,
    });
    expect(await rows(live, 'SELECT * FROM events')).toEqual(before);
  });

  it('tenant by tenant (--by): tries each tenant as the apply commits it, and never undoes a key change by halves', async () => {
    const shops = () => rows(live, 'SELECT * FROM shops');
    const items = () => rows(live, 'SELECT * FROM shop_items');
    // One of shop 6's items belongs to tenant 1 (shop 6 is tenant 0's).
    await live.query('UPDATE shop_items SET tenant = 1 WHERE id = 6');
    const [s0, i0] = [await shops(), await items()];
    await settle();
    const gone = await xidOf(live, ['DELETE FROM shops WHERE id = 6']);
    await settle();
    const byTenant = (x: number, ...more: string[]) =>
      undoCli(['--tx', String(x), '--by', 'tenant', '--order', '1,0', ...more]);
    // Whole, the plan applies; tenant by tenant, tenant 1's item comes before its shop.
    const preview = await byTenant(gone);
    expect(preview.code, preview.stdout).toBe(ExitCode.failed);
    expect(preview.stdout).toContain(
      'this plan cannot be applied: for tenant = 1 (the apply commits the tenants before it)',
    );
    expect(preview.stdout).toContain('shop_items_shop_id_fkey');
    const estimate = await byTenant(gone, '--estimate');
    expect(estimate.code, estimate.stderr).toBe(0);
    expect(estimate.stdout).toContain('estimate: the plan was not tried');
    const whole = await undoCli(['--tx', String(gone), '--apply', '--confirm', name]);
    expect(whole.code, whole.stderr).toBe(0);
    expect([await shops(), await items()]).toEqual([s0, i0]);

    // Shop 5 (tenant 2) renumbered and moved to tenant 0; its items follow (ON UPDATE CASCADE).
    const moved = await xidOf(live, ['UPDATE shops SET id = 1005, tenant = 0 WHERE id = 5']);
    await settle();
    const [s1, i1] = [await shops(), await items()];
    const split = await byTenant(moved, '--apply', '--confirm', name);
    expect(split.code, split.stdout).toBe(ExitCode.failed);
    expect(split.stderr).toContain(
      'undo failed for tenant = 0 (tenants done before it stay undone): the key change of row (5) of public.shops would be undone by halves',
    );
    // Nothing changed: before, shop 5 came back beside shop 1005.
    expect([await shops(), await items()]).toEqual([s1, i1]);
    // In one transaction it is undone whole: shop 5 back, its items pointing at it
    // (deleting 1005 no longer counts as cascading to items the undo points back).
    const undone = await undoCli(['--tx', String(moved), '--apply', '--confirm', name, '--json']);
    expect(undone.code, undone.stderr).toBe(0);
    expect(JSON.parse(undone.stdout).tables).toEqual([
      expect.objectContaining({ table: 'public.shops', reinsert: 1, delete: 1, conflicts: 0 }),
      expect.objectContaining({ table: 'public.shop_items', revert: 3, conflicts: 0 }),
    ]);
    expect([await shops(), await items()]).toEqual([s0, i0]);
  });

  it('leaves the children of a parent it leaves as a conflict, and puts back the rest (it refused the whole undo)', async () => {
    await live.query(
      "INSERT INTO orders VALUES (900, 'kept apart'), (901, 'back'); INSERT INTO order_items VALUES (9001, 900, 'a'), (9002, 900, 'b'), (9011, 901, 'c')",
    );
    await settle();
    const bad = await xidOf(live, ['DELETE FROM orders WHERE id IN (900, 901)']);
    // The application writes order 900 again and deletes it, deliberately.
    await live.query("INSERT INTO orders VALUES (900, 'again')");
    await live.query('DELETE FROM orders WHERE id = 900');
    await settle();
    const r = await undoCli(['--tx', String(bad), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { tables: UndoTable[]; conflicts: Conflict[] };
    expect(report.tables).toEqual([
      expect.objectContaining({ table: 'public.orders', reinsert: 1, conflicts: 1 }),
      expect.objectContaining({ table: 'public.order_items', reinsert: 1, conflicts: 2 }),
    ]);
    expect(report.conflicts).toContainEqual(
      expect.objectContaining({
        table: 'public.order_items',
        why: expect.stringContaining(
          'it refers to a row of public.orders that is left alone as a conflict',
        ),
      }),
    );
    expect(await rows(live, 'SELECT * FROM orders WHERE id >= 900')).toEqual(['901\tback']);
    expect(await rows(live, 'SELECT * FROM order_items WHERE id >= 9000')).toEqual([
      '9011\t901\tc',
    ]);
    await live.query('DELETE FROM orders WHERE id >= 900'); // (the tests after count orders)
    await settle();
  });

  it("fires the tables' triggers in the database's search_path, as the application's writes do", async () => {
    await live.query(`CREATE SCHEMA appx; CREATE TABLE appx.undo_log (msg text); CREATE TABLE public.undo_log (msg text);
      CREATE FUNCTION shop_noted() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO undo_log VALUES (''shop '' || NEW.id); RETURN NEW; END';
      CREATE TRIGGER shop_noted AFTER INSERT ON shops FOR EACH ROW EXECUTE FUNCTION shop_noted()`);
    await live.query(`ALTER DATABASE ${db} SET search_path = appx, public`);
    try {
      const bad = await xidOf(live, ['DELETE FROM shops WHERE id = 11']);
      await settle();
      const r = await undoCli(['--tx', String(bad), '--apply', '--confirm', name]);
      expect(r.code, r.stderr).toBe(0);
      expect(await rows(live, 'SELECT msg FROM appx.undo_log')).toEqual(['shop 11']);
      expect(await rows(live, 'SELECT msg FROM public.undo_log')).toEqual([]);
    } finally {
      await live.query(`ALTER DATABASE ${db} RESET search_path`);
      await live.query('DROP TRIGGER shop_noted ON shops');
    }
  });

  it('tenant by tenant, undoes an update of a table without a key in every tenant (the first tenant put back made the others conflicts)', async () => {
    const before = await rows(live, 'SELECT * FROM events');
    const bad = await xidOf(live, [
      "UPDATE events SET kind = kind || '-x' WHERE tenant_id IN (3, 11) AND kind = 'open'",
    ]);
    await settle();
    const r = await undoCli([
      '--tx',
      String(bad),
      '--by',
      'tenant_id',
      '--apply',
      '--confirm',
      name,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tenants.map((t: { rows: number }) => t.rows)).toEqual([
      before.filter((l) => l.startsWith('3\topen\t')).length * 2,
      before.filter((l) => l.startsWith('11\topen\t')).length * 2,
    ]);
    expect(await rows(live, 'SELECT * FROM events')).toEqual(before);
  });

  it('leaves a key change whole when a child its cascade moved was written since (the row came back under both keys)', async () => {
    const shops = () => rows(live, 'SELECT * FROM shops');
    const moved = await xidOf(live, ['UPDATE shops SET id = 1012 WHERE id = 12']);
    await live.query(
      'UPDATE shop_items SET tenant = 5 WHERE id = (SELECT min(id) FROM shop_items WHERE shop_id = 1012)',
    );
    await settle();
    const now = await shops();
    const r = await undoCli(['--tx', String(moved), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tables).toContainEqual(
      expect.objectContaining({ table: 'public.shops', reinsert: 0, delete: 0, conflicts: 2 }),
    );
    expect(await shops()).toEqual(now);
  });

  it('reports no transaction for an apply whose every row was written again while the confirmation waited', async () => {
    const bad = await xidOf(live, ['UPDATE shops SET tenant = 9 WHERE id = 7']);
    await settle();
    const report = await applyWhilePromptWaits(bad, () =>
      live.query('UPDATE shops SET tenant = 8 WHERE id = 7'),
    );
    expect(report.tables[0]).toMatchObject({ revert: 0, conflicts: 1, lateConflicts: 1 });
    expect(report.xids).toEqual([]);
    expect(report.tenants[0]?.xid).toBeUndefined();
    await live.query('UPDATE shops SET tenant = 1 WHERE id = 7');
  });

  it('re-checks at apply time: a row written again while the confirmation waits is left alone', async () => {
    const tenantRows = () =>
      rows(live, 'SELECT id, status, email FROM subscribers WHERE tenant_id = 9');
    const before = await tenantRows();
    // The row written again is one the bad update changed.
    const victim = (
      await live.query<{ id: string }>(
        "SELECT min(id)::text AS id FROM subscribers WHERE tenant_id = 9 AND status <> 'bounced'",
      )
    ).rows[0]!.id;
    const bad = await xidOf(live, [
      "UPDATE subscribers SET status = 'bounced' WHERE tenant_id = 9",
    ]);
    await settle();
    const config = parseConfig(await readFile(path.join(dir, 'flashback.yaml'), 'utf8'), undefined);
    const target = resolveTarget(name, config, env);
    const repo = await Repository.open(openStorage(path.join(dir, 'repo')));
    // A terminal that answers the prompt only after the application has written the row again.
    const terminal = answersAfter(() =>
      live.query("UPDATE subscribers SET email = 'late-' || email WHERE id = $1", [victim]),
    );
    const phases: UndoProgress[] = [];
    const report = await undo({
      repo,
      target,
      selection: { kind: 'tx', xid: bad },
      mode: 'apply',
      io: terminal.io,
      onProgress: (p) => {
        // (Nothing may be reported while the prompt waits: a progress line would be drawn over it.)
        if (terminal.prompted && phases.at(-1)?.phase === 'confirm' && p.phase !== 'apply') {
          throw new Error(`progress ${p.phase} while the confirmation waits`);
        }
        phases.push(p);
      },
    });
    expect(terminal.prompted).toBe(true);
    // Progress: the rows read from the snapshot (counting up), the plan, the confirmation, the apply.
    // (Reading a log of more than 10,000 transactions reports 'log' first.)
    const order = phases.map((p) => p.phase).filter((x, i, all) => x !== all[i - 1] && x !== 'log');
    expect(order).toEqual(['rows', 'plan', 'confirm', 'apply']);
    const read = phases.filter((p) => p.phase === 'rows').map((p) => p.rows);
    expect(read[0]).toBe(0);
    // (Every row the bad update touched, also those it left as they were: not reverted.)
    expect(read.at(-1)).toBe(before.length);
    expect([...read].sort((x, y) => x - y)).toEqual(read);
    expect(report.applied).toBe(true);
    // At planning time there was no conflict: the apply was to revert every
    // row the update changed; the one written while the prompt waited was
    // left alone, and the report says so (done = planned - 1).
    const changed = before.filter((l) => !l.includes('\tbounced\t')).length;
    expect(phases.at(-1)).toEqual({ phase: 'apply', rows: changed });
    expect(report.tables).toEqual([
      {
        table: 'public.subscribers',
        reinsert: 0,
        revert: changed - 1,
        delete: 0,
        conflicts: 1,
        lateConflicts: 1,
      },
    ]);
    expect(report.tenants.map((t) => t.rows)).toEqual([changed - 1]);
    const now = await tenantRows();
    // ... but the row written while the prompt waited keeps what was written (bounced, late- email),
    const v = now.find((l) => l.startsWith(`${victim}\t`))!;
    expect(v).toMatch(/\tbounced\tlate-/);
    // and every other row of the tenant is back as it was.
    expect(now.filter((l) => !l.startsWith(`${victim}\t`))).toEqual(
      before.filter((l) => !l.startsWith(`${victim}\t`)),
    );
  });

  it('with --conflicts fail, refuses a plan with conflicts, and rolls the apply back when a row is written while the confirmation waits', async () => {
    await live.query(
      "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(9101, 9105) g",
    );
    await settle();
    const bad = await xidOf(live, [
      "UPDATE orders SET note = 'bad' WHERE id BETWEEN 9101 AND 9105",
    ]);
    await settle();
    const notes = () => rows(live, 'SELECT id, note FROM orders WHERE id BETWEEN 9101 AND 9105');
    // No conflict when planned: one appears while the prompt waits. Nothing is written.
    await expect(
      applyWhilePromptWaits(
        bad,
        () => live.query("UPDATE orders SET note = 'written again' WHERE id = 9103"),
        'fail',
      ),
    ).rejects.toMatchObject({
      code: 'undo.conflict',
      message: expect.stringMatching(
        /^1 row\(s\) were written again between the plan and the apply/,
      ),
    });
    const after = ['9101\tbad', '9102\tbad', '9103\twritten again', '9104\tbad', '9105\tbad'];
    expect(await notes()).toEqual(after);
    // Now the plan itself finds the conflict: refused, exit 1, nothing written.
    await settle();
    const r = await undoCli([
      '--tx',
      String(bad),
      '--conflicts',
      'fail',
      '--apply',
      '--confirm',
      name,
    ]);
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toMatch(/1 row\(s\) were written again after the changes being undone/);
    expect(await notes()).toEqual(after);
    await live.query('DELETE FROM orders WHERE id BETWEEN 9101 AND 9105'); // (later tests count orders)
  });

  it('re-checks rows to put back at apply time: one inserted again while the confirmation waits keeps its new values', async () => {
    await live.query(
      "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(9001, 9010) g",
    );
    const before = await rows(live, 'SELECT id, note FROM orders WHERE id BETWEEN 9001 AND 9010');
    const bad = await xidOf(live, ['DELETE FROM orders WHERE id BETWEEN 9001 AND 9010']);
    await settle();
    const report = await applyWhilePromptWaits(bad, () =>
      live.query("INSERT INTO orders VALUES (9005, 'written again')"),
    );
    // The rows went back without a plan first (the window only deleted);
    // the one written while the prompt waited made that collide, and the
    // plan made then found it: left alone, counted as a conflict.
    expect(report.tables).toEqual([
      { table: 'public.orders', reinsert: 9, revert: 0, delete: 0, conflicts: 1, lateConflicts: 0 },
    ]);
    expect(await rows(live, 'SELECT id, note FROM orders WHERE id BETWEEN 9001 AND 9010')).toEqual(
      before.map((l) => (l.startsWith('9005\t') ? '9005\twritten again' : l)),
    );
    await live.query('DELETE FROM orders WHERE id BETWEEN 9001 AND 9010'); // (later tests count orders)
  });

  it('puts back what a DELETE removed without a plan first, parents first; a row written again since makes it plan, and skip that row', async () => {
    const carts = () => rows(live, 'SELECT * FROM carts');
    const lines = () => rows(live, 'SELECT * FROM cart_lines');
    const [cartsBefore, linesBefore] = [await carts(), await lines()];
    const config = parseConfig(await readFile(path.join(dir, 'flashback.yaml'), 'utf8'), undefined);
    const run = async (xid: number) => {
      const phases: string[] = [];
      const report = await undo({
        repo: await Repository.open(openStorage(path.join(dir, 'repo'))),
        target: resolveTarget(name, config, env),
        selection: { kind: 'tx', xid },
        mode: 'apply',
        confirm: name,
        io: { input: new PassThrough(), output: { write: () => true } },
        onProgress: (p) => {
          if (phases.at(-1) !== p.phase && p.phase !== 'log') phases.push(p.phase);
        },
      });
      return { phases, report };
    };
    // Deleting carts cascades to their lines: both tables only lose rows.
    const bad = await xidOf(live, ['DELETE FROM carts WHERE id <= 10']);
    await settle();
    const first = await run(bad);
    expect(first.phases).toEqual(['rows', 'confirm', 'apply']); // (no plan)
    // (Every line of the ten carts goes back, both times.)
    const linesBack = {
      table: 'public.cart_lines',
      reinsert: 30,
      revert: 0,
      delete: 0,
      conflicts: 0,
      lateConflicts: 0,
    };
    expect(first.report.tables).toEqual([
      { table: 'public.carts', reinsert: 10, revert: 0, delete: 0, conflicts: 0, lateConflicts: 0 },
      linesBack,
    ]);
    expect(first.report.xids).toHaveLength(1);
    expect(await carts()).toEqual(cartsBefore);
    expect(await lines()).toEqual(linesBefore);

    // Again, and a cart is written again (same key) before the undo.
    const again = await xidOf(live, ['DELETE FROM carts WHERE id <= 10']);
    await live.query(
      "INSERT INTO carts (id, owner) OVERRIDING SYSTEM VALUE VALUES (3, 'written again')",
    );
    await settle();
    const second = await run(again);
    // The log after the window wrote that key again: planned straight away
    // (before, the direct insert was tried first, failed, and then planned).
    expect(second.phases).toEqual(['rows', 'plan', 'confirm', 'apply']);
    // Cart 3's lines stay out with it: put back, they would belong to the
    // cart written since, which may be another one under the same key.
    expect(second.report.tables).toEqual([
      { table: 'public.carts', reinsert: 9, revert: 0, delete: 0, conflicts: 1, lateConflicts: 0 },
      { ...linesBack, reinsert: 27, conflicts: 3 },
    ]);
    expect(second.report.conflicts[0]).toEqual({
      table: 'public.carts',
      op: 'reinsert',
      before: { id: '3', owner: 'owner 3' },
      after: null,
      now: { id: '3', owner: 'written again' },
    });
    expect(second.report.conflicts.slice(1)).toEqual(
      [0, 1, 2].map(() =>
        expect.objectContaining({
          table: 'public.cart_lines',
          op: 'reinsert',
          why: expect.stringContaining('it refers to a row of public.carts that is left alone'),
        }),
      ),
    );
    expect(second.report.xids).toHaveLength(1);
    // The cart written again keeps its values; every other row is back, but cart 3's lines.
    expect(await carts()).toEqual(
      cartsBefore.map((l) => (l.startsWith('3\t') ? '3\twritten again' : l)),
    );
    expect(await lines()).toEqual(linesBefore.filter((l) => l.split('\t')[1] !== '3'));
  });

  it('does not let a delete cascade to rows written after the window', async () => {
    const since = await clock(live);
    await live.query("INSERT INTO orders VALUES (10, 'in window'), (11, 'in window')");
    await live.query("INSERT INTO order_items VALUES (1, 11, 'in window')");
    const until = await clock(live);
    await live.query("INSERT INTO order_items VALUES (2, 10, 'written after')");
    await settle();
    const r = await undoCli([
      '--since',
      since,
      '--until',
      until,
      '--table',
      'orders',
      '--table',
      'order_items',
      '--apply',
      '--confirm',
      name,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as {
      tables: Array<{ table: string; delete: number; conflicts: number }>;
      conflicts: Array<{ table: string; op: string; why?: string }>;
    };
    expect(plan.tables.find((t) => t.table === 'public.orders')).toMatchObject({
      delete: 1,
      conflicts: 1,
    });
    // Its versions alone (inserted in the window, unchanged since) do not say why.
    expect(plan.conflicts).toContainEqual(
      expect.objectContaining({
        table: 'public.orders',
        op: 'delete',
        why: 'rows of public.order_items that refer to it are not deleted by this undo (written since, or in a table it leaves alone): ON DELETE CASCADE would delete them',
      }),
    );
    // Order 11 and its item (both from the window) are gone; order 10 stays, with the item written after.
    expect(await rows(live, 'SELECT id FROM orders')).toEqual(['10']);
    expect(await rows(live, 'SELECT id, what FROM order_items')).toEqual(['2\twritten after']);
  });

  it('undoes a key change and a unique value moved between rows (another order when putting rows back first collides)', async () => {
    // A migration renumbers two accounts and moves an e-mail address between rows.
    const x = await xidOf(live, [
      'UPDATE accounts SET id = id + 100 WHERE id IN (1, 2)',
      "UPDATE accounts SET email = 'tmp' WHERE id = 3",
      "UPDATE accounts SET email = 'c@example.com' WHERE id = 101",
      "UPDATE accounts SET email = 'a@example.com' WHERE id = 3",
    ]);
    await settle();
    const out = path.join(dir, 'accounts.sql');
    const preview = await undoCli(['--tx', String(x), '--out', out, '--json']);
    expect(preview.code, preview.stderr).toBe(0);
    expect(JSON.parse(preview.stdout)).toMatchObject({ validation: { ok: true } });
    // The script holds the order that applies: the deletes before the reinserts.
    const script = await readFile(out, 'utf8');
    expect(script.indexOf('DELETE FROM ONLY public.accounts')).toBeLessThan(
      script.indexOf('INSERT INTO public.accounts'),
    );
    // Run as its header says (Debian's psql): it applies the undo, with no warning.
    expect(script).toContain('-- Review, then run with: psql -v ON_ERROR_STOP=1 -f THIS_FILE');
    expect(await psqlFile(out)).toEqual({ code: 0, stderr: '' });
    expect(await rows(live, 'SELECT id, email FROM accounts ORDER BY id')).toEqual([
      '1\ta@example.com',
      '2\tb@example.com',
      '3\tc@example.com',
    ]);
  });

  it('puts back a key that only its text tells apart (a case-insensitive collation), as restore --on-conflict update does', async () => {
    const x = await xidOf(live, ['UPDATE handles SET h = lower(h) WHERE n <= 3']);
    await settle();
    const u = await undoCli(['--tx', String(x), '--apply', '--confirm', name]);
    expect(u.code, u.stderr).toBe(0);
    const want = ['User1\t1', 'User2\t2', 'User3\t3', 'User4\t4', 'User5\t5'];
    expect(await rows(live, 'SELECT h, n FROM handles ORDER BY n')).toEqual(want);
    // The same from the snapshot, into the live database.
    await live.query('UPDATE handles SET h = upper(h) WHERE n >= 4');
    const r = await runCli(
      [
        'restore',
        name,
        '--to',
        name,
        '--table',
        'handles',
        '--on-conflict',
        'update',
        '--confirm',
        name,
      ],
      { cwd: dir, env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/public\.handles\s+merge\s+5\s+0\s+2\s+3/);
    expect(await rows(live, 'SELECT h, n FROM handles ORDER BY n')).toEqual(want);
  });

  it('undoes a key change whole or not at all: the row under its new key written again leaves both keys alone', async () => {
    await live.query("INSERT INTO accounts VALUES (7, 'g@example.com'), (8, 'h@example.com')");
    await settle();
    const x = await xidOf(live, ['UPDATE accounts SET id = id + 100 WHERE id IN (7, 8)']);
    // Later: account 107 (was 7) is written again; 108 is not.
    await live.query("UPDATE accounts SET email = 'g2@example.com' WHERE id = 107");
    await settle();
    const r = await undoCli(['--tx', String(x), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { tables: UndoTable[]; conflicts: Conflict[] };
    // 8 goes back to its key; 7's two halves (put 7 back, delete 107) are both left.
    expect(report.tables).toEqual([
      {
        table: 'public.accounts',
        reinsert: 1,
        revert: 0,
        delete: 1,
        conflicts: 2,
        lateConflicts: 0,
      },
    ]);
    expect(report.conflicts.map((c) => [c.op, c.before?.id ?? c.after?.id]).sort()).toEqual([
      ['delete', '107'],
      ['reinsert', '7'],
    ]);
    // 107's versions show why; 7's (nothing there now, as before) do not, so it says.
    expect(Object.fromEntries(report.conflicts.map((c) => [c.op, c.why]))).toEqual({
      delete: undefined,
      reinsert:
        'its key was changed in the window, and a row under the old or new key was written since: a key change is undone whole or not at all',
    });
    expect(await rows(live, 'SELECT id, email FROM accounts WHERE id IN (7, 8, 107, 108)')).toEqual(
      ['107\tg2@example.com', '8\th@example.com'],
    ); // (sorted as text)
    await live.query('DELETE FROM accounts WHERE id IN (8, 107)');
  });

  it('undoes a key change whole or not at all at apply time too: its old key written while the confirmation waits leaves both halves', async () => {
    const x = await renumbered([9, 'i@example.com'], [10, 'j@example.com']);
    const report = await applyWhilePromptWaits(x, () =>
      // While the prompt waits, the application creates a new account 9.
      live.query("INSERT INTO accounts VALUES (9, 'new-i@example.com')"),
    );
    expect(report.applied).toBe(true);
    // 10 goes back; 9 cannot (taken since), so 109, the renumbered account, stays:
    // deleting it with 9 not put back would lose it.
    expect(
      await rows(live, 'SELECT id, email FROM accounts WHERE id IN (9, 10, 109, 110) ORDER BY id'),
    ).toEqual(['10\tj@example.com', '109\ti@example.com', '9\tnew-i@example.com']); // (sorted as text)
    await live.query('DELETE FROM accounts WHERE id IN (9, 10, 109)');
  });

  it('undoes a key change whole or not at all when its old key is inserted, not yet committed, as the apply starts', async () => {
    const x = await renumbered([11, 'k@example.com'], [12, 'l@example.com']);
    // While the prompt waits, the application begins inserting a new account
    // 11, and commits only once the apply is under way.
    const app = await connectTo(server, db);
    let committed: Promise<unknown> = Promise.resolve();
    try {
      const report = await applyWhilePromptWaits(x, async () => {
        await app.query('BEGIN');
        await app.query("INSERT INTO accounts VALUES (11, 'new-k@example.com')");
        committed = new Promise((r) => setTimeout(r, 1500)).then(() => app.query('COMMIT'));
      });
      expect(report.applied).toBe(true);
      await committed;
    } finally {
      await app.end();
    }
    // 12 goes back; 11 is taken, so 111 (the renumbered account) stays: with
    // the new 11 committed between the apply's check and its insert, it was
    // deleted, and its row lost.
    expect(
      await rows(live, 'SELECT id, email FROM accounts WHERE id IN (11, 12, 111, 112) ORDER BY id'),
    ).toEqual(['11\tnew-k@example.com', '111\tk@example.com', '12\tl@example.com']); // (sorted as text)
    await live.query('DELETE FROM accounts WHERE id IN (11, 12, 111)');
  });

  it('leaves a chain of key changes whole when one link is written while the confirmation waits; a trigger stamping rows does not count as a write', async () => {
    const renum = () => rows(live, 'SELECT id, v FROM renum');
    // a moves from 1 to 2, then b from 3 to 1; c and d from 5, 6 to 105, 106.
    const x = await xidOf(live, [
      'UPDATE renum SET id = 2 WHERE id = 1',
      'UPDATE renum SET id = 1 WHERE id = 3',
      'UPDATE renum SET id = id + 100 WHERE id IN (5, 6)',
    ]);
    await settle();
    const report = await applyWhilePromptWaits(x, () =>
      // While the prompt waits, a (now under 2) is written again.
      live.query("UPDATE renum SET v = 'a2' WHERE id = 2"),
    );
    expect(report.applied).toBe(true);
    // The chain 3 -> 1 -> 2 stays as the window and the write left it (b
    // not put back under 3 while it is still under 1); c and d go back,
    // their reinserted rows stamped anew by the trigger.
    expect(await renum()).toEqual(['1\tb', '2\ta2', '5\tc', '6\td']);
  });

  it('reverts an update that left a large (TOASTed) value unsent, taking it from the snapshot', async () => {
    const before = await rows(live, 'SELECT id, title, md5(body) FROM docs ORDER BY id');
    const x = await xidOf(live, ["UPDATE docs SET title = 'wrong' WHERE id <= 2"]);
    await settle();
    const r = await undoCli(['--tx', String(x), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ tables: [{ table: 'public.docs', revert: 2 }] });
    expect(await rows(live, 'SELECT id, title, md5(body) FROM docs ORDER BY id')).toEqual(before);
  });

  it('never reorders a plan whose deletes could cascade: refuses instead of losing rows', async () => {
    // A team renumbered; its member follows by ON UPDATE CASCADE. Putting team 1
    // back first collides on the name; deleting team 2 first would cascade to
    // the member. Nothing may be written.
    const x = await xidOf(live, ['UPDATE teams SET id = 2 WHERE id = 1']);
    await settle();
    const preview = await undoCli(['--tx', String(x), '--json']);
    expect(preview.code, preview.stderr).toBe(ExitCode.failed); // a plan that cannot be applied
    // Deleting team 2 is no conflict: the plan points its member back at team 1
    // first (the cascade would reach nothing). Putting team 1 back collides on
    // the name, and no other order may be tried.
    expect(JSON.parse(preview.stdout)).toMatchObject({
      tables: [
        { table: 'public.teams', reinsert: 1, delete: 1, conflicts: 0 },
        { table: 'public.members', revert: 1 },
      ],
      validation: {
        ok: false,
        // The server's detail names the row, not only the constraint.
        error: expect.stringMatching(/duplicate key value.*: Key \(name\)=\(red\) already exists/),
      },
    });
    const r = await undoCli([
      '--tx',
      String(x),
      '--apply',
      '--confirm',
      name,
      '--conflicts',
      'overwrite',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /duplicate key value.*: Key \(.*\)=\(.*\) already exists\..*rolled back/s,
    );
    expect(await rows(live, 'SELECT id, name FROM teams')).toEqual(['2\tred']);
    expect(await rows(live, 'SELECT id, team_id FROM members')).toEqual(['10\t2']);
  });

  it('undoes changes to a table without a key (REPLICA IDENTITY FULL), keeping later rows', async () => {
    const before = await rows(live, 'SELECT * FROM events');
    const since = await clock(live);
    await live.query("DELETE FROM events WHERE tenant_id = 1 AND kind = 'login'");
    await live.query(
      "INSERT INTO events VALUES (3, 'bad', '{}', '2026-01-02 00:00:00+00'), (3, 'bad', '{}', '2026-01-02 00:00:00+00')",
    );
    await live.query("UPDATE events SET kind = 'mangled' WHERE tenant_id = 2 AND kind = 'send'");
    const until = await clock(live);
    await live.query("INSERT INTO events VALUES (4, 'later', '{}', now())");
    const later = await rows(live, "SELECT * FROM events WHERE kind = 'later'");
    await settle();
    const undoWindow = () =>
      undoCli([
        '--since',
        since,
        '--until',
        until,
        '--table',
        'events',
        '--apply',
        '--confirm',
        name,
        '--json',
      ]);
    const r = await undoWindow();
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as {
      tables: Array<{ reinsert: number; delete: number; conflicts: number }>;
    };
    const removed = before.filter(
      (l) => l.startsWith('1\tlogin\t') || l.startsWith('2\tsend\t'),
    ).length;
    expect(plan.tables[0]).toMatchObject({ reinsert: removed, conflicts: 0 });
    const added = 2 + before.filter((l) => l.startsWith('2\tsend\t')).length;
    expect(plan.tables[0]!.delete).toBe(added);
    expect(await rows(live, 'SELECT * FROM events')).toEqual([...before, ...later].sort());

    // The same undo again: every row is back already, none is added twice.
    const again = await undoWindow();
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).tables[0]).toMatchObject({
      reinsert: 0,
      delete: 0,
      conflicts: removed + added,
    });
    expect(await rows(live, 'SELECT * FROM events')).toEqual([...before, ...later].sort());
  });

  it('undoes a TRUNCATE of a table without a key once: a second undo puts nothing back twice', async () => {
    const before = await rows(live, 'SELECT * FROM events');
    const x = await xidOf(live, [
      'TRUNCATE events',
      "INSERT INTO events VALUES (5, 'after truncate', '{}', '2026-01-03 00:00:00+00')",
    ]);
    await settle();
    const undoIt = async () => {
      const r = await undoCli(['--tx', String(x), '--apply', '--confirm', name, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { tables: UndoTable[] }).tables[0];
    };
    expect(await undoIt()).toMatchObject({ reinsert: before.length, delete: 1, conflicts: 0 });
    expect(await rows(live, 'SELECT * FROM events')).toEqual(before);
    expect(await undoIt()).toMatchObject({
      reinsert: 0,
      delete: 0,
      conflicts: before.length + 1,
    });
    expect(await rows(live, 'SELECT * FROM events')).toEqual(before);
  });

  it('puts back rows deleted all over a big table (every chunk read, in threads), byte for byte; impact counts them per sensor', async () => {
    const before = await rows(live, 'SELECT * FROM readings');
    const snapshot = (await new SnapshotStore(openStorage(path.join(dir, 'repo'))).all(name)).at(
      -1,
    )!;
    expect(snapshot.tables.find((t) => t.name === 'readings')!.chunks.length).toBeGreaterThan(32);
    const since = await clock(live);
    const bad = await xidOf(live, ['DELETE FROM readings WHERE id % 997 = 3']);
    const until = await clock(live);
    await live.query("UPDATE readings SET payload = 'later' WHERE id = 8");
    await settle();
    // Who was hit: the deleted rows' sensor values come from the snapshot (picked in threads).
    const hit = await runCli(
      [
        'impact',
        '--since',
        since,
        '--until',
        until,
        '--by',
        'sensor',
        '--table',
        'readings',
        '--json',
      ],
      { cwd: dir, env },
    );
    expect(hit.code, hit.stderr).toBe(0);
    const expected = new Map<string, number>();
    for (const l of before) {
      const [id, sensor] = l.split('\t');
      if (Number(id) % 997 === 3) expected.set(sensor!, (expected.get(sensor!) ?? 0) + 1);
    }
    const counted = JSON.parse(hit.stdout) as Array<{ value: string; deleted: number }>;
    expect(new Map(counted.map((x) => [x.value, x.deleted]))).toEqual(expected);
    expect(expected.size).toBe(50);
    const r = await undoCli(['--tx', String(bad), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tables).toEqual([
      {
        table: 'public.readings',
        reinsert: 502,
        revert: 0,
        delete: 0,
        conflicts: 0,
        lateConflicts: 0,
      },
    ]);
    expect(await rows(live, 'SELECT * FROM readings')).toEqual(
      before.map((l) => (l.startsWith('8\t') ? '8\t8\tlater' : l)).sort(),
    );
  });

  it('reads the log under a shared lock: history, impact, undo and restore --at wait for a prune (exit 7)', async () => {
    const release = await holdPruneLock(path.join(dir, 'repo'));
    try {
      const since = '2026-01-01T00:00:00Z';
      const runs = await Promise.all(
        [
          ['history', 'readings', '8', '--target', name],
          ['impact', '--since', since, '--by', 'sensor', '--target', name],
          ['undo', name, '--since', since],
          [
            'restore',
            name,
            '--at',
            since,
            '--to',
            `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${name}_at`,
            '--create',
          ],
        ].map((args) => runCli(args, { cwd: dir, env })),
      );
      for (const r of runs) {
        expect(r.code, r.stderr).toBe(ExitCode.locked);
        expect(r.stderr).toContain('locked exclusively by "prune"');
      }
    } finally {
      await release();
    }
    // Released: the same reader runs.
    expect(
      (await runCli(['history', 'readings', '8', '--target', name], { cwd: dir, env })).code,
    ).toBe(0);
  });

  it('follows schema changes made since the snapshot, and leaves tables created in the window alone, saying so', async () => {
    // After the snapshot, before the window: a column added to a snapshot
    // table (its rows from before take the default) and a table created.
    await live.query(`
      ALTER TABLE shelf ADD COLUMN qty int NOT NULL DEFAULT 7;
      UPDATE shelf SET qty = id WHERE id > 8;
      CREATE TABLE bin (id int PRIMARY KEY, label text);
      INSERT INTO bin SELECT g, 'bin ' || g FROM generate_series(1, 5) g`);
    await settle();
    const shelfBefore = await rows(live, 'SELECT * FROM shelf');
    const binBefore = await rows(live, 'SELECT * FROM bin');
    const t1 = await clock(live);
    // The window: a migration creates a table and moves rows into it, then deletes too much.
    await live.query(`
      CREATE TABLE crate (id int PRIMARY KEY, shelf_id int, label text);
      INSERT INTO crate SELECT id, id, v FROM shelf WHERE id <= 4`);
    await live.query('DELETE FROM shelf WHERE id <= 6');
    await live.query('DELETE FROM bin WHERE id IN (2, 3)');
    await live.query("UPDATE bin SET label = 'relabelled' WHERE id = 5");
    await settle();
    const crateAfter = await rows(live, 'SELECT * FROM crate');

    const created = await undoCli(['--since', t1, '--table', 'crate']);
    expect(created.code, created.stderr).toBe(ExitCode.usage);
    expect(created.stderr).toContain(
      'public.crate was created in the window: undo puts rows back into the tables as they were before it',
    );
    const applied = await undoCli(['--since', t1, '--apply', '--confirm', name]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toContain(
      'note: public.crate was created in the window: its 4 change(s) are left alone (there was no such table before the window)',
    );
    expect(applied.stdout).toMatch(/public\.shelf +6 +0 +0 +0/);
    expect(applied.stdout).toMatch(/public\.bin +2 +1 +0 +0/);
    // Byte for byte as before the window, in the columns of then; the new table untouched.
    expect(await rows(live, 'SELECT * FROM shelf')).toEqual(shelfBefore);
    expect(await rows(live, 'SELECT * FROM bin')).toEqual(binBefore);
    expect(await rows(live, 'SELECT * FROM crate')).toEqual(crateAfter);

    // A column change inside the window, with rows written after it: refused,
    // naming the way out; the window after the change is undone.
    const t2 = await clock(live);
    await live.query('DELETE FROM bin WHERE id = 4');
    await live.query('ALTER TABLE bin ADD COLUMN size int');
    await settle();
    const binAtT3 = await rows(live, 'SELECT * FROM bin');
    const t3 = await clock(live);
    await live.query('UPDATE bin SET size = 1 WHERE id = 5');
    await live.query('DELETE FROM bin WHERE id = 1');
    await settle();
    const across = await undoCli(['--since', t2]);
    expect(across.code, across.stderr).toBe(ExitCode.failed);
    expect(across.stderr).toContain(
      "the columns of public.bin changed after the window's start (at ",
    );
    expect(across.stderr).toContain('hint: undo the changes after the schema change (--since');
    const after = await undoCli(['--since', t3, '--apply', '--confirm', name]);
    expect(after.code, after.stderr).toBe(0);
    expect(await rows(live, 'SELECT * FROM bin')).toEqual(binAtT3);

    // A migration that changes columns and rows in one transaction: no
    // "after the change" to undo apart; the hint rebuilds the rows elsewhere.
    await live.query('BEGIN');
    await live.query('ALTER TABLE bin DROP COLUMN size');
    await live.query("UPDATE bin SET label = 'relabelled' WHERE id = 2");
    const xid = (await live.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
    await live.query('COMMIT');
    await settle();
    const migration = await undoCli(['--tx', xid]);
    expect(migration.code, migration.stderr).toBe(ExitCode.failed);
    // (Said by the drop itself, before the row that follows it.)
    expect(migration.stderr).toContain('column size of public.bin was dropped at');
    expect(migration.stderr).toContain(
      `hint: the transaction changed columns as well as rows, and undo does not reverse rows across a schema change; rebuild the rows as they were just before it in another database (\`flashback restore ${name} --before-xid ${xid} --table TABLE --to OTHER --create\`)`,
    );

    // A table dropped in the window: refused, pointing at restore --at for its rows.
    const t4 = await clock(live);
    await live.query('DELETE FROM shelf WHERE id = 10');
    await live.query('DROP TABLE bin');
    await settle();
    const dropped = await undoCli(['--since', t4]);
    expect(dropped.code, dropped.stderr).toBe(ExitCode.failed);
    expect(dropped.stderr).toContain("table public.bin of the window's start was dropped at ");
    expect(dropped.stderr).toContain(
      "a dropped table's rows come back with `flashback restore --at` a moment before the drop",
    );
  });

  it('puts no row back that was written again after the window (re-created and deleted again): a conflict, on the plan and on the shortcut for deletes', async () => {
    await live.query(
      "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(9201, 9206) g",
    );
    await settle();
    const mixed = await xidOf(live, [
      'DELETE FROM orders WHERE id BETWEEN 9201 AND 9203',
      "UPDATE orders SET note = 'bad' WHERE id = 9204",
    ]);
    const deletes = await xidOf(live, ['DELETE FROM orders WHERE id IN (9205, 9206)']);
    // Later, on purpose: 9202 and 9206 come back, and are deleted again.
    await live.query("INSERT INTO orders VALUES (9202, 'recreated'), (9206, 'recreated')");
    await live.query('DELETE FROM orders WHERE id IN (9202, 9206)');
    await settle();
    const ids = () => rows(live, 'SELECT id, note FROM orders WHERE id BETWEEN 9201 AND 9206');

    const r = await undoCli(['--tx', String(mixed), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { conflicts: Conflict[] };
    expect(report.conflicts.map((c) => [c.op, c.why])).toEqual([
      [
        'reinsert',
        'the window deleted it, and a transaction after the window wrote that key again (inserted it, and perhaps deleted it again): putting it back would undo that later write',
      ],
    ]);
    // Before, 9202 came back too.
    expect(await ids()).toEqual(['9201\torder 9201', '9203\torder 9203', '9204\torder 9204']);

    // A window of deletes alone (the shortcut): the same.
    const d = await undoCli(['--tx', String(deletes), '--apply', '--confirm', name]);
    expect(d.code, d.stderr).toBe(0);
    expect(await ids()).toEqual([
      '9201\torder 9201',
      '9203\torder 9203',
      '9204\torder 9204',
      '9205\torder 9205',
    ]);
  });

  it('after a TRUNCATE in the window, puts no row back whose key was written again since', async () => {
    await live.query(
      "CREATE TABLE tray (id int PRIMARY KEY, v text); INSERT INTO tray SELECT g, 'tray ' || g FROM generate_series(1, 4) g",
    );
    await settle();
    const x = await xidOf(live, ['TRUNCATE tray']);
    await live.query("INSERT INTO tray VALUES (2, 'again')");
    await live.query('DELETE FROM tray WHERE id = 2');
    await settle();
    const r = await undoCli(['--tx', String(x), '--apply', '--confirm', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { conflicts: Conflict[] }).conflicts).toHaveLength(1);
    expect(await rows(live, 'SELECT id FROM tray ORDER BY id')).toEqual(['1', '3', '4']);
  });

  it('undoes a key change whole or not at all under --where too: a predicate keeping one half leaves both', async () => {
    await live.query("INSERT INTO orders VALUES (9301, 'renumbered'), (9302, 'renumbered')");
    await settle();
    const x = await xidOf(live, ['UPDATE orders SET id = id + 100 WHERE id IN (9301, 9302)']);
    await settle();
    // The predicate holds for the old keys (put back), not the new (deleted).
    const r = await undoCli([
      '--tx',
      String(x),
      '--where',
      'id < 9400',
      '--apply',
      '--confirm',
      name,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { conflicts: Conflict[] };
    expect(report.conflicts.map((c) => c.why)).toEqual([
      'its key was changed in the window, and --where keeps only one of the two halves (old key put back, new key deleted): a key change is undone whole or not at all',
      'its key was changed in the window, and --where keeps only one of the two halves (old key put back, new key deleted): a key change is undone whole or not at all',
    ]);
    // Before, 9301 and 9302 came back beside 9401 and 9402: each order twice.
    expect(
      await rows(live, 'SELECT id FROM orders WHERE id BETWEEN 9301 AND 9402 ORDER BY id'),
    ).toEqual(['9401', '9402']);
  });

  it('writes a script that does the same in any psql session: its own time zone, date and interval styles, encoding', async () => {
    const read = 'SELECT id, status, created_at FROM subscribers WHERE tenant_id = 11 ORDER BY id';
    const before = await rows(live, read);
    const x = await xidOf(live, [
      `UPDATE subscribers SET status = 'bounced', created_at = created_at + interval '1 day 2 hours' WHERE tenant_id = 11`,
    ]);
    await settle();
    expect(await rows(live, read)).not.toEqual(before);
    const out = path.join(dir, 'session.sql');
    const r = await undoCli(['--tx', String(x), '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    // The rows are matched by their values as text: a timestamptz's text
    // depends on the session. Before, this run said UPDATE 0 and exit 0.
    const psql = await psqlFile(out, {
      PGTZ: 'America/New_York',
      PGDATESTYLE: 'SQL, DMY',
      PGOPTIONS: '-c intervalstyle=iso_8601 -c extra_float_digits=0',
      PGCLIENTENCODING: 'LATIN1',
    });
    expect(psql).toEqual({ code: 0, stderr: '' });
    expect(await rows(live, read)).toEqual(before);
  });

  it('refuses what it cannot do, saying why', async () => {
    expect((await undoCli([])).code).toBe(ExitCode.usage);
    const unknown = await undoCli(['--tx', '1']);
    expect(unknown.code).toBe(ExitCode.usage);
    expect(unknown.stderr).toContain('not in the change log');
    const bad = await undoCli(['--since', 'now-1m', '--conflicts', 'maybe']);
    expect(bad.code).toBe(ExitCode.usage);
  });
});
