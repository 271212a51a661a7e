/**
 * `npm run bench` (second part): change capture under pgbench, and restore
 * to a moment against a snapshot restore.
 *
 * 1. pgbench (TPC-B-like, scale BENCH_PGBENCH_SCALE, default 10) for
 *    BENCH_PGBENCH_SECONDS (default 30) without capture: the source's
 *    throughput alone;
 * 2. the same with `capture` running (in this process): throughput, the
 *    commit-to-stored lag of every transaction (p50, p99, max), and how long
 *    capture needs after pgbench stops to have everything stored;
 * 3. `restore --at` the end of that run (the snapshot taken before it plus
 *    every pgbench change of the run, from the log) against `restore` of a
 *    direct snapshot taken at the end: the ratio of their times;
 * 4. `backup --from-log` as of BENCH_FROM_LOG_BEFORE seconds (default 5)
 *    before the end (what serve's `schedule.backup_from_log` keeps doing),
 *    then `restore --at` the end again: now only those seconds of log are
 *    read. Its ratio to the snapshot restore is the bounded case.
 *
 * For long runs (BENCH_PGBENCH_SECONDS=3600, the hour the issue names):
 * BENCH_PGBENCH_ALONE_SECONDS shortens the run without capture (default:
 * as long as the other), and BENCH_FROM_LOG_EVERY (seconds, default off)
 * takes `backup --from-log` at the log's end that often during the captured
 * run, as serve's schedule would. The peak resident memory of this process
 * during each restore to a moment is reported: it must not grow with the
 * window. BENCH_KEEP=1 keeps the repository (its path is printed), so a
 * restore to a moment can be measured again on the same log.
 *
 * PostgreSQL 17 (embedded) with its default durability settings; Debian's
 * pgbench (postgresql-15 or postgresql-client-15's contrib, /usr/bin/pgbench).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { backup } from '../src/backup/backup.js';
import { backupFromLog } from '../src/backup/from-log.js';
import { capture } from '../src/capture/capture.js';
import { parseConfig } from '../src/config/load.js';
import { resolveTarget } from '../src/config/targets.js';
import {
  buildOverlay,
  closeOverlay,
  planPointInTime,
  pointInTimeSource,
} from '../src/history/state.js';
import { connectParams } from '../src/pg/connect.js';
import { EmbeddedServer } from '../src/pg/embedded.js';
import type { SchemaModel } from '../src/pg/schema/model.js';
import { ChunkStore } from '../src/repo/chunks.js';
import { Repository } from '../src/repo/repository.js';
import type { SnapshotManifest } from '../src/repo/snapshots.js';
import { restore } from '../src/restore/restore.js';
import { LocalStorage } from '../src/storage/local.js';

const run = promisify(execFile);
const json = process.argv.includes('--json');
const scale = Number(process.env.BENCH_PGBENCH_SCALE ?? 10);
const seconds = Number(process.env.BENCH_PGBENCH_SECONDS ?? 30);
const aloneSeconds = Number(process.env.BENCH_PGBENCH_ALONE_SECONDS ?? seconds);
const fromLogEvery = Number(process.env.BENCH_FROM_LOG_EVERY ?? 0);
/** How long before the end of the run the snapshot from the log is taken. */
const fromLogBefore = Number(process.env.BENCH_FROM_LOG_BEFORE ?? 5);
const PGBENCH = '/usr/bin/pgbench';

function log(s: string): void {
  if (!json) process.stderr.write(`${s}\n`);
}

/** Peak resident memory of this process while `f` runs (sampled every 100 ms). */
async function peakRss<T>(f: () => Promise<T>): Promise<{ value: T; peakMb: number }> {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 100);
  try {
    const value = await f();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { value, peakMb: peak / 1e6 };
  } finally {
    clearInterval(timer);
  }
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  if (!existsSync(PGBENCH))
    throw new Error(`${PGBENCH} is missing (apt-get install postgresql-15)`);
  const work = await mkdtemp(path.join(os.tmpdir(), 'flashback-bench-capture-'));
  const server = await EmbeddedServer.start({ major: 17, settings: { max_connections: '50' } });
  const env = { ...process.env, PGPASSWORD: server.password };
  const pg = ['-h', server.host, '-p', String(server.port), '-U', server.user];
  try {
    const admin = await connectParams('bench', server.connection());
    await admin.query('CREATE DATABASE bench');
    await admin.end();
    log(`pgbench -i -s ${scale}…`);
    await run(PGBENCH, [...pg, '-i', '-q', '-s', String(scale), 'bench'], { env });
    const db = await connectParams('bench', server.connection('bench'));
    // pgbench_history has no key: its inserts can be captured only with an identity.
    await db.query('ALTER TABLE pgbench_history REPLICA IDENTITY FULL');

    const pgbench = async (secs: number): Promise<number> => {
      const { stdout } = await run(
        PGBENCH,
        [...pg, '-c', '4', '-j', '2', '-T', String(secs), '-n', 'bench'],
        { env, maxBuffer: 16 * 1024 * 1024 },
      );
      const m =
        /tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)\)/.exec(
          stdout,
        );
      if (m === null) throw new Error(`cannot read pgbench's tps from:\n${stdout}`);
      return Number(m[1]);
    };

    log(`pgbench ${aloneSeconds} s without capture…`);
    const tpsAlone = await pgbench(aloneSeconds);

    const storage = new LocalStorage(path.join(work, 'repo'));
    const repo = await Repository.init(storage);
    const config = parseConfig(
      `targets:\n  bench:\n    url: ${server.url('bench')}\n    protected: false\n  restored:\n    url: ${server.url('restored')}\n    protected: false\n  restored_at:\n    url: ${server.url('restored_at')}\n    protected: false\n  restored_fl:\n    url: ${server.url('restored_fl')}\n    protected: false\n`,
      undefined,
    );
    const target = resolveTarget('bench', config, env);
    const stop = new AbortController();
    const lags: number[] = [];
    let started!: () => void;
    const ready = new Promise<void>((r) => {
      started = r;
    });
    let committed = '0/0';
    const capturing = capture({
      target,
      repo,
      signal: stop.signal,
      onStart: () => started(),
      onSegment: (s) => {
        // (A loop, not push(...): a segment of a long run can hold more lags than a call's arguments.)
        for (const l of s.lagsMs) lags.push(l);
        committed = s.committed;
      },
    });
    // Handled at once: a capture that fails mid-run must not crash the bench
    // (an unhandled rejection) and hide the error that stopped it.
    let captureFailed: { error: unknown } | undefined;
    capturing.catch((error: unknown) => {
      captureFailed = { error };
      started();
    });
    /** Throws what stopped capture, if it stopped. */
    const captureAlive = (): void => {
      if (captureFailed !== undefined) throw captureFailed.error;
    };
    await ready;
    captureAlive();
    log('backup (the base of the restore to a moment)…');
    const base = await backup({ target, repo, workers: 2 });

    log(`pgbench ${seconds} s with capture…`);
    let running = true;
    const periodic: number[] = [];
    const scheduled = (async () => {
      // serve's schedule.backup_from_log, in this process: a snapshot from the log's end every so often.
      while (fromLogEvery > 0) {
        for (let waited = 0; waited < fromLogEvery && running; waited++) {
          await new Promise((r) => setTimeout(r, 1000));
        }
        if (!running) return;
        const t0 = performance.now();
        await backupFromLog({ repo, target: 'bench' });
        periodic.push((performance.now() - t0) / 1000);
        log(`  backup --from-log during the run: ${periodic.at(-1)!.toFixed(1)} s`);
      }
    })();
    const tpsCaptured = await pgbench(seconds).finally(() => {
      running = false;
    });
    await scheduled;
    const end = (
      await db.query<{ at: string; lsn: string; before: string }>(
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, pg_current_wal_insert_lsn()::text AS lsn,
                to_char((clock_timestamp() - make_interval(secs => $1)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS before`,
        [fromLogBefore],
      )
    ).rows[0]!;
    const stopped = performance.now();
    const lsnValue = (t: string) => {
      const [a, b] = t.split('/');
      return (BigInt(`0x${a}`) << 32n) | BigInt(`0x${b}`);
    };
    while (lsnValue(committed) < lsnValue(end.lsn)) {
      captureAlive();
      // Wait for a heartbeat or commit past the end to be stored.
      await db.query("SELECT pg_logical_emit_message(false, 'bench', 'x')");
      await new Promise((r) => setTimeout(r, 100));
      if (performance.now() - stopped > 120_000)
        throw new Error('capture did not catch up in 2 minutes');
    }
    const catchUp = (performance.now() - stopped) / 1000;
    // A heartbeat past the end, so the log vouches for the moment.
    await new Promise((r) => setTimeout(r, 5500));
    stop.abort();
    const result = await capturing;

    log('direct backup at the end, and both restores…');
    const last = await backup({ target, repo, workers: 2 });
    if (process.env.BENCH_KEEP === '1') {
      const moments = { base: base.manifest.id, last: last.manifest.id, end: end.at };
      await writeFile(path.join(work, 'moments.json'), JSON.stringify(moments));
    }
    const io = { input: process.stdin, output: { write: () => true } };
    // A checkpoint before each timed restore: otherwise the WAL of the one
    // before (and of pgbench) brings one on during the next, and its cost
    // lands on whichever restore runs second (measured: 0.6-0.8 s more
    // server CPU for the restore to a moment of a 5-15 minute window).
    await db.query('CHECKPOINT');
    let t = performance.now();
    await restore({
      manifest: last.manifest as SnapshotManifest<SchemaModel>,
      repo,
      target: resolveTarget('restored', config, env),
      create: true,
      io,
    });
    const snapshotRestore = (performance.now() - t) / 1000;
    /** restore --at the end into `into`, from `snapshot` (default: the newest before the moment). */
    const restoreAtEnd = async (into: string, snapshot?: string) => {
      await db.query('CHECKPOINT');
      const t0 = performance.now();
      let readSeconds = 0;
      const run = await peakRss(async () => {
        const plan = await planPointInTime(repo, 'bench', { kind: 'time', at: end.at }, snapshot);
        const overlay = await buildOverlay(plan);
        readSeconds = (performance.now() - t0) / 1000;
        try {
          await restore({
            manifest: plan.manifest,
            source: pointInTimeSource(new ChunkStore(repo.storage), overlay),
            repo,
            target: resolveTarget(into, config, env),
            create: true,
            io,
          });
        } finally {
          closeOverlay(overlay);
        }
        return { overlay, from: plan.manifest.id };
      });
      return {
        ...run.value,
        readSeconds,
        seconds: (performance.now() - t0) / 1000,
        peakMb: run.peakMb,
      };
    };
    const pitr = await restoreAtEnd('restored_at', base.manifest.id);
    const { overlay, readSeconds: overlaySeconds, seconds: pitrRestore } = pitr;

    // The same moment once a snapshot from the log exists shortly before it
    // (what serve's schedule.backup_from_log keeps up): only the log after it is read.
    log(`backup --from-log as of ${fromLogBefore} s before the end, and restore --at from it…`);
    t = performance.now();
    const fl = await backupFromLog({
      repo,
      target: 'bench',
      point: { kind: 'time', at: end.before },
    });
    if ('reason' in fl) throw new Error(`backup --from-log made no snapshot: ${fl.reason}`);
    const fromLogSeconds = (performance.now() - t) / 1000;
    const flRun = await restoreAtEnd('restored_fl');
    if (flRun.from !== fl.manifest.id)
      throw new Error(`restore --at chose ${flRun.from}, not the snapshot from the log`);
    const { overlay: flOverlay, seconds: flRestore } = flRun;
    await db.end();

    const report = {
      machine: {
        cpus: os.cpus().length,
        cpu: os.cpus()[0]?.model,
        node: process.version,
        postgres: server.binaries.version,
      },
      pgbench: { scale, seconds, aloneSeconds, clients: 4 },
      tpsWithoutCapture: tpsAlone,
      tpsWithCapture: tpsCaptured,
      captureCostPercent: (1 - tpsCaptured / tpsAlone) * 100,
      transactionsStored: result.transactions,
      changesStored: result.changes,
      lagMs: {
        p50: percentile(lags, 50),
        p99: percentile(lags, 99),
        max: lags.reduce((a, b) => Math.max(a, b), 0),
      },
      catchUpSeconds: catchUp,
      restoreAt: {
        windowTransactions: overlay.transactions,
        windowChanges: overlay.changes,
        seconds: pitrRestore,
        readingTheLogSeconds: overlaySeconds,
        snapshotRestoreSeconds: snapshotRestore,
        ratio: pitrRestore / snapshotRestore,
        peakRssMb: pitr.peakMb,
      },
      restoreAtFromLogSnapshot: {
        secondsBefore: fromLogBefore,
        backupFromLogSeconds: fromLogSeconds,
        windowChanges: flOverlay.changes,
        seconds: flRestore,
        ratio: flRestore / snapshotRestore,
        peakRssMb: flRun.peakMb,
        periodicFromLogSeconds: periodic,
      },
    };
    if (json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      process.stdout.write(
        `\nchange capture under pgbench (scale ${scale}, 4 clients, ${aloneSeconds} s alone, ${seconds} s captured), PostgreSQL ${server.binaries.version}\n\n` +
          `  pgbench tps without capture       ${tpsAlone.toFixed(0)}\n` +
          `  pgbench tps with capture          ${tpsCaptured.toFixed(0)}   (cost ${report.captureCostPercent.toFixed(1)}%; target <= 10%)\n` +
          `  captured                          ${result.transactions.toLocaleString('en-US')} transactions, ${result.changes.toLocaleString('en-US')} changes\n` +
          `  commit-to-stored lag              p50 ${report.lagMs.p50} ms, p99 ${report.lagMs.p99} ms, max ${report.lagMs.max} ms\n` +
          `  stored everything after pgbench   ${catchUp.toFixed(1)} s later\n\n` +
          `  restore --at the end of the run   ${pitrRestore.toFixed(2)} s   (snapshot + ${overlay.transactions.toLocaleString('en-US')} transactions, ${overlay.changes.toLocaleString('en-US')} changes from the log; ${overlaySeconds.toFixed(2)} s of it reading the log)\n` +
          `  restore of a snapshot at the end  ${snapshotRestore.toFixed(2)} s\n` +
          `  ratio                             ${report.restoreAt.ratio.toFixed(2)}x   (peak memory ${pitr.peakMb.toFixed(0)} MB)\n\n` +
          (periodic.length > 0
            ? `  backup --from-log every ${fromLogEvery} s  ${periodic.length} taken during the run, ${Math.min(...periodic).toFixed(1)}–${Math.max(...periodic).toFixed(1)} s each\n`
            : '') +
          `  backup --from-log ${fromLogBefore} s before the end  ${fromLogSeconds.toFixed(2)} s   (the source's tables not read)\n` +
          `  restore --at the end from it      ${flRestore.toFixed(2)} s   (${flOverlay.changes.toLocaleString('en-US')} changes from the log)\n` +
          `  ratio                             ${(flRestore / snapshotRestore).toFixed(2)}x   (peak memory ${flRun.peakMb.toFixed(0)} MB)\n`,
      );
    }
  } finally {
    await server.stop();
    if (process.env.BENCH_KEEP === '1') log(`repository kept in ${path.join(work, 'repo')}`);
    else await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
