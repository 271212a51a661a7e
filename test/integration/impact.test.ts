/**
 * `flashback impact` end to end on PostgreSQL 17: the sample SaaS database,
 * a running `flashback capture`, a backup, then the brief's incidents in a
 * window (a DELETE with a wrong predicate over some tenants' workflow_steps,
 * a migration deleting one file kind for half the tenants) among ordinary
 * writes of other tenants, a row moved between tenants, a truncate. What
 * each statement touched per tenant_id is asked of the database before it
 * runs; the report must equal exactly those counts, as JSON and as CSV.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { ChangeLog, readTransactions } from '../../src/repo/changelog.js';
import { SnapshotStore } from '../../src/repo/snapshots.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { openStorage } from '../../src/storage/open.js';
import type { ImpactRow } from '../../src/undo/impact.js';
import { CLI, connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

const NOW = `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`;

/** Expected counts: `table value` → [inserted, updated, deleted, truncated]. */
type Counts = Record<string, [number, number, number, number]>;
const FIELDS = { inserted: 0, updated: 1, deleted: 2, truncated: 3 } as const;

function add(into: Counts, table: string, value: string, field: keyof typeof FIELDS, n: number) {
  if (n === 0) return;
  const k = `public.${table} ${value}`;
  into[k] ??= [0, 0, 0, 0];
  into[k][FIELDS[field]] += n;
}

function countsOf(rows: readonly ImpactRow[]): Counts {
  const out: Counts = {};
  for (const r of rows)
    out[`${r.table} ${r.value}`] = [r.inserted, r.updated, r.deleted, r.truncated];
  return out;
}

/** RFC 4180: fields separated by commas, records by CRLF, "quoted" with doubled quotes. */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
        continue;
      }
      if (ch === '"') quoted = false;
      else field += ch;
      i++;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === ',') {
      record.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      i++;
    } else field += ch;
    i++;
  }
  expect(field === '' && record.length === 0, 'CSV ends with CRLF').toBe(true);
  return records;
}

describe('flashback impact', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let c: PgClient;
  let capture: ChildProcess | undefined;
  let captureErr = '';
  // A name of its own: replication slots are per server, shared by every test file.
  const target = `imp${randomBytes(3).toString('hex')}`;
  const slot = `flashback_${target}`;
  const env = { PW: server.password };
  const cli = (args: string[]) => runCli(args, { cwd: dir, env });
  let snapshotId = '';
  let t1 = '';
  let t2 = '';
  /** What the window's statements touched, asked of the database. */
  const window: Counts = {};
  /** What happened between the snapshot and the window's start. */
  const beforeWindow: Counts = {};

  async function now(): Promise<string> {
    return (await c.query<{ t: string }>(NOW)).rows[0]!.t;
  }

  /** Rows per tenant_id that a predicate selects, as [tenant_id, count]. */
  async function perTenant(from: string): Promise<Array<[string, number]>> {
    const { rows } = await c.query<{ t: string; n: string }>(
      `SELECT tenant_id::text AS t, count(*)::text AS n FROM ${from} GROUP BY tenant_id ORDER BY tenant_id`,
    );
    return rows.map((r) => [r.t, Number(r.n)]);
  }

  /** Counts what `from` selects per tenant under `field`, then runs the statement. */
  async function touch(
    into: Counts,
    table: string,
    field: keyof typeof FIELDS,
    from: string,
    statement: string,
  ): Promise<void> {
    const before = await perTenant(from);
    expect(before.length, `${statement} touches rows`).toBeGreaterThan(0);
    for (const [t, n] of before) add(into, table, t, field, n);
    const r = await c.query(statement);
    expect(r.rowCount).toBe(before.reduce((s, [, n]) => s + n, 0));
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'impact');
    c = await connectTo(server, db);
    await createSampleDatabase(c, {
      tenants: 12,
      subscribersPerTenant: 80,
      workflowsPerTenant: 3,
      filesPerTenant: 120,
    });
    // Capture refuses tables it cannot identify rows of (events has no key).
    await c.query(`
      ALTER TABLE events REPLICA IDENTITY FULL;
      CREATE TABLE notes (id int PRIMARY KEY, tenant_id bigint NOT NULL, body text);
      INSERT INTO notes SELECT g, 1 + g % 4, 'note ' || g FROM generate_series(1, 40) g;
      CREATE TABLE audit (id int, tenant_id bigint NOT NULL, msg text, PRIMARY KEY (id, tenant_id))
        PARTITION BY LIST (tenant_id);
      CREATE TABLE audit_low PARTITION OF audit FOR VALUES IN (1, 2, 3, 4, 5, 6);
      CREATE TABLE audit_high PARTITION OF audit DEFAULT;
      INSERT INTO audit SELECT g, 1 + g % 12, 'entry ' || g FROM generate_series(1, 120) g;
      CREATE TABLE drafts (id int PRIMARY KEY, tenant_id bigint NOT NULL, body text);
      INSERT INTO drafts SELECT g, 1 + g % 5, 'draft ' || g FROM generate_series(1, 30) g;`);
    expect((await cli(['init', '--repo', 'repo'])).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n  ${target}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
  });

  afterAll(async () => {
    if (capture !== undefined && capture.exitCode === null) capture.kill('SIGKILL');
    // Slots hold WAL on the shared server: never leave one behind.
    for (let i = 0; i < 50; i++) {
      await sql(
        server,
        db,
        `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '${slot}' AND active_pid IS NOT NULL`,
      ).catch(() => {});
      await sql(
        server,
        db,
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${slot}' AND NOT active`,
      ).catch(() => {});
      const still = await sql(
        server,
        db,
        `SELECT 1 FROM pg_replication_slots WHERE slot_name = '${slot}'`,
      ).catch(() => []);
      if (still.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await c?.end().catch(() => {});
    await cleanup();
  });

  it('captures the incidents and the writes around them', async () => {
    const childEnv: NodeJS.ProcessEnv = { ...env };
    for (const [k, v] of Object.entries(process.env)) {
      if (!/^(PG|DATABASE_URL$|FLASHBACK_)/.test(k)) childEnv[k] = v;
    }
    capture = spawn(
      process.execPath,
      [CLI, 'capture', target, '--flush-interval', '200ms', '--heartbeat', '500ms'],
      { cwd: dir, env: childEnv },
    );
    capture.stderr!.on('data', (d: Buffer) => {
      captureErr += d.toString();
    });
    for (let i = 0; i < 200 && !captureErr.includes('resuming from'); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(captureErr).toContain(`created slot "${slot}"`);
    // Taken while capture runs: the log covers everything after it.
    const backup = await cli(['backup', target]);
    expect(backup.code, backup.stderr).toBe(0);
    snapshotId = /snapshot (\S+) of/.exec(backup.stdout)![1]!;

    // Before the window: an invoice of tenant 11 moves to tenant 12 (the
    // migration below deletes it as tenant 12's), and a note is added.
    const moved = (
      await c.query<{ id: string }>(
        `SELECT id::text FROM files WHERE tenant_id = 11 AND kind = 'invoice' ORDER BY id LIMIT 1`,
      )
    ).rows[0]!.id;
    await c.query(`UPDATE files SET tenant_id = 12 WHERE id = ${moved}`);
    add(beforeWindow, 'files', '11', 'updated', 1);
    add(beforeWindow, 'files', '12', 'updated', 1);
    await c.query(`INSERT INTO notes VALUES (100, 5, 'before the window')`);
    add(beforeWindow, 'notes', '5', 'inserted', 1);
    // Created after the snapshot: known only from the schemas capture records.
    await c.query(`
      CREATE TABLE audit_new PARTITION OF audit FOR VALUES IN (13, 14);
      CREATE TABLE ledger (id int, tenant_id bigint NOT NULL, amount int, PRIMARY KEY (id, tenant_id))
        PARTITION BY RANGE (id);
      CREATE TABLE ledger_1 PARTITION OF ledger FOR VALUES FROM (0) TO (100);`);
    t1 = await now();

    // Incident 1: a fix with a wrong predicate deletes which step subscribers are on.
    await touch(
      window,
      'workflow_steps',
      'deleted',
      'workflow_steps WHERE step = 2 AND tenant_id <= 4',
      'DELETE FROM workflow_steps WHERE step = 2 AND tenant_id <= 4',
    );
    // Other tenants go on working: inserts, updates (the same rows twice: one updated row each).
    await touch(
      window,
      'files',
      'inserted',
      '(VALUES (7::bigint), (7), (7), (9)) v(tenant_id)',
      `INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at)
         SELECT t, 'export', 'new-' || t || '-' || g, 10, sha256('x'), now()
           FROM (VALUES (7, 1), (7, 2), (7, 3), (9, 1)) v(t, g)`,
    );
    await touch(
      window,
      'subscribers',
      'updated',
      'subscribers WHERE tenant_id = 10 AND id % 5 = 0',
      `UPDATE subscribers SET status = 'bounced' WHERE tenant_id = 10 AND id % 5 = 0`,
    );
    await c.query(
      `UPDATE subscribers SET attributes = '{"again": true}' WHERE tenant_id = 10 AND id % 5 = 0`,
    );
    // A file changes hands within the window: counted for both tenants.
    const handed = (
      await c.query<{ id: string }>(
        `SELECT id::text FROM files WHERE tenant_id = 1 AND kind = 'avatar' ORDER BY id LIMIT 1`,
      )
    ).rows[0]!.id;
    await c.query(`UPDATE files SET tenant_id = 3 WHERE id = ${handed}`);
    add(window, 'files', '1', 'updated', 1);
    add(window, 'files', '3', 'updated', 1);
    // A step inserted and deleted again inside the window: its value comes from the window itself.
    const step = (
      await c.query<{ id: string }>(
        `INSERT INTO workflow_steps (tenant_id, workflow_id, subscriber_id, step, updated_at)
           SELECT 6, w.id, s.id, 1, now() FROM workflows w JOIN subscribers s ON s.tenant_id = w.tenant_id
            WHERE w.tenant_id = 6 AND NOT EXISTS (
              SELECT 1 FROM workflow_steps x WHERE x.workflow_id = w.id AND x.subscriber_id = s.id)
            ORDER BY w.id, s.id LIMIT 1
         RETURNING id::text`,
      )
    ).rows[0]!.id;
    await c.query(`DELETE FROM workflow_steps WHERE id = ${step}`);
    add(window, 'workflow_steps', '6', 'inserted', 1);
    add(window, 'workflow_steps', '6', 'deleted', 1);
    // Incident 4: a migration deletes one file kind for half the tenants.
    await touch(
      window,
      'files',
      'deleted',
      `files WHERE kind = 'invoice' AND tenant_id % 2 = 0`,
      `DELETE FROM files WHERE kind = 'invoice' AND tenant_id % 2 = 0`,
    );
    expect(window['public.files 12']![2]).toBeGreaterThan(0); // the moved invoice among them
    // A keyless table (REPLICA IDENTITY FULL: old rows come whole).
    await touch(
      window,
      'events',
      'deleted',
      `events WHERE tenant_id = 4 AND kind = 'click'`,
      `DELETE FROM events WHERE tenant_id = 4 AND kind = 'click'`,
    );
    // A partitioned table: its rows, and their changes, are its partitions'.
    for (const part of ['audit_low', 'audit_high']) {
      await touch(
        window,
        part,
        'deleted',
        `${part} WHERE id % 10 = 3`,
        `DELETE FROM ${part} WHERE id % 10 = 3`,
      );
    }
    // Partitions created since the snapshot.
    await c.query(`INSERT INTO audit VALUES (200, 13, 'new tenant'), (201, 13, 'new tenant')`);
    add(window, 'audit_new', '13', 'inserted', 2);
    await c.query(`INSERT INTO ledger SELECT g, 1 + g % 3, g FROM generate_series(1, 9) g`);
    for (const t of ['1', '2', '3']) add(window, 'ledger_1', t, 'inserted', 3);
    // A table renamed in the window: one table, followed by its OID, counted
    // under its name at the window's end; the values its deletes and updates
    // lack come from the snapshot, where it has its old name.
    await c.query(`INSERT INTO drafts VALUES (400, 5, 'before the rename')`);
    add(window, 'memos', '5', 'inserted', 1);
    await c.query('ALTER TABLE drafts RENAME TO memos');
    await touch(
      window,
      'memos',
      'deleted',
      'memos WHERE tenant_id = 2',
      'DELETE FROM memos WHERE tenant_id = 2',
    );
    // (Row 3 is tenant 4's.)
    expect(
      (await c.query('UPDATE memos SET tenant_id = 3 WHERE id = 3 AND tenant_id = 4')).rowCount,
    ).toBe(1);
    add(window, 'memos', '4', 'updated', 1);
    add(window, 'memos', '3', 'updated', 1);
    // A table without tenant_id: listed, not counted.
    await c.query(`UPDATE tenants SET plan = 'pro' WHERE id = 1`);
    // A truncate: every row notes has at that moment (snapshot + log), per tenant.
    await c.query(`INSERT INTO notes VALUES (101, 6, 'in the window')`);
    add(window, 'notes', '6', 'inserted', 1);
    for (const [t, n] of await perTenant('notes')) add(window, 'notes', t, 'truncated', n);
    await c.query('TRUNCATE notes');
    t2 = await now();

    // After the window: not counted.
    await c.query('BEGIN');
    const lastXid = Number(
      (await c.query<{ x: string }>('SELECT (txid_current() % 4294967296)::text AS x')).rows[0]!.x,
    );
    await c.query(`DELETE FROM files WHERE tenant_id = 8 AND kind = 'avatar'`);
    await c.query('COMMIT');

    // Wait until the log holds the last transaction, then stop capture.
    const log = new ChangeLog(openStorage(path.join(dir, 'repo')), target);
    let seen = false;
    for (let i = 0; i < 100 && !seen; i++) {
      for await (const t of readTransactions(log)) if (t.xid === lastXid) seen = true;
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen, captureErr).toBe(true);
    capture.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => capture!.on('exit', (x) => r(x)));
    expect(code, captureErr).toBe(0);
    expect(
      (await new SnapshotStore(openStorage(path.join(dir, 'repo'))).ids()).includes(snapshotId),
    ).toBe(true);
  });

  /** `impact` over the window [t1, t2] by tenant, with more arguments. */
  const overWindow = (...more: string[]) =>
    cli(['impact', '--since', t1, '--until', t2, '--by', 'tenant_id', ...more]);

  /** impact over the window for one --table, and what the window wrote to tables named `prefix`*. */
  async function narrowed(table: string, prefix: string) {
    const r = await overWindow('--table', table, '--json');
    expect(r.code, r.stderr).toBe(0);
    const want = Object.fromEntries(Object.entries(window).filter(([k]) => k.startsWith(prefix)));
    return { got: countsOf(JSON.parse(r.stdout) as ImpactRow[]), want };
  }

  it('takes a partitioned table for its partitions; history asks for the partition', async () => {
    const { got, want } = await narrowed('audit', 'public.audit_');
    expect(Object.keys(want).some((k) => k.startsWith('public.audit_low '))).toBe(true);
    expect(Object.keys(want).some((k) => k.startsWith('public.audit_high '))).toBe(true);
    expect(Object.keys(want).some((k) => k.startsWith('public.audit_new '))).toBe(true);
    expect(got).toEqual(want);
    // A partitioned table the snapshot does not have at all.
    const ledger = await narrowed('ledger', 'public.ledger_');
    expect(Object.keys(ledger.want).length).toBe(3);
    expect(ledger.got).toEqual(ledger.want);
    // A row's history is one partition's: asked of the parent, it names them.
    const h = await cli(['history', 'audit', '3']);
    expect(h.code, h.stderr).toBe(ExitCode.usage);
    expect(h.stderr).toContain(
      "audit is a partitioned table: its rows are in its partitions, and a row's history is read from the partition that holds it",
    );
    expect(h.stderr).toContain(
      'hint: give the partition: public.audit_high, public.audit_low, public.audit_new',
    );
    const l = await cli(['history', 'ledger', '1,2']);
    expect(l.code, l.stderr).toBe(ExitCode.usage);
    expect(l.stderr).toContain('hint: give the partition: public.ledger_1');
  });

  it('counts exactly what each statement touched, per tenant and table', async () => {
    const r = await overWindow('--json');
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as ImpactRow[];
    expect(countsOf(rows)).toEqual(window);
    for (const x of rows) {
      expect(x.first > t1 && x.first <= x.last && x.last <= t2, JSON.stringify(x)).toBe(true);
      expect(Object.keys(x)).toEqual([
        'value',
        'table',
        'inserted',
        'updated',
        'deleted',
        'truncated',
        'first',
        'last',
      ]);
    }
    // Sorted by tenant_id as a number.
    const ids = rows.map((x) => Number(x.value));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    // What a reader should know is on stderr: the table without the column, the truncate.
    expect(r.stderr).toMatch(/note: no column tenant_id in public\.tenants \(1 change\)/);
    expect(r.stderr).toMatch(/note: public\.notes was truncated at \S+ \(transaction \d+\)/);
    expect(r.stderr).toContain(
      'note: public.memos was renamed in the window (public.drafts → public.memos): its changes are counted together under its newest name, the table followed by its OID',
    );
    expect(r.stderr).not.toContain('is unknown');
    expect(r.stderr).not.toContain('reaches only');

    // CSV parses back to the same rows.
    const csv = await overWindow('--csv');
    expect(csv.code, csv.stderr).toBe(0);
    const [header, ...records] = parseCsv(csv.stdout);
    expect(header).toEqual([
      'tenant_id',
      'table',
      'inserted',
      'updated',
      'deleted',
      'truncated',
      'first',
      'last',
    ]);
    expect(
      records.map(([value, table, i, u, d, t, first, last]) => ({
        value,
        table,
        inserted: Number(i),
        updated: Number(u),
        deleted: Number(d),
        truncated: Number(t),
        first,
        last,
      })),
    ).toEqual(rows);
  });

  it('narrows to --table, and starts at a snapshot with --since SNAPSHOT', async () => {
    const files = await narrowed('files', 'public.files ');
    expect(files.got).toEqual(files.want);
    // A table renamed in the window, named by either of its names.
    for (const name of ['drafts', 'memos']) {
      const memos = await narrowed(name, 'public.memos ');
      expect(Object.keys(memos.want).length).toBe(4);
      expect(memos.got).toEqual(memos.want);
    }

    // Everything written after the snapshot: the window plus what came before it.
    const all: Counts = structuredClone(window);
    for (const [k, v] of Object.entries(beforeWindow)) {
      const [table, value] = k.replace(/^public\./, '').split(' ') as [string, string];
      (Object.keys(FIELDS) as Array<keyof typeof FIELDS>).forEach((f, i) => {
        add(all, table, value, f, v[i]!);
      });
    }
    const snap = await cli([
      'impact',
      '--since',
      snapshotId,
      '--until',
      t2,
      '--by',
      'tenant_id',
      '--json',
    ]);
    expect(snap.code, snap.stderr).toBe(0);
    expect(countsOf(JSON.parse(snap.stdout) as ImpactRow[])).toEqual(all);
  });

  it('prints a readable table and explains mistakes', async () => {
    const r = await overWindow();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(`^impact by tenant_id on target ${target}: after ${t1.replace('T', ' ')}`),
    );
    expect(r.stdout).toMatch(
      /\nTENANT_ID +TABLE +INSERTED +UPDATED +DELETED +TRUNCATED +FIRST +LAST\n/,
    );
    expect(r.stdout).toMatch(
      new RegExp(`\\n6 +public\\.workflow_steps +1 +0 +1 +0 +${t1.slice(0, 10)} `),
    );
    expect(r.stdout).toMatch(
      /whose value the log lacks looked up in snapshot \S+ \(\d+ chunks? read\) and the log after it/,
    );

    const typo = await cli(['impact', '--since', t1, '--until', t2, '--by', 'tenantid']);
    expect(typo.code).toBe(3);
    expect(typo.stderr).toContain('has a column "tenantid"');
    // A misspelled table is refused, not reported as "nobody affected".
    const table = await overWindow('--table', 'filez');
    expect(table.code).toBe(3);
    expect(table.stderr).toContain('no table public.filez in the snapshots');
    expect(table.stderr).toContain('public.files');
    const both = await cli(['impact', '--since', t1, '--by', 'tenant_id', '--json', '--csv']);
    expect(both.code).toBe(3);
    const none = await cli(['impact', '--by', 'tenant_id']);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('where does the window start?');
    // A window the log does not wholly hold: the CSV is printed, but a
    // script sending it on learns it is incomplete (exit 1), not only a reader.
    const early = await cli([
      'impact',
      '--since',
      '2000-01-01T00:00:00Z',
      '--until',
      t2,
      '--by',
      'tenant_id',
      '--csv',
    ]);
    expect(early.code, early.stderr).toBe(ExitCode.failed);
    expect(early.stdout).toMatch(/^tenant_id,table,inserted,/);
    expect(early.stderr).toMatch(/note: the change log of "\S+" began at \S+, after --since/);
    expect(early.stderr).toMatch(
      /\nflashback: the report is incomplete: \d+ note\(s\) above name changes in the window it could not count or attribute\n$/,
    );
  });

  it('drops the capture slot', async () => {
    const r = await cli(['capture', target, '--drop-slot', '--confirm', target]);
    expect(r.code, r.stderr).toBe(0);
    expect(
      await sql(server, db, `SELECT 1 FROM pg_replication_slots WHERE slot_name = '${slot}'`),
    ).toEqual([]);
  });
});
