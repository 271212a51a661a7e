/**
 * `flashback history` end to end on PostgreSQL 17: a backup, a running
 * `flashback capture`, a series of committed changes to one row (and noise
 * around it), then every version the command reports is compared with what
 * the database said (`col::text`) right after each commit.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { RowVersion } from '../../src/history/history.js';
import type { PgClient } from '../../src/pg/connect.js';
import { ChangeLog, readTransactions } from '../../src/repo/changelog.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { openStorage } from '../../src/storage/open.js';
import { CLI, connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

type Row = Record<string, string | null>;

/** What the database said after one committed step. */
interface Step {
  readonly xid: number;
  /** The row after the commit (`col::text`), or null once it is gone. */
  readonly row: Row | null;
  /** Server clock right after the commit: a window boundary between steps. */
  readonly after: string;
}

const SUBSCRIBER = `SELECT id::text, tenant_id::text, email::text, status::text, attributes::text, created_at::text
  FROM subscribers WHERE id = 42`;
const MEMBERSHIP = (email: string) =>
  `SELECT tenant_id::text, email::text, role::text, note::text FROM memberships WHERE tenant_id = 2 AND email = '${email}'`;
const NOW = `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`;
/** A value far over the TOAST threshold, stored out of line (STORAGE EXTERNAL below). */
const BIG = `jsonb_build_object('blob', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g))`;

describe('flashback history', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let c: PgClient;
  let capture: ChildProcessWithoutNullStreams | undefined;
  // A name of its own: replication slots are per server, shared by every test file.
  const target = `hist${randomBytes(3).toString('hex')}`;
  const slot = `flashback_${target}`;
  const env = { PW: server.password };
  const cli = (args: string[]) => runCli(args, { cwd: dir, env });
  const steps: Step[] = [];
  const moves: Step[] = [];
  /** Transactions of the schema-change steps, by table. */
  const later: Record<string, number[]> = {};
  let docsBody = '';
  let before = '';

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'history');
    c = await connectTo(server, db);
    // 30,000 subscribers: several chunks, so finding the key's chunk is tested.
    await createSampleDatabase(c, { tenants: 60 });
    // A nullable column with out-of-line values, and a table with a composite text key;
    // capture refuses tables it cannot identify rows of (events has no key).
    await c.query(`
      ALTER TABLE subscribers ALTER attributes SET STORAGE EXTERNAL, ALTER attributes DROP NOT NULL;
      ALTER TABLE events REPLICA IDENTITY FULL;
      CREATE TABLE memberships (
        tenant_id bigint NOT NULL, email text NOT NULL, role text NOT NULL, note text,
        PRIMARY KEY (tenant_id, email));
      INSERT INTO memberships
        SELECT t, 'user' || s || '@x.example', 'member', NULL
          FROM generate_series(1, 3) t, generate_series(1, 300) s;
      CREATE TABLE ledger (id int PRIMARY KEY, note text);
      INSERT INTO ledger SELECT g, 'n' || g FROM generate_series(1, 5) g;
      -- Given a key after the snapshot; renamed columns; dropped; a large value under a key change.
      CREATE TABLE keyless (id int NOT NULL, v text);
      ALTER TABLE keyless REPLICA IDENTITY FULL;
      INSERT INTO keyless VALUES (1, 'one'), (2, 'two');
      CREATE TABLE renames (id int PRIMARY KEY, a text, b text);
      INSERT INTO renames VALUES (1, 'a1', 'b1');
      CREATE TABLE doomed (id int PRIMARY KEY, v text);
      INSERT INTO doomed VALUES (1, 'd1');
      CREATE TABLE moved (id int PRIMARY KEY, v text);
      INSERT INTO moved VALUES (1, 'first row');
      CREATE TABLE docs (id int PRIMARY KEY, body text);
      ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
      INSERT INTO docs VALUES (1, repeat('long text ', 1000));`);
    expect((await cli(['init', '--repo', 'repo'])).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n  ${target}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
  });

  afterAll(async () => {
    if (capture !== undefined && capture.exitCode === null) capture.kill('SIGKILL');
    // Slots hold WAL on the shared server: never leave one behind.
    await sql(
      server,
      db,
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '${slot}' AND active_pid IS NOT NULL`,
    ).catch(() => {});
    for (let i = 0; i < 50; i++) {
      const left = await sql(
        server,
        db,
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${slot}' AND NOT active`,
      ).catch(() => [{}]);
      const still = await sql(
        server,
        db,
        `SELECT 1 FROM pg_replication_slots WHERE slot_name = '${slot}'`,
      );
      if (left.length === 0 && still.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await c?.end().catch(() => {});
    await cleanup();
  });

  /** Runs statements in one transaction; returns its xid. */
  async function tx(...statements: string[]): Promise<number> {
    await c.query('BEGIN');
    for (const s of statements) await c.query(s);
    const { rows } = await c.query<{ xid: string }>(
      'SELECT (txid_current() % 4294967296)::text AS xid',
    );
    await c.query('COMMIT');
    return Number(rows[0]!.xid);
  }

  async function now(): Promise<string> {
    return (await c.query<{ t: string }>(NOW)).rows[0]!.t;
  }

  async function step(into: Step[], read: string, ...statements: string[]): Promise<void> {
    const xid = await tx(...statements);
    const row = (await c.query<Row>(read)).rows[0] ?? null;
    into.push({ xid, row, after: await now() });
    // Noise between steps: other rows, other tables.
    await tx(
      `UPDATE subscribers SET status = 'bounced' WHERE id IN (41, 4242)`,
      `INSERT INTO events (tenant_id, kind, payload, at) VALUES (1, 'noise', '{}', now())`,
    );
  }

  it('records every version of a row while capture runs', async () => {
    const backup = await cli(['backup', target]);
    expect(backup.code, backup.stderr).toBe(0);
    const snapshotRow = (await c.query<Row>(SUBSCRIBER)).rows[0]!;

    const childEnv: NodeJS.ProcessEnv = { ...env };
    for (const [k, v] of Object.entries(process.env)) {
      if (!/^(PG|DATABASE_URL$|FLASHBACK_)/.test(k)) childEnv[k] = v;
    }
    capture = spawn(
      process.execPath,
      [CLI, 'capture', target, '--heartbeat', '1s', '--flush-interval', '200ms'],
      { cwd: dir, env: childEnv },
    );
    let stderr = '';
    capture.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    for (let i = 0; i < 200 && !stderr.includes('created slot'); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stderr).toContain(`created slot "${slot}"`);
    before = await now();

    // Subscriber 42: two columns, a large (TOASTed) value, one column while
    // the large value stays (not sent again), NULL, delete, re-insert.
    await step(
      steps,
      SUBSCRIBER,
      `UPDATE subscribers SET email = 'new42@example.com', status = 'unsubscribed' WHERE id = 42`,
      `UPDATE subscribers SET status = 'active' WHERE id = 43`,
    );
    await step(steps, SUBSCRIBER, `UPDATE subscribers SET attributes = ${BIG} WHERE id = 42`);
    await step(steps, SUBSCRIBER, `UPDATE subscribers SET status = 'bounced' WHERE id = 42`);
    await step(steps, SUBSCRIBER, `UPDATE subscribers SET attributes = NULL WHERE id = 42`);
    await step(
      steps,
      SUBSCRIBER,
      'DELETE FROM workflow_steps WHERE subscriber_id = 42',
      'DELETE FROM subscribers WHERE id = 42',
    );
    await step(
      steps,
      SUBSCRIBER,
      `INSERT INTO subscribers (id, tenant_id, email, status, attributes, created_at) OVERRIDING SYSTEM VALUE
         VALUES (42, 1, 'back42@example.com', 'active', '{"back": true}', '2026-11-21 16:00:00.123456+00')`,
    );
    // A migration swaps tables: ledger is renamed and a new one takes its
    // name; the old one gains a column, then loses it.
    await c.query(`UPDATE ledger SET note = 'v2' WHERE id = 3`);
    await c.query('ALTER TABLE ledger RENAME TO ledger_old');
    await c.query(
      `CREATE TABLE ledger (id int PRIMARY KEY, note text); INSERT INTO ledger VALUES (3, 'new table')`,
    );
    await c.query(`UPDATE ledger_old SET note = 'v3' WHERE id = 3`);
    await c.query('ALTER TABLE ledger_old ADD COLUMN extra int DEFAULT 5');
    await c.query(`UPDATE ledger_old SET note = 'v4' WHERE id = 3`);
    await c.query('ALTER TABLE ledger_old DROP COLUMN extra');
    await c.query(`UPDATE ledger_old SET note = 'v5' WHERE id = 3`);
    // The composite key: a column, then the key itself (the row moves), then after the move.
    await step(
      moves,
      MEMBERSHIP('user7@x.example'),
      `UPDATE memberships SET role = 'admin' WHERE tenant_id = 2 AND email = 'user7@x.example'`,
    );
    await step(
      moves,
      MEMBERSHIP('renamed,7@x.example'),
      `UPDATE memberships SET email = 'renamed,7@x.example', note = 'moved' WHERE tenant_id = 2 AND email = 'user7@x.example'`,
    );
    await step(
      moves,
      MEMBERSHIP('renamed,7@x.example'),
      `UPDATE memberships SET note = E'after\\tthe move' WHERE tenant_id = 2 AND email = 'renamed,7@x.example'`,
    );

    // Schema changes around rows (each a version, or part of one; see the test below).
    later.keyless = [
      await tx(`UPDATE keyless SET v = 'under full identity' WHERE id = 1`),
      await tx('ALTER TABLE keyless ADD PRIMARY KEY (id)'),
      await tx(`UPDATE keyless SET v = 'under the key' WHERE id = 1`),
    ];
    later.renames = [
      await tx('ALTER TABLE renames RENAME COLUMN a TO alpha'),
      await tx(`UPDATE renames SET alpha = 'a2' WHERE id = 1`),
      await tx(
        'ALTER TABLE renames RENAME COLUMN b TO beta',
        'ALTER TABLE renames RENAME COLUMN alpha TO gamma',
      ),
      await tx(`UPDATE renames SET beta = 'b3' WHERE id = 1`),
    ];
    later.doomed = [
      await tx(`UPDATE doomed SET v = 'd2' WHERE id = 1`),
      await tx('DROP TABLE doomed'),
    ];
    later.fresh = [
      await tx(
        `INSERT INTO ledger_old VALUES (9, 'fresh')`,
        `UPDATE ledger_old SET note = 'fresher' WHERE id = 9`,
      ),
    ];
    // The key changes; the large value is not sent again.
    later.docs = [
      await tx('UPDATE docs SET id = 100 WHERE id = 1'),
      await tx('UPDATE docs SET id = 101 WHERE id = 100'),
    ];
    // Key 1's first row is deleted; another takes the key, then moves to 2.
    later.moved = [
      await tx('DELETE FROM moved WHERE id = 1'),
      await tx(`INSERT INTO moved VALUES (1, 'second row')`),
      await tx('UPDATE moved SET id = 2 WHERE id = 1'),
    ];
    // A table created after the snapshot, then dropped: no row of it ever existed.
    later.ghost = [
      await tx('CREATE TABLE ghost (id int PRIMARY KEY)'),
      await tx('DROP TABLE ghost'),
    ];
    docsBody = (await c.query<{ body: string }>('SELECT body FROM docs WHERE id = 101')).rows[0]!
      .body;

    // Wait until the log holds the last transaction, then stop capture.
    const last = later.ghost.at(-1)!;
    const log = new ChangeLog(openStorage(path.join(dir, 'repo')), target);
    let seen = false;
    for (let i = 0; i < 100 && !seen; i++) {
      for await (const t of readTransactions(log)) if (t.xid === last) seen = true;
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen, stderr).toBe(true);
    capture.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => capture!.on('exit', (x) => r(x)));
    expect(code, stderr).toBe(0);
    expect(stderr).toContain(`capture ${target} stopped`);

    // Every version of subscribers 42, as the database said after each commit.
    const r = await cli(['history', 'subscribers', '42', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const versions = JSON.parse(r.stdout) as RowVersion[];
    const cols = Object.keys(snapshotRow);
    expect(versions.map((v) => [v.op, v.xid, v.changed, v.row])).toEqual([
      ['snapshot', null, cols, snapshotRow],
      ['update', steps[0]!.xid, ['email', 'status'], steps[0]!.row],
      ['update', steps[1]!.xid, ['attributes'], steps[1]!.row],
      // The large value was not sent again: carried from the version before.
      ['update', steps[2]!.xid, ['status'], steps[2]!.row],
      ['update', steps[3]!.xid, ['attributes'], steps[3]!.row],
      ['delete', steps[4]!.xid, cols, null],
      ['insert', steps[5]!.xid, cols, steps[5]!.row],
    ]);
    expect(steps[4]!.row).toBeNull();
    expect(steps[1]!.row!.attributes!.length).toBeGreaterThan(12_800);
    expect(versions[2]!.old).toEqual({ attributes: snapshotRow.attributes });
    for (const v of versions.slice(1)) {
      expect(v.time > before && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(v.time)).toBe(true);
      expect(v.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    }
    for (let i = 1; i < versions.length; i++) {
      expect(versions[i]!.time >= versions[i - 1]!.time).toBe(true);
      if (i > 1) expect(versions[i]!.time < steps[i - 1]!.after).toBe(true);
    }
    // The snapshot predates the capture slot: said so on stderr, stdout stays JSON.
    expect(r.stderr).toContain('was taken before the change log began');
  });

  it('cuts the list with --since and --until', async () => {
    const xids = (args: string[]) =>
      cli(['history', 'subscribers', '42', '--json', ...args]).then((r) => {
        expect(r.code, r.stderr).toBe(0);
        return (JSON.parse(r.stdout) as RowVersion[]).map((v) => [v.op, v.xid, v.changed.length]);
      });
    // Opens after step 2: the version in effect then (every column), then steps 3 and 4.
    expect(await xids(['--since', steps[1]!.after, '--until', steps[3]!.after])).toEqual([
      ['update', steps[1]!.xid, 6],
      ['update', steps[2]!.xid, 1],
      ['update', steps[3]!.xid, 1],
    ]);
    // After the delete: the row appears again with the insert.
    expect(await xids(['--since', steps[4]!.after])).toEqual([['insert', steps[5]!.xid, 6]]);
    // Before the first change: the snapshot's version alone.
    expect(await xids(['--until', before])).toEqual([['snapshot', null, 6]]);
    // A window in which the row did not exist.
    const gone = await cli([
      'history',
      'subscribers',
      '42',
      '--since',
      steps[4]!.after,
      '--until',
      steps[4]!.after,
    ]);
    expect(gone.code).toBe(ExitCode.usage);
    expect(gone.stderr).toContain(`it was deleted at`);
    expect(gone.stderr).toContain(`(transaction ${steps[4]!.xid})`);
  });

  it('follows a composite key through a key change, by position or by name', async () => {
    const r = await cli(['history', 'memberships', '2,user7@x.example', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const v = JSON.parse(r.stdout) as RowVersion[];
    expect(v.map((x) => [x.op, x.xid, x.key, x.keyChangedFrom, x.changed, x.row])).toEqual([
      [
        'snapshot',
        null,
        ['2', 'user7@x.example'],
        undefined,
        ['tenant_id', 'email', 'role', 'note'],
        { tenant_id: '2', email: 'user7@x.example', role: 'member', note: null },
      ],
      ['update', moves[0]!.xid, ['2', 'user7@x.example'], undefined, ['role'], moves[0]!.row],
      [
        'update',
        moves[1]!.xid,
        ['2', 'renamed,7@x.example'],
        ['2', 'user7@x.example'],
        ['email', 'note'],
        moves[1]!.row,
      ],
      ['update', moves[2]!.xid, ['2', 'renamed,7@x.example'], undefined, ['note'], moves[2]!.row],
    ]);
    expect(r.stderr).toContain('the history follows the row');
    // The new key (a comma inside a value: by name): the row's history from
    // its old key on, since it moved in from there.
    const named = await cli([
      'history',
      'public.memberships',
      '--key',
      'email=renamed,7@x.example',
      '--key',
      'tenant_id=2',
      '--json',
    ]);
    expect(named.code, named.stderr).toBe(0);
    expect(
      (JSON.parse(named.stdout) as RowVersion[]).map((x) => [x.op, x.xid, x.keyChangedFrom]),
    ).toEqual([
      ['snapshot', null, undefined],
      ['update', moves[0]!.xid, undefined],
      ['update', moves[1]!.xid, ['2', 'user7@x.example']],
      ['update', moves[2]!.xid, undefined],
    ]);
    expect(named.stderr).toContain(
      `note: the row had the key (2, user7@x.example) before transaction ${moves[1]!.xid}`,
    );
  });

  it('follows a table by its OID across a rename and a swap; columns added and dropped are marked', async () => {
    const old = await cli(['history', 'ledger_old', '3', '--json']);
    expect(old.code, old.stderr).toBe(0);
    const v = JSON.parse(old.stdout) as RowVersion[];
    expect(v.map((x) => [x.op, x.row, x.changed, x.old, x.added, x.dropped])).toEqual([
      ['snapshot', { id: '3', note: 'n3' }, ['id', 'note'], undefined, undefined, undefined],
      ['update', { id: '3', note: 'v2' }, ['note'], { note: 'n3' }, undefined, undefined],
      ['update', { id: '3', note: 'v3' }, ['note'], { note: 'v2' }, undefined, undefined],
      // The column came with the value PostgreSQL gave existing rows.
      [
        'update',
        { id: '3', note: 'v4', extra: '5' },
        ['note', 'extra'],
        { note: 'v3' },
        ['extra'],
        undefined,
      ],
      [
        'update',
        { id: '3', note: 'v5' },
        ['note', 'extra'],
        { note: 'v4', extra: '5' },
        undefined,
        ['extra'],
      ],
    ]);
    expect(old.stderr).toContain(
      'the table was renamed (public.ledger → public.ledger_old): its history is followed under each name',
    );
    const text = await cli(['history', 'ledger_old', '3']);
    expect(text.stdout).toMatch(/extra +\(column added\) → 5\n/);
    expect(text.stdout).toMatch(/extra +5 → \(column dropped\)\n/);
    // The name now is the new table's: its own history, not the old one's.
    const now = await cli(['history', 'ledger', '3', '--json']);
    expect(now.code, now.stderr).toBe(0);
    expect((JSON.parse(now.stdout) as RowVersion[]).map((x) => [x.op, x.row])).toEqual([
      ['insert', { id: '3', note: 'new table' }],
    ]);
  });

  it('follows schema changes: a key added later, renamed columns, a dropped table; an insert updated in its transaction is an insert', async () => {
    const json = async (...args: string[]): Promise<RowVersion[]> => {
      const r = await cli(['history', ...args, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as RowVersion[];
    };
    // The snapshot had no key; the key added since is the key, and changes
    // made before it (identified by the whole old row) are found by it too.
    expect((await json('keyless', '1')).map((x) => [x.op, x.xid, x.row])).toEqual([
      ['snapshot', null, { id: '1', v: 'one' }],
      ['update', later.keyless![0], { id: '1', v: 'under full identity' }],
      ['update', later.keyless![2], { id: '1', v: 'under the key' }],
    ]);
    // Renamed columns are compared with their old selves, not dropped and added.
    const renamed = await json('renames', '1');
    expect(
      renamed.map((x) => [x.op, x.xid, x.changed, x.old, x.renamed, x.added, x.dropped]),
    ).toEqual([
      ['snapshot', null, ['id', 'a', 'b'], undefined, undefined, undefined, undefined],
      [
        'update',
        later.renames![1],
        ['alpha'],
        { alpha: 'a1' },
        { alpha: 'a' },
        undefined,
        undefined,
      ],
      [
        'update',
        later.renames![3],
        ['beta', 'gamma'],
        { beta: 'b1' },
        { beta: 'b', gamma: 'alpha' },
        undefined,
        undefined,
      ],
    ]);
    expect(renamed[2]!.row).toEqual({ id: '1', gamma: 'a2', beta: 'b3' });
    const text = await cli(['history', 'renames', '1']);
    expect(text.stdout).toMatch(/\n {4}alpha \(renamed from a\) +a1 → a2\n/);
    expect(text.stdout).toMatch(/\n {4}gamma \(renamed from alpha\) +a2\n/);
    // A dropped table: the row's last version says so.
    expect((await json('doomed', '1')).map((x) => [x.op, x.xid, x.row])).toEqual([
      ['snapshot', null, { id: '1', v: 'd1' }],
      ['update', later.doomed![0], { id: '1', v: 'd2' }],
      ['drop', later.doomed![1], null],
    ]);
    expect((await cli(['history', 'doomed', '1'])).stdout).toContain(
      '(row removed with its table: DROP TABLE)',
    );
    // Inserted, then updated, in one transaction: one version, an insert.
    expect((await json('ledger_old', '9')).map((x) => [x.op, x.xid, x.row])).toEqual([
      ['insert', later.fresh![0], { id: '9', note: 'fresher' }],
    ]);
    // Asked by its newest key, the row's history starts under its first key,
    // and the large value the key changes did not send is known throughout.
    const docs = await json('docs', '101');
    expect(docs.map((x) => [x.op, x.xid, x.key, x.keyChangedFrom, x.unknown])).toEqual([
      ['snapshot', null, ['1'], undefined, undefined],
      ['update', later.docs![0], ['100'], ['1'], undefined],
      ['update', later.docs![1], ['101'], ['100'], undefined],
    ]);
    expect(docsBody.length).toBe(10_000);
    // Followed back to key 1, but not into the life of the row that held it before.
    expect((await json('moved', '2')).map((x) => [x.op, x.xid, x.row])).toEqual([
      ['insert', later.moved![1], { id: '1', v: 'second row' }],
      ['update', later.moved![2], { id: '2', v: 'second row' }],
    ]);
    // No version, not a drop of a row nothing says existed.
    const ghost = await cli(['history', 'ghost', '999']);
    expect(ghost.code).toBe(ExitCode.usage);
    expect(ghost.stderr).toContain('no version of public.ghost with key (999)');
    for (const v of docs) expect(v.row?.body).toBe(docsBody);
  });

  it('prints a readable list, reads one chunk for an integer key, and explains mistakes', async () => {
    const r = await cli(['history', 'subscribers', '42']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^public\.subscribers \(id\) = \(42\), target \w+: 7 versions\n/);
    const chunks = Number(/read 1 of its (\d+) chunks of the table/.exec(r.stdout)?.[1]);
    expect(chunks).toBeGreaterThan(1);
    expect(r.stdout).toContain(`update  xid ${steps[0]!.xid}`);
    expect(r.stdout).toMatch(/\n {4}email +user42@tenant-1\.example → new42@example\.com\n/);
    expect(r.stdout).toMatch(/\n {4}status +unsubscribed → bounced\n/);
    expect(r.stdout).toContain(`    attributes  {"back": true}\n`);
    expect(r.stdout).toContain(`delete  xid ${steps[4]!.xid}`);
    expect(r.stdout).toContain('(row deleted)');
    // A row far into the table: still one chunk.
    const far = await cli(['history', 'subscribers', '9990']);
    expect(far.code, far.stderr).toBe(0);
    expect(far.stdout).toMatch(/1 version\n/);
    expect(far.stdout).toContain(`read 1 of its ${chunks} chunks`);

    const missing = await cli(['history', 'subscribers', '99999']);
    expect(missing.code).toBe(ExitCode.usage);
    expect(missing.stderr).toMatch(
      /no version of public\.subscribers with key \(99999\) in snapshot \S+ or in the change log after it/,
    );
    const count = await cli(['history', 'memberships', '2']);
    expect(count.code).toBe(ExitCode.usage);
    expect(count.stderr).toContain('has the key (tenant_id, email): expected 2');
    const badTime = await cli(['history', 'subscribers', '42', '--since', 'yesterday']);
    expect(badTime.code).toBe(ExitCode.usage);
    expect(badTime.stderr).toContain('--since: not a time');
  });

  it('drops the capture slot', async () => {
    const r = await cli(['capture', target, '--drop-slot', '--confirm', target]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`dropped replication slot "${slot}"`);
    expect(
      await sql(server, db, `SELECT 1 FROM pg_replication_slots WHERE slot_name = '${slot}'`),
    ).toEqual([]);
  });
});
