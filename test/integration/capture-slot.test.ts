/**
 * Slot safety: `doctor` and `status` judge Flashback's replication slot on
 * the server (read by a running capture; holding more WAL than
 * capture.max_retained_wal; not read by anyone; WAL lost; gone), `status`
 * reports the recovery point and survives an unreachable target, and
 * `capture --drop-slot` removes the slot through the guard.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installSchemaEvents } from '../../src/capture/schema-events.js';
import { ExitCode } from '../../src/errors.js';
import { connectParams } from '../../src/pg/connect.js';
import { EmbeddedServer } from '../../src/pg/embedded.js';
import { dropSlot } from '../../src/pg/replication/slot.js';
import { openReplicationStream } from '../../src/pg/replication/stream.js';
import { ChangeLog, lsnText, lsnValue } from '../../src/repo/changelog.js';
import { LocalStorage } from '../../src/storage/local.js';
import { CAPTURE_SCHEMA, CaptureProcess } from '../harness/capture.js';
import { cliAt, killHard } from '../harness/faultpoint.js';
import {
  connectTo,
  freshDatabase,
  params,
  runCli,
  sql,
  tempDir,
  testServers,
} from '../harness/pg.js';
import { TEST_BASE_DIR } from '../harness/servers.js';

const shared = testServers().find((s) => s.major === 17)!;

interface DoctorFinding {
  check: string;
  severity: string;
  summary: string;
  details?: string[];
  fix?: string;
}
interface StatusTarget {
  target: string;
  findings: Array<{ kind: string; severity: string; message: string }>;
  changeLog: {
    newestAt: string | null;
    recoveryPointSeconds: number;
    slot: { active: boolean; retainedWalBytes: number } | null;
  } | null;
}

function slotFinding(stdout: string): DoctorFinding | undefined {
  const [report] = JSON.parse(stdout) as Array<{ findings: DoctorFinding[] }>;
  return report!.findings.find((f) => f.check === 'capture-slot');
}

function statusOf(stdout: string, target = 'prod'): StatusTarget {
  const r = JSON.parse(stdout) as { targets: StatusTarget[] };
  return r.targets.find((t) => t.target === target)!;
}

async function captureBriefly(dir: string, env: Record<string, string>): Promise<void> {
  const c = new CaptureProcess(dir, env).start();
  await c.streaming();
  // Long enough for a heartbeat (1 s) to be stored.
  await new Promise((r) => setTimeout(r, 1500));
  const last = await c.stop();
  expect(last?.code, last?.stderr).toBe(0);
}

describe('slot safety on the shared PostgreSQL 17', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  const env = { PW: shared.password };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(shared, 'slot');
    await sql(shared, db, CAPTURE_SCHEMA);
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo
capture:
  max_retained_wal: 16MB
targets:
  prod:
    host: ${shared.host}
    port: ${shared.port}
    database: ${db}
    user: postgres
    password_env: PW
  gone:
    host: 127.0.0.1
    port: 1
    database: nothing
    user: postgres
`,
    );
  });
  afterAll(async () => {
    const c = await connectTo(shared, db);
    await dropSlot(c, 'flashback_prod', { waitSeconds: 10 }).catch(() => {});
    await c.end();
    await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await cleanup();
  });

  it('doctor and status: ok while capture runs; WAL held and nobody reading are warnings', async () => {
    const doctorBefore = await runCli(['doctor', 'prod', '--json'], { cwd: dir, env });
    expect(slotFinding(doctorBefore.stdout)).toMatchObject({
      severity: 'ok',
      summary: 'no replication slot "flashback_prod": capture of "prod" has not been started',
    });

    const capture = new CaptureProcess(dir, env).start();
    try {
      await capture.streaming();
      // The slot moves once the server reports its position (a keepalive):
      // on a server busy with other tests' WAL that can take a few seconds.
      let f: ReturnType<typeof slotFinding>;
      const end = Date.now() + 15_000;
      // A logical slot's restart point moves only past a record of the running
      // transactions, which the server logs every 15 s: logged here at once.
      // (The server is shared: other tests' WAL counts too, hence 16MB.)
      do {
        await new Promise((r) => setTimeout(r, 1000));
        await sql(shared, db, 'SELECT pg_log_standby_snapshot()');
        f = slotFinding((await runCli(['doctor', 'prod', '--json'], { cwd: dir, env })).stdout);
      } while (f?.severity !== 'ok' && Date.now() < end);
      expect(f?.severity, JSON.stringify(f)).toBe('ok');
      expect(f?.summary).toMatch(/^replication slot "flashback_prod" is read by a running capture/);
      // Status judges the same slot; other tests' WAL can push what it holds
      // past the threshold for a moment, until its restart point moves again.
      let t: ReturnType<typeof statusOf>;
      const until = Date.now() + 15_000;
      for (;;) {
        const s = await runCli(['status', '--target', 'prod', '--json'], { cwd: dir, env });
        t = statusOf(s.stdout);
        if (!t.findings.some((x) => x.kind === 'slot-wal') || Date.now() > until) break;
        await sql(shared, db, 'SELECT pg_log_standby_snapshot()');
        await new Promise((r) => setTimeout(r, 1000));
      }
      expect(t.changeLog?.slot?.active).toBe(true);
      expect(t.changeLog!.recoveryPointSeconds).toBeLessThan(5);
      expect(t.findings.map((x) => x.kind)).toEqual(['no-backup']);
    } finally {
      const last = await capture.stop();
      expect(last?.code, last?.stderr).toBe(0);
    }

    // Nobody reads the slot now, and the database keeps writing WAL.
    await sql(
      shared,
      db,
      "INSERT INTO bulk SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g",
    );
    const d = await runCli(['doctor', 'prod', '--json'], { cwd: dir, env });
    expect(d.code).toBe(ExitCode.failed);
    const f = slotFinding(d.stdout)!;
    expect(f.severity).toBe('warning');
    expect(f.summary).toMatch(
      /^replication slot "flashback_prod" of "prod" holds \d.* MiB of WAL on the server \(more than capture.max_retained_wal, 16.0 MiB\)$/,
    );
    expect(f.details).toEqual([
      expect.stringMatching(
        /^nothing reads the replication slot "flashback_prod" of "prod": capture is not running, or is failing/,
      ),
    ]);
    expect(f.fix).toContain('flashback capture prod --drop-slot');
    const human = await runCli(['doctor', 'prod'], { cwd: dir, env });
    expect(human.stdout).toMatch(/WARNING\s+capture-slot\s+replication slot "flashback_prod"/);

    const s = await runCli(['status', '--target', 'prod', '--json'], { cwd: dir, env });
    expect(s.code).toBe(ExitCode.critical); // no backup
    const t = statusOf(s.stdout);
    expect(t.findings.map((x) => [x.kind, x.severity])).toEqual([
      ['no-backup', 'critical'],
      ['slot-wal', 'warning'],
      ['slot-inactive', 'warning'],
    ]);
    expect(t.changeLog?.slot?.retainedWalBytes).toBeGreaterThan(16 * 1024 * 1024);
    // The table shows the recovery point.
    const h = await runCli(['status', '--target', 'prod'], { cwd: dir, env });
    expect(h.stdout).toMatch(/RECOVERY/);
    expect(h.stdout).toContain('warning: nothing reads the replication slot "flashback_prod"');
    // The repository alone: no connection, no slot findings.
    const offline = await runCli(['status', '--target', 'prod', '--json', '--repository-only'], {
      cwd: dir,
      env,
    });
    expect(statusOf(offline.stdout).findings.map((x) => x.kind)).toEqual(['no-backup']);
  });

  it('status reports a target it cannot reach as a warning, not a crash', async () => {
    // A change log of "gone" (its server is down).
    await new ChangeLog(new LocalStorage(path.join(dir, 'repo')), 'gone').writeInfo({
      format: 'flashback-capture',
      version: 1,
      target: 'gone',
      slot: 'flashback_gone',
      publication: 'flashback',
      systemIdentifier: '1',
      database: 'nothing',
      startLsn: '0/1000000',
      created: new Date(Date.now() - 10 * 60_000).toISOString(),
    });
    const started = Date.now();
    const s = await runCli(['status', '--target', 'gone', '--json'], { cwd: dir, env });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(s.code, s.stderr).toBe(ExitCode.critical);
    const t = statusOf(s.stdout, 'gone');
    const kinds = Object.fromEntries(t.findings.map((f) => [f.kind, f]));
    expect(kinds['slot-unchecked']?.severity).toBe('warning');
    expect(kinds['slot-unchecked']?.message).toMatch(
      /^could not check the replication slot of "gone": /,
    );
    // Nothing stored for 10 minutes: the recovery point is critical.
    expect(kinds['recovery-point']?.severity).toBe('critical');
    expect(kinds['recovery-point']?.message).toContain('nothing is stored in the change log');
  });

  it('capture --drop-slot removes the slot only when confirmed; status then says the log cannot continue', async () => {
    const refused = await runCli(['capture', 'prod', '--drop-slot'], { cwd: dir, env });
    expect(refused.code, refused.stderr).toBe(ExitCode.refused);
    expect(refused.stderr).toContain('drop replication slot "flashback_prod"');
    const slots = async () =>
      (
        await sql(
          shared,
          db,
          "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = 'flashback_prod'",
        )
      )[0]?.n;
    expect(await slots()).toBe('1');

    const dropped = await runCli(['capture', 'prod', '--drop-slot', '--confirm', 'prod'], {
      cwd: dir,
      env,
    });
    expect(dropped.code, dropped.stderr).toBe(0);
    // The publication stays (another capture of the database may use it), with its hazard named.
    expect(dropped.stdout).toBe(
      'dropped replication slot "flashback_prod"\nnote: the publication "flashback" stays on the target: while it exists, the server refuses UPDATE and DELETE on tables without a primary key or replica identity; once no capture of this database needs it, remove it: DROP PUBLICATION flashback\n',
    );
    expect(await slots()).toBe('0');
    const again = await runCli(['capture', 'prod', '--drop-slot', '--confirm', 'prod'], {
      cwd: dir,
      env,
    });
    expect(again.stdout).toMatch(
      /^no replication slot "flashback_prod" on the target\nnote: the publication "flashback" stays/,
    );
    // Another capture of the same database is named as a user of it.
    await sql(
      shared,
      db,
      "SELECT pg_create_logical_replication_slot('flashback_prodtwo', 'pgoutput')",
    );
    try {
      const third = await runCli(['capture', 'prod', '--drop-slot', '--confirm', 'prod'], {
        cwd: dir,
        env,
      });
      expect(third.stdout).toContain(
        'note: the publication "flashback" stays on the target (slots "flashback_prodtwo" of this database capture with it):',
      );
    } finally {
      await sql(shared, db, "SELECT pg_drop_replication_slot('flashback_prodtwo')");
    }

    const s = await runCli(['status', '--target', 'prod', '--json'], { cwd: dir, env });
    const t = statusOf(s.stdout);
    expect(t.findings.find((f) => f.kind === 'slot-missing')).toMatchObject({
      severity: 'critical',
    });
    // doctor agrees (it said "capture has not been started", ok).
    const d = await runCli(['doctor', 'prod', '--json'], { cwd: dir, env });
    expect(d.code).toBe(ExitCode.critical);
    expect(slotFinding(d.stdout)).toMatchObject({
      severity: 'critical',
      summary: expect.stringContaining(
        'no replication slot "flashback_prod", but the repository has a change log of "prod" that continues from it',
      ),
    });
    // Capture refuses to continue a log whose slot is gone (changes are missing).
    const resumed = await runCli(['capture', 'prod'], { cwd: dir, env });
    expect(resumed.code).toBe(ExitCode.failed);
    expect(resumed.stderr).toContain('no longer exists on the server');
    // The hint is one the user can follow.
    expect(resumed.stderr).toContain(
      'hint: begin a new log: `flashback capture prod --new-log`, then take a backup (`flashback backup prod`)',
    );
  });
});

describe('a slot that lost its WAL (private PostgreSQL 17, max_slot_wal_keep_size 1MB)', () => {
  it('is critical in doctor and status, and capture fails rather than continue with a gap', async () => {
    const server = await EmbeddedServer.start({
      major: 17,
      baseDir: TEST_BASE_DIR,
      settings: { fsync: 'off', max_slot_wal_keep_size: '1MB' },
    });
    const { dir, cleanup } = await tempDir();
    const env = { PW: server.password };
    try {
      const c = await connectParams('lost', server.connection());
      await c.query(CAPTURE_SCHEMA);
      expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: postgres\n    user: postgres\n    password_env: PW\n`,
      );
      await captureBriefly(dir, env);
      // More WAL than the slot may keep, then checkpoints: the server removes it.
      for (let i = 0; i < 4; i++) {
        await c.query(
          `INSERT INTO bulk SELECT g, repeat('y', 100) FROM generate_series(${i * 1000 + 1}, ${(i + 1) * 1000}) g`,
        );
        await c.query('SELECT pg_switch_wal()');
      }
      await c.query('CHECKPOINT');
      await c.query('CHECKPOINT');
      const state = await c.query<{ wal_status: string }>(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'flashback_prod'",
      );
      expect(state.rows[0]?.wal_status).toBe('lost');

      const d = await runCli(['doctor', 'prod', '--json'], { cwd: dir, env });
      expect(d.code).toBe(ExitCode.critical);
      const f = slotFinding(d.stdout)!;
      expect(f.severity).toBe('critical');
      expect(f.summary).toContain('has lost WAL it needed (wal_status lost');
      expect(f.summary).toContain('the change log has a gap');
      const s = await runCli(['status', '--target', 'prod', '--json'], { cwd: dir, env });
      expect(statusOf(s.stdout).findings.find((x) => x.kind === 'slot-lost')?.severity).toBe(
        'critical',
      );
      const resumed = await runCli(['capture', 'prod'], { cwd: dir, env });
      expect(resumed.code, resumed.stderr).toBe(ExitCode.failed);
      expect(resumed.stderr).toContain('has lost WAL it needed');
      expect(resumed.stderr).toContain('`flashback capture prod --new-log` (it drops the slot)');
      // --new-log drops the lost slot (it can stream nothing usable) and begins log 2.
      const renewed = new CaptureProcess(dir, env, ['capture', 'prod', '--new-log']).start();
      try {
        await renewed.streaming();
        expect(renewed.output).toMatch(/created slot "flashback_prod"; log 2 starts at/);
      } finally {
        expect((await renewed.stop())?.code).toBe(0);
      }
      const slot = await c.query<{ wal_status: string }>(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'flashback_prod'",
      );
      expect(slot.rows[0]?.wal_status).toBe('reserved');
      await dropSlot(c, 'flashback_prod');
      await c.end();
    } finally {
      await server.stop();
      await cleanup();
    }
  });
});

describe('a slot capture has not recorded, on the shared PostgreSQL 17', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let other: string;
  let busy: string;
  const env = { PW: shared.password };
  // Slot names are per server: these targets' names are used by no other test.
  const slots = ['flashback_slotcrash', 'flashback_slotforeign', 'flashback_slotbusy'];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(shared, 'slotcrash');
    other = await freshDatabase(shared, 'slotforeign');
    busy = await freshDatabase(shared, 'slotbusy');
    for (const d of [db, other, busy]) await sql(shared, d, CAPTURE_SCHEMA);
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    const target = (name: string, database: string) =>
      `  ${name}:\n    host: ${shared.host}\n    port: ${shared.port}\n    database: ${database}\n    user: postgres\n    password_env: PW\n`;
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n${target('slotcrash', db)}${target('slotforeign', other)}${target('slotbusy', busy)}`,
    );
  });
  afterAll(async () => {
    for (const [d, s] of [db, other, busy].map((d, i) => [d, slots[i]!] as const)) {
      const c = await connectTo(shared, d);
      await dropSlot(c, s, { waitSeconds: 10 }).catch(() => {});
      await c.end();
      await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${d} WITH (FORCE)`);
    }
    await cleanup();
  });

  async function slotExists(name: string): Promise<boolean> {
    const c = await connectTo(shared, 'postgres');
    try {
      return (
        (await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [name]))
          .rowCount === 1
      );
    } finally {
      await c.end();
    }
  }

  it('a start killed between creating its slot and recording it: the next start works', async () => {
    const child = await cliAt('capture.after-slot', ['capture', 'slotcrash'], dir, env);
    expect(await killHard(child)).toBe('SIGKILL');
    expect(await slotExists('flashback_slotcrash')).toBe(true);
    const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), 'slotcrash');
    expect(await log.info()).toBeUndefined();
    expect((await log.pendingSlot())?.slot).toBe('flashback_slotcrash');

    const capture = new CaptureProcess(dir, env, [
      'capture',
      'slotcrash',
      '--flush-interval',
      '200ms',
    ]).start();
    try {
      await capture.streaming();
      expect(capture.output).toContain(
        'replication slot "flashback_slotcrash" was created by a start of capture that stopped before recording it',
      );
      expect(capture.output).toContain('capture slotcrash: created slot');
      await sql(shared, db, "INSERT INTO items (id, v, n) VALUES (1, 'after the crash', 1)");
      const end = Date.now() + 15_000;
      let stored = 0;
      while (stored === 0 && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 200));
        stored = (await log.segments()).length;
      }
      expect(stored).toBeGreaterThan(0);
    } finally {
      const last = await capture.stop();
      expect(last?.code, last?.stderr).toBe(0);
    }
    expect((await log.info())?.slot).toBe('flashback_slotcrash');
    expect(await log.pendingSlot()).toBeUndefined();
  });

  it('a start of a new log killed before recording it: the next start, without --new-log, completes it', async () => {
    // Log 1 of "slotcrash" exists (the test before); its slot is then lost.
    const storage = new LocalStorage(path.join(dir, 'repo'));
    const c = await connectTo(shared, db);
    await dropSlot(c, 'flashback_slotcrash', { waitSeconds: 10 });
    await c.end();
    const end1 = (await new ChangeLog(storage, 'slotcrash').segments()).at(-1)!.committed;
    const child = await cliAt(
      'capture.after-slot',
      ['capture', 'slotcrash', '--new-log'],
      dir,
      env,
    );
    expect(await killHard(child)).toBe('SIGKILL');
    const second = new ChangeLog(storage, 'slotcrash', 2);
    expect(await second.info()).toBeUndefined();
    expect((await second.pendingSlot())?.slot).toBe('flashback_slotcrash');

    // Not taken for log 1's slot: the start of log 2 is carried on.
    const capture = new CaptureProcess(dir, env, [
      'capture',
      'slotcrash',
      '--flush-interval',
      '200ms',
    ]).start();
    try {
      await capture.streaming();
      expect(capture.output).toContain(
        'was created by a start of capture that stopped before recording it',
      );
      expect(capture.output).toMatch(
        /capture slotcrash: created slot "flashback_slotcrash"; log 2 starts at/,
      );
    } finally {
      const last = await capture.stop();
      expect(last?.code, last?.stderr).toBe(0);
    }
    expect(await second.info()).toMatchObject({
      slot: 'flashback_slotcrash',
      log: 2,
      previousEnd: lsnText(end1),
    });
    expect(await second.pendingSlot()).toBeUndefined();
  });

  it('a slot left by a killed start but being read by another process is not dropped from under it', async () => {
    const child = await cliAt('capture.after-slot', ['capture', 'slotbusy'], dir, env);
    expect(await killHard(child)).toBe('SIGKILL');
    // Another reader streams from the slot (as a second capture would).
    const reader = await openReplicationStream(
      { name: 'reader', connection: params(shared, busy) },
      { slot: 'flashback_slotbusy' },
    );
    try {
      const c = await connectTo(shared, busy);
      try {
        const end = Date.now() + 10_000;
        let active = false;
        while (!active && Date.now() < end) {
          // (Values come back as text: src/pg/connect.ts.)
          const q = await c.query<{ active: string }>(
            "SELECT active::text AS active FROM pg_replication_slots WHERE slot_name = 'flashback_slotbusy'",
          );
          active = q.rows[0]?.active === 'true';
          if (!active) await new Promise((r) => setTimeout(r, 100));
        }
        expect(active).toBe(true);
      } finally {
        await c.end();
      }
      const r = await runCli(['capture', 'slotbusy'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(ExitCode.failed);
      expect(r.stderr).toContain('cannot drop replication slot "flashback_slotbusy"');
      expect(r.stderr).toContain('stop the process streaming from it first');
    } finally {
      await reader.close();
    }
    expect(await slotExists('flashback_slotbusy')).toBe(true);
    const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), 'slotbusy');
    expect(await log.info()).toBeUndefined();
    expect((await log.pendingSlot())?.slot).toBe('flashback_slotbusy');
  });

  it('a slot of that name this repository never created is refused and left alone', async () => {
    const c = await connectTo(shared, other);
    await c.query("SELECT pg_create_logical_replication_slot('flashback_slotforeign', 'pgoutput')");
    await c.end();
    const r = await runCli(['capture', 'slotforeign'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      'slot "flashback_slotforeign" exists on "slotforeign" but this repository has no change log from it',
    );
    expect(r.stderr).toContain('--drop-slot');
    expect(await slotExists('flashback_slotforeign')).toBe(true);
  });
});

describe('a repository that lost the newest segments of its change log, on the shared PostgreSQL 17', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  const env = { PW: shared.password };
  const args = ['capture', 'slotgap', '--flush-interval', '200ms', '--heartbeat', '1s'];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(shared, 'slotgap');
    await sql(shared, db, CAPTURE_SCHEMA);
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  slotgap:\n    host: ${shared.host}\n    port: ${shared.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
  });
  afterAll(async () => {
    const c = await connectTo(shared, db);
    await dropSlot(c, 'flashback_slotgap', { waitSeconds: 10 }).catch(() => {});
    await c.end();
    await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await cleanup();
  });

  async function confirmed(): Promise<bigint> {
    const c = await connectTo(shared, db);
    try {
      const r = await c.query<{ l: string }>(
        "SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = 'flashback_slotgap'",
      );
      return lsnValue(r.rows[0]!.l);
    } finally {
      await c.end();
    }
  }

  /** One capture session: `work` runs while it streams, then it stops cleanly. */
  async function session(work: () => Promise<void>): Promise<void> {
    const c = new CaptureProcess(dir, env, args).start();
    try {
      await c.streaming();
      await work();
    } finally {
      const last = await c.stop();
      expect(last?.code, last?.stderr).toBe(0);
    }
  }

  it('capture refuses to resume past them: the slot is never confirmed past the stored log', async () => {
    const log = new ChangeLog(new LocalStorage(path.join(dir, 'repo')), 'slotgap');
    // Idle stretches while other databases write WAL: the server's keepalives
    // move on, and the slot may follow only as far as segments record.
    const idle = async () => {
      for (let i = 0; i < 6; i++) {
        await sql(shared, 'postgres', 'SELECT txid_current()');
        await new Promise((r) => setTimeout(r, 400));
      }
    };
    await session(async () => {
      await sql(shared, db, "INSERT INTO items (id, v, n) VALUES (1, 'kept', 1)");
      await idle();
    });
    const kept = await log.segments();
    expect(kept.length).toBeGreaterThan(0);
    expect(await confirmed()).toBeLessThanOrEqual(kept.at(-1)!.committed);

    // A second session resumes (the slot is behind or at the log's end) and stores more.
    await session(async () => {
      await sql(shared, db, "INSERT INTO items (id, v, n) VALUES (2, 'lost', 1)");
      await idle();
    });
    const all = await log.segments();
    const slotAt = await confirmed();
    expect(slotAt).toBeLessThanOrEqual(all.at(-1)!.committed);
    expect(slotAt).toBeGreaterThan(kept.at(-1)!.committed);

    // The repository loses the second session's segments (an older copy of it is put back).
    const aside = path.join(dir, 'aside');
    await mkdir(aside);
    const lost = all.slice(kept.length);
    for (const s of lost)
      await rename(path.join(dir, 'repo', s.key), path.join(aside, s.seq.toString()));

    const refused = new CaptureProcess(dir, env, args, 600_000).start();
    const end = Date.now() + 20_000;
    while (refused.runs.length === 0 && Date.now() < end)
      await new Promise((r) => setTimeout(r, 100));
    await refused.stop();
    const run = refused.runs[0];
    expect(run, 'capture kept running past the gap').toBeDefined();
    expect(run!.code, run!.stderr).toBe(ExitCode.damaged);
    expect(run!.stderr).toContain(
      `the change log of "slotgap" ends at ${lsnText(kept.at(-1)!.committed)}, but its replication slot "flashback_slotgap" has confirmed ${lsnText(slotAt)}`,
    );
    expect(run!.stderr).toContain('flashback capture slotgap --drop-slot');
    expect(await log.segments()).toEqual(kept);
    expect(await confirmed()).toBe(slotAt);
    // doctor says so too, before anyone starts capture.
    const d = await runCli(['doctor', 'slotgap', '--json'], { cwd: dir, env });
    expect(d.code).toBe(ExitCode.critical);
    expect(slotFinding(d.stdout)?.summary).toContain(
      `replication slot "flashback_slotgap" has confirmed ${lsnText(slotAt)}, past the end of the change log of "slotgap" in the repository (${lsnText(kept.at(-1)!.committed)})`,
    );
    // And status (serve's alerts): critical, not "nothing reads the slot, run capture".
    const st = await runCli(['status', '--target', 'slotgap', '--json'], { cwd: dir, env });
    const findings = (
      JSON.parse(st.stdout) as {
        targets: Array<{ findings: Array<{ kind: string; severity: string; message: string }> }>;
      }
    ).targets[0]!.findings;
    expect(findings).toContainEqual(
      expect.objectContaining({
        kind: 'slot-ahead',
        severity: 'critical',
        message: expect.stringContaining('capture refuses to resume'),
      }),
    );
    expect(findings.map((f) => f.kind)).not.toContain('slot-inactive');

    // The lost segments put back: capture resumes.
    for (const s of lost)
      await rename(path.join(aside, s.seq.toString()), path.join(dir, 'repo', s.key));
    await session(async () => {});

    // A log from before acknowledged.json existed: its first resume trusts the
    // slot (older versions confirmed keepalive positions they had not stored)
    // and records where it stands.
    const ahead = await confirmed();
    await rm(path.join(dir, 'repo', 'changes', 'slotgap', 'acknowledged.json'));
    await session(async () => {});
    expect((await log.ackRecord())?.since).toBe(lsnText(ahead));
  });
});

describe('a change log begun after the newest backup, on the shared PostgreSQL 17', () => {
  it('capture says a snapshot is needed; status holds the recovery point at the snapshot until one is taken', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(shared, 'latelog');
    const env = { PW: shared.password };
    try {
      await sql(shared, db, CAPTURE_SCHEMA);
      expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  latelog:\n    host: ${shared.host}\n    port: ${shared.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
      );
      // The usual first steps the wrong way round: a backup, then capture.
      const first = await runCli(['backup', 'latelog'], { cwd: dir, env });
      expect(first.code, first.stderr).toBe(0);
      const backedUpAt = Date.now();
      const capture = new CaptureProcess(dir, env, [
        'capture',
        'latelog',
        '--flush-interval',
        '200ms',
        '--heartbeat',
        '1s',
      ]).start();
      try {
        await capture.streaming();
        expect(capture.output).toContain(
          'flashback: note: a new change log of "latelog" begins: moments in it are restored from a snapshot taken from now on, none taken before; take one while capture runs: `flashback backup latelog`',
        );
        // Heartbeats are stored, yet no moment of the log can be restored.
        await new Promise((r) => setTimeout(r, 2000));
        const status = async () => {
          const s = await runCli(['status', '--target', 'latelog', '--json', '--repository-only'], {
            cwd: dir,
            env,
          });
          return statusOf(s.stdout, 'latelog') as StatusTarget & {
            changeLog: { joined: boolean };
          };
        };
        const before = await status();
        expect(before.changeLog?.newestAt).not.toBeNull();
        expect(before.changeLog?.joined).toBe(false);
        expect(before.changeLog!.recoveryPointSeconds).toBeGreaterThanOrEqual(
          Math.floor((Date.now() - backedUpAt) / 1000) - 1,
        );
        const unjoined = before.findings.find((f) => f.kind === 'log-unjoined');
        expect(unjoined?.severity).toBe('warning');
        expect(unjoined?.message).toMatch(
          /^no snapshot of "latelog" was taken since its change log began at .*: a restore reaches only the newest snapshot, \S+ \(\d+s old\), not any moment of the log; take one while capture runs: `flashback backup latelog`$/,
        );
        // And restore --at agrees: nothing to start from.
        const at = await runCli(
          ['restore', 'latelog', '--at', 'now', '--to', 'postgres://x@127.0.0.1:1/none'],
          { cwd: dir, env },
        );
        expect(at.code).toBe(ExitCode.usage);
        expect(at.stderr).toContain('no snapshot of "latelog" to start from');
        // The snapshot from before the log is the closest state there is; a backup now serves later moments.
        expect(at.stderr).toMatch(
          /hint: the closest state before it is snapshot (\S+) \(.*\): `flashback restore \1`; a snapshot taken now .* serves moments from now on, not earlier ones/,
        );
        // A moment before the log began: no snapshot taken now could help.
        const early = await runCli(
          [
            'restore',
            'latelog',
            '--at',
            new Date(backedUpAt).toISOString(),
            '--to',
            'postgres://x@127.0.0.1:1/none',
          ],
          { cwd: dir, env },
        );
        expect(early.code).toBe(ExitCode.usage);
        expect(early.stderr).toMatch(
          /hint: the closest state before it is snapshot \S+ .*; the change log began at \S+: moments before that cannot be rebuilt\n/,
        );

        const second = await runCli(['backup', 'latelog'], { cwd: dir, env });
        expect(second.code, second.stderr).toBe(0);
        await new Promise((r) => setTimeout(r, 1500));
        const after = await status();
        expect(after.changeLog?.joined).toBe(true);
        expect(after.changeLog!.recoveryPointSeconds).toBeLessThan(5);
        expect(after.findings.map((f) => f.kind)).not.toContain('log-unjoined');

        // Capture's own schema on the source (its unlogged table since
        // schema events version 3) is not the user's: doctor does not list
        // it, and a database holding it is still empty for a full restore.
        const doctor = await runCli(['doctor', 'latelog', '--json'], { cwd: dir, env });
        const checks = (JSON.parse(doctor.stdout) as Array<{ findings: DoctorFinding[] }>)[0]!
          .findings;
        expect(checks.find((f) => f.check === 'unlogged-tables')?.severity).toBe('ok');
        expect(
          (
            await sql(
              shared,
              db,
              "SELECT count(*) AS n FROM pg_tables WHERE schemaname = '_flashback'",
            )
          )[0]?.n,
        ).toBe('1');
        const copy = await freshDatabase(shared, 'latecopy');
        try {
          const c = await connectTo(shared, copy);
          expect((await installSchemaEvents(c)).installed).toBe(true);
          await c.end();
          const into = `postgres://postgres@${shared.host}:${shared.port}/${copy}`;
          const full = await runCli(['restore', 'latest', '--to', into, '--confirm', copy], {
            cwd: dir,
            env: { ...env, PGPASSWORD: shared.password },
          });
          expect(full.code, full.stderr).toBe(0);
        } finally {
          await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${copy} WITH (FORCE)`);
        }
      } finally {
        const last = await capture.stop();
        expect(last?.code, last?.stderr).toBe(0);
      }
    } finally {
      const c = await connectTo(shared, db);
      await dropSlot(c, 'flashback_latelog', { waitSeconds: 10 }).catch(() => {});
      await c.end();
      await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await cleanup();
    }
  });
});

describe('a failover that loses the slot, on the shared PostgreSQL 17', () => {
  it('capture --new-log begins log 2; moments of both logs restore exactly, the gap between is refused', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(shared, 'failover');
    const env = { PW: shared.password, PGPASSWORD: shared.password };
    const url = (d: string) => `postgres://postgres@${shared.host}:${shared.port}/${d}`;
    const c = await connectTo(shared, db);
    const moment = async () =>
      (
        await c.query<{ at: string }>(
          `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at`,
        )
      ).rows[0]!.at;
    const items = async (d: string) => {
      const x = await connectTo(shared, d);
      try {
        return (await x.query('SELECT id, v, n FROM items ORDER BY id')).rows;
      } finally {
        await x.end();
      }
    };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    const restored: string[] = [];
    const restoreAt = async (at: string) => {
      const into = `failover_r${restored.length}`;
      restored.push(into);
      return run([
        'restore',
        'failover',
        '--at',
        at,
        '--to',
        url(into),
        '--create',
        '--confirm',
        into,
      ]);
    };
    const captureArgs = (extra: string[] = []) => [
      'capture',
      'failover',
      ...extra,
      '--flush-interval',
      '200ms',
      '--heartbeat',
      '1s',
    ];
    try {
      await sql(shared, db, CAPTURE_SCHEMA);
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\nretention:\n  keep_last: 1\ntargets:\n  failover:\n    host: ${shared.host}\n    port: ${shared.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
      );
      // Log 1, with a snapshot it continues, and a moment in it.
      const first = new CaptureProcess(dir, env, captureArgs()).start();
      let inLog1: string;
      let atLog1: unknown[];
      try {
        await first.streaming();
        expect((await run(['backup', 'failover'])).code).toBe(0);
        await c.query(
          "INSERT INTO items (id, v, n) SELECT g, 'one-' || g, g FROM generate_series(1, 5) g",
        );
        await c.query("UPDATE items SET v = 'changed' WHERE id = 3");
        await new Promise((r) => setTimeout(r, 300));
        inLog1 = await moment();
        atLog1 = await items(db);
        // A heartbeat past the moment is stored before capture stops.
        await new Promise((r) => setTimeout(r, 1500));
      } finally {
        expect((await first.stop())?.code).toBe(0);
      }

      // The failover: the promoted server has no logical slot. What is
      // written before capture begins again is in no log.
      await sql(shared, db, "SELECT pg_drop_replication_slot('flashback_failover')");
      await c.query("UPDATE items SET v = 'in the gap' WHERE id = 1");
      const inGap = await moment();
      const refused = await run(captureArgs());
      expect(refused.code).toBe(ExitCode.failed);
      expect(refused.stderr).toContain('no longer exists on the server');
      expect(refused.stderr).toContain('`flashback capture failover --new-log`');

      const second = new CaptureProcess(dir, env, captureArgs(['--new-log'])).start();
      let inLog2: string;
      let atLog2: unknown[];
      try {
        await second.streaming();
        expect(second.output).toMatch(
          /capture failover: created slot "flashback_failover"; log 2 starts at \S+, resuming from \S+\n/,
        );
        expect(second.output).toMatch(
          /flashback: note: log 1 of "failover" ends at \S+: changes committed between it and \S+ are in no log; log 1 stays readable for the moments it covers\n/,
        );
        // Until a snapshot is taken under log 2, none of its moments can be restored.
        const s = await run(['status', '--target', 'failover', '--json', '--repository-only']);
        const unjoined = statusOf(s.stdout, 'failover');
        expect(unjoined.findings.map((f) => f.kind)).toContain('log-unjoined');
        // A healthy slot is never replaced.
        const again = await run(captureArgs(['--new-log']));
        expect(again.code).toBe(ExitCode.usage);
        expect(again.stderr).toContain('can continue from its replication slot');

        expect((await run(['backup', 'failover'])).code).toBe(0);
        await c.query('DELETE FROM items WHERE id = 2');
        await c.query("INSERT INTO items (id, v, n) VALUES (9, 'nine', 9)");
        await new Promise((r) => setTimeout(r, 300));
        inLog2 = await moment();
        atLog2 = await items(db);
        await new Promise((r) => setTimeout(r, 1500));
      } finally {
        expect((await second.stop())?.code).toBe(0);
      }
      expect(
        await new ChangeLog(new LocalStorage(path.join(dir, 'repo')), 'failover', 2).info(),
      ).toMatchObject({ log: 2, previousEnd: expect.any(String) });

      // Each moment from its own log, row for row.
      const r1 = await restoreAt(inLog1);
      expect(r1.code, r1.stderr).toBe(0);
      expect(await items(restored[0]!)).toEqual(atLog1);
      const r2 = await restoreAt(inLog2);
      expect(r2.code, r2.stderr).toBe(0);
      expect(await items(restored[1]!)).toEqual(atLog2);
      // Between the two logs: in neither, and said so.
      const gap = await restoreAt(inGap);
      expect(gap.code).toBe(ExitCode.usage);
      expect(gap.stderr).toContain(`${inGap} is in no change log of "failover": log 1 ends at`);

      // History reads each log the window reaches, oldest first, with the
      // gap between them shown: the update made in the gap is not a version,
      // log 2 starts from its snapshot.
      type Version = { row: { v: string } | null; op: string; log?: number };
      const h = await run(['history', 'items', '1', '--target', 'failover', '--json']);
      expect(h.code, h.stderr).toBe(0);
      const both = JSON.parse(h.stdout) as Version[];
      expect(both.map((v) => [v.log, v.op, v.row?.v])).toEqual([
        [1, 'insert', 'one-1'],
        [2, 'snapshot', 'in the gap'],
      ]);
      expect(h.stderr).toContain('note: gap: log 1 ends at ');
      const human = await run(['history', 'items', '1', '--target', 'failover']);
      expect(human.code, human.stderr).toBe(0);
      expect(human.stdout).toContain('from change logs 1 to 2, each its own history');
      expect(human.stdout).toMatch(
        /\n-- log 1: from .* and the change log .*\n\n\S+ \S+ +insert .*\n[\s\S]*\n-- gap: log 1 ends at \S+ and log 2 begins at \S+ \(.*\); what was committed between them is in neither log\n-- log 2: from snapshot /,
      );
      // A window inside one log reads that one alone.
      const older = await run([
        'history',
        'items',
        '1',
        '--target',
        'failover',
        '--until',
        inLog1,
        '--json',
      ]);
      expect(older.stderr).toBe('');
      expect((JSON.parse(older.stdout) as Version[]).map((v) => [v.log, v.row?.v])).toEqual([
        [undefined, 'one-1'],
      ]);
      // A row only log 2 has: log 1 says it has none.
      const nine = await run(['history', 'items', '9', '--target', 'failover', '--json']);
      expect(nine.code, nine.stderr).toBe(0);
      expect((JSON.parse(nine.stdout) as Version[]).map((v) => [v.log, v.op])).toEqual([
        [2, 'insert'],
      ]);
      expect(nine.stderr).toContain('note: log 1: no version of public.items with key (9)');

      // Retention keeps the newest snapshot (log 2's): log 1 is emptied, and
      // the repository still checks clean.
      const pruned = await run(['prune']);
      expect(pruned.code, pruned.stderr).toBe(0);
      // (How many segments log 1 has depends on when capture flushed.)
      expect(pruned.stdout).toMatch(
        /failover: change log 1 is emptied \(no snapshot kept was taken under it, and the ones kept are of a later log\): \d+ segment\(s\)/,
      );
      expect((await run(['check'])).code).toBe(0);
      // The emptied log holds nothing: history goes on with log 2, and says so.
      const afterPrune = await run(['history', 'items', '1', '--target', 'failover', '--json']);
      expect(afterPrune.code, afterPrune.stderr).toBe(0);
      expect((JSON.parse(afterPrune.stdout) as Version[]).map((v) => [v.log, v.row?.v])).toEqual([
        [2, 'in the gap'],
      ]);
      expect(afterPrune.stderr).toContain('note: log 1: no version of public.items with key (1)');
    } finally {
      await c.end();
      const d = await connectTo(shared, db);
      await dropSlot(d, 'flashback_failover', { waitSeconds: 10 }).catch(() => {});
      await d.end();
      for (const r of [db, ...restored]) {
        await sql(shared, 'postgres', `DROP DATABASE IF EXISTS ${r} WITH (FORCE)`);
      }
      await cleanup();
    }
  });
});
