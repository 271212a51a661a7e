/**
 * Faults during continuous capture, each under concurrent writes: the
 * capture process SIGKILLed and started again, PostgreSQL restarted (fast,
 * and immediate: a crash), the walsender terminated, and the repository
 * read-only for a while. Afterwards the change log must hold exactly what the
 * source committed after the slot was created: every transaction, once, with
 * the same changes and values, in commit order (compareLog in
 * test/harness/capture.ts). And the state rebuilt with `restore` at three
 * moments recorded during the faults (MomentRecorder: the source's rows and
 * the WAL position that separates them, taken under a lock that briefly
 * holds the writers) and at the end equals the source's rows then.
 *
 * The writer starts once the slot exists, so "every transaction it
 * committed" is every transaction of the log's range. Slots are dropped at
 * the end (a slot holds WAL).
 */
import { execFile } from 'node:child_process';
import { access, mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectParams, type PgClient } from '../../src/pg/connect.js';
import { EmbeddedServer } from '../../src/pg/embedded.js';
import { dropSlot } from '../../src/pg/replication/slot.js';
import { Repository } from '../../src/repo/repository.js';
import { LocalStorage } from '../../src/storage/local.js';
import {
  type AuditedTransaction,
  auditedTransactions,
  bulkCount,
  CAPTURE_SCHEMA,
  CaptureProcess,
  compareLog,
  MomentRecorder,
  segmentStats,
  sourceRows,
  Writer,
  waitForLog,
} from '../harness/capture.js';
import { runCli, tempDir } from '../harness/pg.js';
import { TEST_BASE_DIR } from '../harness/servers.js';

const run = promisify(execFile);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A source database on `server`, a repository and a config naming it `prod`. */
interface Setup {
  readonly dir: string;
  readonly repoDir: string;
  readonly database: string;
  connect(): Promise<PgClient>;
  cleanup(): Promise<void>;
}

describe('capture under faults (PostgreSQL 17)', () => {
  let server: EmbeddedServer;
  const figures: string[] = [];
  let active: { setup: Setup; capture: CaptureProcess | undefined } | undefined;

  beforeAll(async () => {
    // Private: these tests restart it. fsync off: a crash of PostgreSQL (not
    // of the machine) keeps what was written, so durability is still real.
    server = await EmbeddedServer.start({
      major: 17,
      baseDir: TEST_BASE_DIR,
      settings: { fsync: 'off' },
    });
  });
  afterEach(async () => {
    // Whatever happened, leave no capture running and no slot holding WAL.
    if (active === undefined) return;
    await active.capture?.stop();
    const c = await connectParams('cleanup', server.connection(active.setup.database));
    await dropSlot(c, 'flashback_prod', { waitSeconds: 10 }).catch(() => {});
    await c.end();
    await active.setup.cleanup();
    active = undefined;
  });
  afterAll(async () => {
    await server?.stop();
    console.log(`capture faults:\n  ${figures.join('\n  ')}`);
  });

  async function setup(options: { tmpfsRepo?: boolean } = {}): Promise<Setup> {
    const { dir, cleanup } = await tempDir();
    const database = `cap_${Math.random().toString(16).slice(2, 10)}`;
    const admin = await connectParams('admin', server.connection());
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.end();
    const connect = () => connectParams('writer', server.connection(database));
    const c = await connect();
    await c.query(CAPTURE_SCHEMA);
    await c.end();
    const repoDir = path.join(dir, 'repo');
    await mkdir(repoDir);
    if (options.tmpfsRepo === true) {
      // A real file system that can be made read-only (the tests run as root, as CI does).
      await run('mount', ['-t', 'tmpfs', '-o', 'size=256m', 'tmpfs', repoDir]);
    }
    await Repository.init(new LocalStorage(repoDir));
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${database}\n    user: postgres\n    password_env: PW\n`,
    );
    return {
      dir,
      repoDir,
      database,
      connect,
      cleanup: async () => {
        const a = await connectParams('admin', server.connection());
        await a.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => {});
        await a.end();
        if (options.tmpfsRepo === true) await run('umount', [repoDir]).catch(() => {});
        await cleanup();
      },
    };
  }

  /**
   * Starts capture (it creates the slot), then the writer; runs `fault`
   * meanwhile; stops the writer, waits for the log to catch up, stops
   * capture cleanly, and compares the log with the source.
   */
  async function scenario(
    name: string,
    fault: (ctx: { capture: CaptureProcess; writer: Writer; setup: Setup }) => Promise<void>,
    options: { tmpfsRepo?: boolean } = {},
  ) {
    const started = Date.now();
    const s = await setup(options);
    const capture = new CaptureProcess(s.dir, { PW: server.password }).start();
    active = { setup: s, capture };
    await capture.streaming();
    // A snapshot the log covers: the state at the end is rebuilt from it below.
    const backup = await runCli(['backup', 'prod'], { cwd: s.dir, env: { PW: server.password } });
    expect(backup.code, backup.stderr).toBe(0);
    const writer = new Writer(s.connect).start();
    const recorder = new MomentRecorder(s.connect).start();
    await fault({ capture, writer, setup: s });
    const moments = await recorder.stop();
    await writer.stop();
    const truth = await s.connect();
    let audited: Map<number, AuditedTransaction>;
    let rows: Array<Array<string | null>>;
    let bulk: number;
    let end: string;
    try {
      end = (
        await truth.query<{ t: string }>(
          `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
        )
      ).rows[0]!.t;
      audited = await auditedTransactions(truth);
      rows = await sourceRows(truth);
      bulk = await bulkCount(truth);
    } finally {
      await truth.end();
    }
    const writing = (Date.now() - started) / 1000;
    const caughtUp = Date.now();
    const logged = await waitForLog(s.repoDir, audited);
    const catchUp = (Date.now() - caughtUp) / 1000;
    await sleep(1500); // a heartbeat past the end, so the log vouches for it
    const last = await capture.stop();
    // The state rebuilt at the end, from the snapshot and the log written
    // through the faults, is the source's state, row for row.
    // And at moments in the middle of the faults (the first, middle and last
    // recorded), from their WAL positions: each equal to the source's rows then.
    expect(moments.length, `${name}: moments recorded`).toBeGreaterThanOrEqual(3);
    const picked = [0, Math.floor(moments.length / 2), moments.length - 1].map((i) => moments[i]!);
    // Three different states (the writer kept changing rows between them).
    expect(new Set(picked.map((m) => `${JSON.stringify(m.rows)} ${m.bulk}`)).size).toBe(3);
    const points = [
      ...picked.map((m) => ({ flag: '--lsn', value: m.lsn, rows: m.rows, bulk: m.bulk })),
      { flag: '--at', value: end, rows, bulk },
    ];
    for (const [i, p] of points.entries()) {
      const rebuilt = `${s.database}_at${i}`;
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${rebuilt}`;
      const restored = await runCli(
        ['restore', 'prod', p.flag, p.value, '--to', url, '--create', '--confirm', rebuilt],
        { cwd: s.dir, env: { PW: server.password } },
      );
      expect(restored.code, restored.stderr).toBe(0);
      const r = await connectParams('check', server.connection(rebuilt));
      try {
        expect(await sourceRows(r), `${name}: the state rebuilt at ${p.flag} ${p.value}`).toEqual(
          p.rows,
        );
        expect(await bulkCount(r), `${name}: bulk rows at ${p.flag} ${p.value}`).toBe(p.bulk);
      } finally {
        await r.end();
        const a = await connectParams('admin', server.connection());
        await a.query(`DROP DATABASE IF EXISTS ${rebuilt} WITH (FORCE)`).catch(() => {});
        await a.end();
      }
    }
    const result = compareLog(logged, audited, rows);
    const raw = await segmentStats(s.repoDir);
    const exits = capture.runs
      .slice(0, -1)
      .map((r) => (r.signal !== null ? r.signal : `exit ${r.code}`));
    figures.push(
      `${name}: ${result.transactions} transactions (${writer.committed} acknowledged, ${writer.failed} failed), ${result.changes} row changes + ${writer.bulkCommitted} of ${(bulk / 1000).toFixed(0)}k rows; ${capture.runs.length} capture runs (${exits.join(', ')}); state rebuilt at ${picked.length} recorded moments and the end; ${raw.segments} segments, ${raw.split} transaction(s) across segments, ${raw.cutOff} cut off and stored again, ${raw.commits - raw.unique} commit(s) stored twice (skipped by readers); ${((Date.now() - started) / 1000).toFixed(1)} s (setup and writing ${writing.toFixed(1)} s, log complete ${catchUp.toFixed(1)} s after the writer stopped)`,
    );
    expect(result.missing, `${name}: transactions missing from the log`).toEqual([]);
    expect(result.duplicated, `${name}: transactions twice in the log`).toEqual([]);
    expect(result.unexpected).toEqual([]);
    expect(result.different).toEqual([]);
    expect(result.outOfOrder).toEqual([]);
    expect(result.replayMatches, `${name}: replaying the log gives the source's rows`).toBe(true);
    expect(result.transactions).toBe(audited.size);
    // The large transactions: every row once.
    expect(result.bulkInserts).toBe(bulk);
    expect(result.bulkKeys).toBe(bulk);
    expect(writer.bulkCommitted).toBeGreaterThan(0);
    // Every acknowledged COMMIT is there (a failed one may have committed too).
    expect(result.transactions).toBeGreaterThanOrEqual(writer.committed);
    expect(writer.committed).toBeGreaterThan(100);
    // The final stop was clean: SIGTERM stores what was received and exits 0.
    expect(last?.code, last?.stderr).toBe(0);
    expect(last?.stderr).toContain('capture prod stopped');
    return { capture, writer, result };
  }

  it('loses nothing when the capture process is SIGKILLed and started again', async () => {
    const { capture } = await scenario('SIGKILL x5', async ({ capture }) => {
      for (let i = 0; i < 5; i++) {
        await sleep(300 + Math.random() * 700);
        await capture.streaming();
        capture.kill('SIGKILL');
        await sleep(50);
      }
      await sleep(500);
    });
    expect(capture.runs.filter((r) => r.signal === 'SIGKILL')).toHaveLength(5);
  });

  it('loses nothing across a fast and an immediate restart of PostgreSQL', async () => {
    const { capture } = await scenario(
      'PostgreSQL restart fast + immediate',
      async ({ capture }) => {
        await sleep(1500);
        await server.restart('fast');
        await sleep(1500);
        await capture.streaming();
        await sleep(500);
        await server.restart('immediate');
        await sleep(1500);
        await capture.streaming();
        await sleep(500);
      },
    );
    // Capture failed with the server (and retried while it was down).
    expect(capture.runs.length).toBeGreaterThanOrEqual(3);
    expect(capture.runs.some((r) => r.code === 1 || r.code === 5)).toBe(true);
  });

  it('loses nothing when the walsender is terminated', async () => {
    const { capture } = await scenario('walsender terminated x3', async ({ capture, setup }) => {
      const c = await setup.connect();
      try {
        for (let i = 0; i < 3; i++) {
          await sleep(800);
          await capture.streaming();
          await sleep(200);
          const r = await c.query<{ ok: string | null }>(
            `SELECT pg_terminate_backend(active_pid)::text AS ok FROM pg_replication_slots WHERE slot_name = 'flashback_prod'`,
          );
          expect(r.rows[0]?.ok).toBe('true');
        }
      } finally {
        await c.end();
      }
      await sleep(500);
    });
    const failed = capture.runs.filter((r) => r.code === 1);
    expect(failed.length).toBeGreaterThanOrEqual(3);
    expect(failed[0]!.stderr).toMatch(/terminat/);
  });

  it('loses nothing, and writes nothing where it was, while the repository is moved away (an unmounted volume)', async () => {
    let strayed = true;
    const { capture } = await scenario('repository moved away 3 s', async ({ capture, setup }) => {
      await sleep(800);
      await capture.streaming();
      await rename(setup.repoDir, `${setup.repoDir}.away`);
      await sleep(3000);
      strayed = await access(setup.repoDir).then(
        () => true,
        () => false,
      );
      await rename(`${setup.repoDir}.away`, setup.repoDir);
      await sleep(1000);
    });
    // Nothing was stored in its place (and so nothing acknowledged to the slot).
    expect(strayed).toBe(false);
    const failed = capture.runs.filter((r) => r.code !== 0 && r.signal === null);
    expect(failed.some((r) => r.stderr.includes('is gone from the repository'))).toBe(true);
  });

  it('loses nothing while the repository is read-only for a while', async () => {
    const { capture } = await scenario(
      'repository read-only 3 s',
      async ({ capture, setup }) => {
        await sleep(800);
        await capture.streaming();
        // remount fails (EBUSY) while a file is open for writing: retry.
        for (let i = 0; ; i++) {
          try {
            await run('mount', ['-o', 'remount,ro', setup.repoDir]);
            break;
          } catch (err) {
            if (i > 50) throw err;
            await sleep(20);
          }
        }
        await sleep(3000);
        await run('mount', ['-o', 'remount,rw', setup.repoDir]);
        await sleep(1000);
      },
      { tmpfsRepo: true },
    );
    const failed = capture.runs.filter((r) => r.code !== 0 && r.signal === null);
    expect(failed.length).toBeGreaterThanOrEqual(1);
    // An operational failure with what to do, not an internal error.
    expect(failed[0]!.code, failed[0]!.stderr).toBe(1);
    expect(failed[0]!.stderr).toContain('cannot store the change log of "prod"');
    expect(failed[0]!.stderr).toContain('read-only file system');
    expect(failed[0]!.stderr).toContain('nothing is lost');
  });
});
