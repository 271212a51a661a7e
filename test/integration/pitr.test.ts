/**
 * Restore to any moment: a snapshot plus the change log, merged per chunk.
 * Capture runs while the sample database is changed in batches (updates,
 * deletes, inserts, a truncate and reload, a keyless table under REPLICA
 * IDENTITY FULL); the state after each batch is recorded independently (every
 * table's rows, sorted). Then `restore --at`, `--lsn` and `--before-xid` into
 * new databases must give exactly those states, row for row, and a selective
 * `restore --at --table --where` puts rows of a moment back into the live
 * database. Last, `prune` cuts a copy's log back (also killed halfway) and a
 * later moment still rebuilds exactly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { cliAt, killHard } from '../harness/faultpoint.js';
import {
  CLI,
  connectTo,
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;
const env = { PW: server.password };
// Slot names are per server: a target name of its own, apart from other test files'.
const name = `pitr${Math.random().toString(16).slice(2, 8)}`;
const TABLES = [
  'tenants',
  'subscribers',
  'workflows',
  'workflow_steps',
  'files',
  'events',
  'keyed',
  'orders',
];

/** Every table's rows as sorted COPY lines: equal iff the tables hold the same rows. */
async function state(s: TestServer, db: string): Promise<Record<string, string[]>> {
  const c = await connectTo(s, db);
  try {
    const out: Record<string, string[]> = {};
    for (const t of TABLES) {
      const parts: Buffer[] = [];
      for await (const b of c.query(copyTo(`COPY ${t} TO STDOUT`)) as AsyncIterable<Buffer>)
        parts.push(b);
      out[t] = Buffer.concat(parts).toString('utf8').split('\n').filter(Boolean).sort();
    }
    return out;
  } finally {
    await c.end();
  }
}

/** The server's clock and WAL insert position (the test servers run with synchronous_commit off, so the flushed position lags). */
async function now(c: PgClient): Promise<{ at: string; lsn: string }> {
  const r = await c.query<{ at: string; lsn: string }>(
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, pg_current_wal_insert_lsn()::text AS lsn`,
  );
  return r.rows[0]!;
}

/**
 * A copy of a repository that capture is still writing to: its temporary
 * files (renamed into place or removed while the copy runs) are left out.
 */
async function copyRepo(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true, filter: (src) => !path.basename(src).startsWith('.tmp-') });
}

describe('restore to a moment', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let live: PgClient;
  let capture: ChildProcess;
  let captureErr = '';
  const moments: Array<{ at: string; lsn: string; rows: Record<string, string[]> }> = [];
  let xidOfBatch2 = 0;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'pitr');
    live = await connectTo(server, db);
    await createSampleDatabase(live, { tenants: 8 });
    await live.query('ALTER TABLE events REPLICA IDENTITY FULL');
    // A table whose key is updated (the sample's ids are identity columns,
    // which UPDATE cannot set); even keys, so that rows can come in between.
    await live.query(
      "CREATE TABLE keyed (k int PRIMARY KEY, v text); INSERT INTO keyed SELECT g * 2, 'v' || g FROM generate_series(1, 20) g",
    );
    // A composite key in another order than the table's columns (the log
    // lists the replica identity in column order): every read of the log
    // refused such a table, and with it the whole window.
    await live.query(
      'CREATE TABLE orders (id int, tenant_id int, total numeric, PRIMARY KEY (tenant_id, id)); INSERT INTO orders SELECT g, g % 5, g * 10 FROM generate_series(1, 100) g',
    );
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
    );
    capture = spawn(
      process.execPath,
      [CLI, 'capture', name, '--flush-interval', '100ms', '--heartbeat', '300ms'],
      { cwd: dir, env: { PATH: process.env.PATH, ...env } },
    );
    capture.stderr!.on('data', (d: Buffer) => {
      captureErr += d.toString();
    });
    for (let i = 0; i < 100 && !captureErr.includes('resuming from'); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(captureErr).toContain('resuming from');
    // The snapshot is taken while capture runs: the log covers everything after it.
    const b = await runCli(['backup', name], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);

    // Batch 1: updates, deletes, inserts over several tables, one transaction each.
    await live.query("UPDATE subscribers SET email = 'changed-' || email WHERE id % 7 = 0");
    await live.query('DELETE FROM workflow_steps WHERE id % 5 = 0');
    await live.query(
      "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) VALUES (1, 'invoice', E'tab\\there\\nnewline \\\\ back', 1, sha256('a'), now())",
    );
    await live.query('DELETE FROM events WHERE kind = (SELECT min(kind) FROM events)');
    // Keys before the first row, between rows, after the last (a snapshot from the log merges them in order).
    await live.query(
      "INSERT INTO keyed VALUES (-1, 'first'), (7, 'between'), (9, 'between too'), (99, 'last')",
    );
    await live.query('DELETE FROM keyed WHERE k IN (12, 40)');
    await live.query('DELETE FROM orders WHERE tenant_id = 2');
    await live.query('UPDATE orders SET total = total + 1 WHERE tenant_id = 3');
    moments.push({ ...(await now(live)), rows: await state(server, db) });

    // Batch 2: one transaction, whose xid --before-xid names.
    await live.query('BEGIN');
    xidOfBatch2 = Number(
      (await live.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x,
    );
    await live.query("UPDATE tenants SET name = name || ' (renamed)' WHERE id <= 3");
    await live.query('DELETE FROM workflow_steps WHERE subscriber_id % 11 = 0');
    await live.query('DELETE FROM subscribers WHERE id % 11 = 0');
    await live.query(
      'INSERT INTO events SELECT * FROM events WHERE kind = (SELECT max(kind) FROM events)',
    );
    await live.query('COMMIT');
    moments.push({ ...(await now(live)), rows: await state(server, db) });

    // Batch 3: a truncate and reload, and a key changed.
    await live.query('TRUNCATE files');
    await live.query(
      "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) SELECT 2, 'image', 'after-truncate-' || g, g, sha256(g::text::bytea), now() FROM generate_series(1, 50) g",
    );
    await live.query("UPDATE keyed SET k = k + 100, v = 'moved' WHERE k IN (2, 4)");
    await live.query('UPDATE orders SET tenant_id = 7 WHERE id IN (1, 6)');
    await live.query('INSERT INTO orders VALUES (1000, 2, 1)');
    moments.push({ ...(await now(live)), rows: await state(server, db) });

    // Let capture store a heartbeat past the last moment.
    await new Promise((r) => setTimeout(r, 1500));
  });

  afterAll(async () => {
    capture?.kill('SIGTERM');
    await new Promise((r) => capture?.once('exit', r));
    await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
    await live?.end();
    await cleanup();
  });

  it('rebuilds each moment exactly with --at', async () => {
    for (const [i, m] of moments.entries()) {
      const into = `pitr_at_${i}_${Date.now() % 100000}`;
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
      const r = await runCli(
        ['restore', name, '--at', m.at, '--to', url, '--create', '--confirm', into],
        {
          cwd: dir,
          env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`as of ${m.at}`);
      // Capture's own publication is not the database's: not "not reproduced".
      expect(r.stdout).not.toContain('publication flashback');
      const got = await state(server, into);
      for (const t of TABLES) expect(got[t], `${t} at moment ${i + 1}`).toEqual(m.rows[t]);
      // Files added since the snapshot took ids past its sequence: raised, so the
      // rebuilt database takes new rows (its first INSERT failed on a taken key).
      expect(r.stdout).toMatch(
        /\nsequences raised to their columns' largest values \(the change log does not carry sequence changes\): .*public\.files_id_seq \d+ → \d+/,
      );
      const [ins] = await sql(
        server,
        into,
        "INSERT INTO files (tenant_id, kind, name, size_bytes, sha256, created_at) VALUES (1, 'image', 'new', 1, sha256('n'), now()) RETURNING id::text AS id, (SELECT max(id)::text FROM files) AS before",
      );
      expect(BigInt(String(ins!.id))).toBeGreaterThan(BigInt(String(ins!.before)));
    }
  });

  it('rebuilds with --lsn and --before-xid', async () => {
    const into = `pitr_lsn_${Date.now() % 100000}`;
    const url = (d: string) =>
      `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${d}`;
    const r = await runCli(
      ['restore', name, '--lsn', moments[1]!.lsn, '--to', url(into), '--create', '--confirm', into],
      { cwd: dir, env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await state(server, into)).toEqual(moments[1]!.rows);

    const before = `pitr_xid_${Date.now() % 100000}`;
    const x = await runCli(
      [
        'restore',
        name,
        '--before-xid',
        String(xidOfBatch2),
        '--to',
        url(before),
        '--create',
        '--confirm',
        before,
      ],
      { cwd: dir, env },
    );
    expect(x.code, x.stderr).toBe(0);
    expect(await state(server, before)).toEqual(moments[0]!.rows);
  });

  it('puts rows of a moment back into the live database with --table --where', async () => {
    // After batch 3 the files of tenant 1 are gone (truncated); take them back as of moment 2.
    const r = await runCli(
      [
        'restore',
        name,
        '--at',
        moments[1]!.at,
        '--to',
        name,
        '--table',
        'files',
        '--where',
        'tenant_id = 1',
      ],
      { cwd: dir, env },
    );
    expect(r.code, r.stderr).toBe(0);
    const want = moments[1]!.rows.files!.filter((l) => l.split('\t')[1] === '1');
    const got = (await state(server, db)).files!.filter((l) => l.split('\t')[1] === '1');
    expect(got).toEqual(want);
    expect(want.length).toBeGreaterThan(0);
  });

  it('builds a snapshot from the log with the same chunks as a direct backup at that LSN', async () => {
    const direct = await runCli(['backup', name, '--json'], { cwd: dir, env });
    expect(direct.code, direct.stderr).toBe(0);
    const d = JSON.parse(direct.stdout) as { snapshot: string; lsn: string };
    // Let capture store past the direct snapshot's LSN, then work on a copy
    // of the repository without the direct snapshot.
    await live.query('SELECT pg_logical_emit_message(false, $1, $2)', ['noise', 'x']);
    await new Promise((r) => setTimeout(r, 1200));
    const copy = path.join(dir, 'repo-copy');
    await copyRepo(path.join(dir, 'repo'), copy);
    await rm(path.join(copy, 'snapshots', `${d.snapshot}.json`));
    const f = await runCli(
      ['backup', name, '--from-log', '--lsn', d.lsn, '--json', '--repo', copy],
      {
        cwd: dir,
        env,
      },
    );
    expect(f.code, f.stderr).toBe(0);
    const fromLog = JSON.parse(f.stdout) as { snapshot: string; transactions: number };
    expect(fromLog.transactions).toBeGreaterThan(0);
    // In the repository that has the direct snapshot, a snapshot up to the
    // log's end would add nothing: it says so and commits nothing.
    const before = (await readdir(path.join(dir, 'repo', 'snapshots'))).length;
    const idle = await runCli(['backup', name, '--from-log', '--json'], { cwd: dir, env });
    expect(idle.code, idle.stderr).toBe(0);
    expect(JSON.parse(idle.stdout)).toMatchObject({ snapshot: null, newest: d.snapshot });
    expect((await readdir(path.join(dir, 'repo', 'snapshots'))).length).toBe(before);
    type M = {
      lsn: string;
      tables: Array<{ name: string; key: string[]; rows: number; chunks: Array<{ id: string }> }>;
    };
    const a = JSON.parse(
      await readFile(path.join(dir, 'repo', 'snapshots', `${d.snapshot}.json`), 'utf8'),
    ) as M;
    const b = JSON.parse(
      await readFile(path.join(copy, 'snapshots', `${fromLog.snapshot}.json`), 'utf8'),
    ) as M;
    expect(b.lsn).toBe(a.lsn);
    for (const t of a.tables) {
      const u = b.tables.find((x) => x.name === t.name)!;
      expect(u.rows, t.name).toBe(t.rows);
      // Keyed tables: byte-identical chunks. The keyless one keeps the same rows (order may differ).
      if (t.key.length > 0)
        expect(
          u.chunks.map((c) => c.id),
          t.name,
        ).toEqual(t.chunks.map((c) => c.id));
    }
    const into = `pitr_fromlog_${Date.now() % 100000}`;
    const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
    const r = await runCli(
      ['restore', fromLog.snapshot, '--to', url, '--create', '--confirm', into, '--repo', copy],
      {
        cwd: dir,
        env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    // The live database has not changed since the direct backup.
    expect(await state(server, into)).toEqual(await state(server, db));
  });

  it('counts a snapshot from the log of an earlier moment, written last, as older: latest, status and list go by the data', async () => {
    const before = JSON.parse(
      (await runCli(['show', 'latest', '--json'], { cwd: dir, env })).stdout,
    ) as { id: string };
    const f = await runCli(['backup', name, '--from-log', '--lsn', moments[1]!.lsn, '--json'], {
      cwd: dir,
      env,
    });
    expect(f.code, f.stderr).toBe(0);
    const early = (JSON.parse(f.stdout) as { snapshot: string }).snapshot;
    try {
      // "latest" (and a restore of the target) is still the newest data, not the last written.
      const latest = JSON.parse(
        (await runCli(['show', 'latest', '--json'], { cwd: dir, env })).stdout,
      ) as { id: string };
      expect(latest.id).toBe(before.id);
      const st = await runCli(['status', '--json', '--target', name], { cwd: dir, env });
      const newest = (JSON.parse(st.stdout) as { targets: Array<{ newest: { id: string } }> })
        .targets[0]!.newest;
      expect(newest.id).toBe(before.id);
      // The list is in the data's order, the early one before the one it predates.
      const list = JSON.parse(
        (await runCli(['list', '--json'], { cwd: dir, env })).stdout,
      ) as Array<{ id: string; dataAt: string }>;
      const ids = list.map((x) => x.id);
      expect(ids.indexOf(early)).toBeLessThan(ids.indexOf(before.id));
      expect(list.map((x) => x.dataAt)).toEqual(list.map((x) => x.dataAt).sort());
    } finally {
      await rm(path.join(dir, 'repo', 'snapshots', `${early}.json`));
    }
  });

  it('leaves alone a slot of the same name that another database owns', async () => {
    // Another config, a target of the same name on another database of the same server.
    const other = await freshDatabase(server, 'pitr_other');
    const { dir: odir, cleanup: ocleanup } = await tempDir();
    try {
      expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: odir })).code).toBe(0);
      await writeFile(
        path.join(odir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${other}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      const drop = await runCli(['capture', name, '--drop-slot', '--confirm', name], {
        cwd: odir,
        env,
      });
      expect(drop.code, drop.stderr).toBe(ExitCode.failed);
      expect(drop.stderr).toContain(`belongs to database "${db}"`);
      const doctor = await runCli(['doctor', name, '--json'], { cwd: odir, env });
      expect(doctor.stdout).toContain(`belongs to database \\"${db}\\"`);
      // The slot of this test's database is still there.
      const slots = await live.query<{ n: string }>(
        `SELECT count(*)::text AS n FROM pg_replication_slots WHERE slot_name = 'flashback_${name}' AND database = '${db}'`,
      );
      expect(slots.rows[0]!.n).toBe('1');
    } finally {
      await ocleanup();
    }
  });

  it('restores to now: waits the few seconds until capture has stored the moment', async () => {
    // The log is always a little behind now (a heartbeat every 300 ms here);
    // the restore waits for it instead of refusing. The source was last
    // written before this test: the rebuilt state is its state now.
    await live.query("UPDATE keyed SET v = 'just now' WHERE k = 2");
    const into = `pitr_now_${Date.now() % 100000}`;
    const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
    const r = await runCli(
      ['restore', name, '--at', 'now', '--to', url, '--create', '--confirm', into],
      {
        cwd: dir,
        env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await state(server, into)).toEqual(await state(server, db));
  });

  it('refuses moments the log cannot vouch for', async () => {
    // A starting snapshot taken after the moment would carry later changes: refused.
    const snaps = JSON.parse((await runCli(['list', '--json'], { cwd: dir })).stdout) as Array<{
      id: string;
    }>;
    const newest = snaps.at(-1)!.id;
    const forced = await runCli(
      ['restore', newest, '--at', moments[0]!.at, '--to', name, '--dry-run'],
      { cwd: dir, env },
    );
    expect(forced.code, forced.stderr).toBe(ExitCode.usage);
    expect(forced.stderr).toContain('holds changes from after');
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const r = await runCli(['restore', name, '--at', future, '--to', name, '--dry-run'], {
      cwd: dir,
      env,
    });
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stderr).toContain('is in the future');
    const early = await runCli(
      ['restore', name, '--at', '2000-01-01T00:00:00Z', '--to', name, '--dry-run'],
      {
        cwd: dir,
        env,
      },
    );
    expect(early.code).toBe(ExitCode.usage);
    expect(early.stderr).toContain('no snapshot');
    const xid = await runCli(['restore', name, '--before-xid', '1', '--to', name, '--dry-run'], {
      cwd: dir,
      env,
    });
    expect(xid.code).toBe(ExitCode.usage);
    expect(xid.stderr).toContain('not in the change log');
  });

  it('prune cuts the log back to the oldest snapshot kept, also after a SIGKILL; moments after it still rebuild exactly', async () => {
    // A moment after the newest snapshot (the direct backup above).
    await live.query("UPDATE keyed SET v = v || ' after' WHERE k % 3 = 0");
    await live.query('DELETE FROM workflow_steps WHERE id % 13 = 0');
    const later = { ...(await now(live)), rows: await state(server, db) };
    await new Promise((r) => setTimeout(r, 1500));
    const copy = path.join(dir, 'repo-pruned');
    await copyRepo(path.join(dir, 'repo'), copy);
    const config = await readFile(path.join(dir, 'flashback.yaml'), 'utf8');
    await writeFile(path.join(dir, 'flashback.yaml'), `${config}retention:\n  keep_last: 1\n`);
    let restores = 0;
    const restoresLater = async () => {
      const into = `pitr_pruned_${restores++}_${Date.now() % 100000}`;
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
      const r = await runCli(
        [
          'restore',
          name,
          '--at',
          later.at,
          '--to',
          url,
          '--create',
          '--confirm',
          into,
          '--repo',
          copy,
        ],
        { cwd: dir, env },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(await state(server, into)).toEqual(later.rows);
      const check = await runCli(['check', '--read-data', '--repo', copy], { cwd: dir });
      expect(check.code, check.stdout + check.stderr).toBe(0);
    };
    try {
      const segments = async () =>
        (await readdir(path.join(copy, 'changes', name))).filter((f) => f.endsWith('.seg'));
      const before = await segments();
      // Killed right after the log's new start is written, before any delete.
      const child = await cliAt('prune.after-log-start', ['prune', '--repo', copy], dir, env);
      expect(await killHard(child)).toBe('SIGKILL');
      expect(await segments()).toEqual(before);
      const info = JSON.parse(
        await readFile(path.join(copy, 'changes', name, 'capture.json'), 'utf8'),
      );
      expect(info.version).toBe(2);
      await restoresLater();

      // The next prune removes what the killed one claimed; its total counts the log.
      const dry = await runCli(['prune', '--dry-run', '--repo', copy], { cwd: dir, env });
      expect(dry.code, dry.stderr).toBe(0);
      const p = await runCli(['prune', '--json', '--repo', copy], { cwd: dir, env });
      expect(p.code, p.stderr).toBe(0);
      const logs = (JSON.parse(p.stdout) as { logs: Array<{ segmentsRemoved: number }> }).logs;
      expect(logs).toHaveLength(1);
      expect(logs[0]!.segmentsRemoved).toBeGreaterThan(0);
      expect(dry.stdout).toMatch(
        new RegExp(`and ${logs[0]!.segmentsRemoved} change-log segment\\(s\\), freeing [1-9]`),
      );
      expect((await segments()).length).toBe(before.length - logs[0]!.segmentsRemoved);
      await restoresLater();
      // The first moments were before the only snapshot left.
      const early = await runCli(
        ['restore', name, '--at', moments[0]!.at, '--to', name, '--dry-run', '--repo', copy],
        { cwd: dir, env },
      );
      expect(early.code).toBe(ExitCode.usage);
      expect(early.stderr).toContain('no snapshot');
    } finally {
      await writeFile(path.join(dir, 'flashback.yaml'), config);
    }
  });
});
