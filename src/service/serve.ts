/**
 * `flashback serve`: the long-running service.
 *
 * - runs the scheduled jobs (backup, verify, prune per target, cron
 *   expressions in the config), one at a time: on a small machine two jobs
 *   at once only slow each other, and a verify right after a backup should
 *   see it. A job due while another runs waits; a job is never queued twice.
 * - records every job's outcome in the repository (runs/), like the commands;
 * - re-evaluates the status (the same function as `flashback status`) every
 *   `serve.check_interval`, on its own clock (also while a job runs), and
 *   after each job; exposes it as Prometheus metrics, and sends an alert
 *   for every new finding and every recovery, beside the jobs (a slow
 *   webhook holds up nothing), again while undelivered;
 * - runs a continuous capture of every target with `capture: true`, each in
 *   its own loop beside the job queue, restarted with backoff when it fails
 *   (capture-loop.ts);
 * - serves GET /metrics and GET /healthz;
 * - on SIGTERM/SIGINT stops the running job cooperatively (a backup commits
 *   nothing and releases its lock) and every capture (what was received is
 *   stored first), then exits.
 */
import { readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { backup } from '../backup/backup.js';
import {
  backupFromLog,
  FROM_LOG,
  type FromLogResult,
  type NothingNew,
  nothingNewInLog,
} from '../backup/from-log.js';
import { parseConfig } from '../config/load.js';
import type { FlashbackConfig } from '../config/schema.js';
import { resolveTarget } from '../config/targets.js';
import { ConfigError, UsageError } from '../errors.js';
import { type Alert, AlertSender, AlertTracker, type Webhook } from '../monitor/alerts.js';
import { Metrics } from '../monitor/metrics.js';
import { describeError, type RecordHooks, recordRun } from '../monitor/record.js';
import {
  previousDue,
  ranAs,
  readStatus,
  type StatusReport,
  unreadableStatus,
} from '../monitor/status.js';
import { slotWaitMessage } from '../pg/replication/slot-wait.js';
import { prune } from '../prune/prune.js';
import type { Repository } from '../repo/repository.js';
import { type RunRecord, RunStore } from '../repo/runs.js';
import { SnapshotStore } from '../repo/snapshots.js';
import { formatBytes } from '../util/format.js';
import { selectSnapshots, verifyAll } from '../verify/run.js';
import { CaptureLoop } from './capture-loop.js';
import { takeServeLease } from './lease.js';
import type { Logger } from './log.js';
import { type JobKind, jobName, nextDue, type ScheduledJob, scheduledJobs } from './schedule.js';

/** What the service needs. */
export interface ServeOptions {
  readonly config: FlashbackConfig;
  readonly repo: Repository;
  readonly env: NodeJS.ProcessEnv;
  readonly log: Logger;
  /** Aborted to stop the service (SIGTERM). */
  readonly signal: AbortSignal;
  /** `host:port` to listen on; default from the config. Port 0 picks a free one. */
  readonly listen?: string | undefined;
  /** Called once listening, with the actual address. */
  readonly onListening?: ((address: string) => void) | undefined;
  /**
   * The configuration file `config` was read from: watched, so an edit is
   * not taken for applied (serve keeps what it started with) and an edit
   * that breaks it is said at once (`status` refuses it meanwhile).
   */
  readonly configFile?: string | undefined;
}

/** The resolved webhooks; a missing url_env variable is a configuration error at start. */
export function webhooks(config: FlashbackConfig, env: NodeJS.ProcessEnv): Webhook[] {
  return config.alerts.webhooks.map((w, i) => {
    const url = w.url ?? env[w.url_env!];
    if (url === undefined || url === '') {
      throw new ConfigError(undefined, [
        {
          path: `alerts.webhooks.${i}.url_env`,
          message: `environment variable ${w.url_env} is not set`,
        },
      ]);
    }
    // (Not found out at the first alert, which then goes nowhere.)
    if (!/^https?:\/\/[^/\s]+/i.test(url) || !URL.canParse(url)) {
      throw new ConfigError(undefined, [
        {
          path: `alerts.webhooks.${i}.url_env`,
          message: `environment variable ${w.url_env} does not hold an http:// or https:// URL`,
        },
      ]);
    }
    return {
      name: w.name ?? (w.url_env !== undefined ? `$${w.url_env}` : `webhook ${i + 1}`),
      url,
    };
  });
}

/** A file's modification time (ms), or 'gone'. */
async function modified(file: string): Promise<number | 'gone'> {
  return stat(file).then(
    (s) => s.mtimeMs,
    () => 'gone' as const,
  );
}

/** Runs kept in memory when their records cannot be written (over serve's lifetime). */
const MAX_UNRECORDED = 200;

/**
 * Runs until `signal` aborts; resolves after a clean stop. Refuses
 * (RepositoryLockedError, exit 7) while another serve runs on the
 * repository (src/service/lease.ts).
 */
export async function serve(options: ServeOptions): Promise<void> {
  const lease = await takeServeLease(options.repo.storage, (m) => options.log.warn({}, m));
  try {
    await serveLeased(options);
  } finally {
    await lease.release();
  }
}

async function serveLeased(options: ServeOptions): Promise<void> {
  const { config, repo, log, signal } = options;
  const metrics = new Metrics();
  const tracker = new AlertTracker();
  const sender = new AlertSender(webhooks(config, options.env), {
    attempts: config.alerts.attempts,
    backoffMs: config.alerts.backoff,
    timeoutMs: config.alerts.timeout,
  });
  const jobs = scheduledJobs(config);
  // Resolve every target now: a typo or a missing password variable fails at start, not at 2 a.m.
  for (const j of jobs) resolveTarget(j.target, config, options.env);
  const captured = Object.keys(config.targets)
    .filter((t) => config.targets[t]?.capture === true)
    .sort()
    .map((t) => resolveTarget(t, config, options.env));
  const tz = config.serve.timezone;
  const next = new Map<ScheduledJob, Date>(jobs.map((j) => [j, nextDue(j, new Date(), tz)]));
  // Runs missed while serve was down (a crash, a restart across a due
  // time) are run once at start, as anacron does: otherwise a daily backup
  // missed is a day without one. A job that never ran is a new schedule and
  // waits for its time (status judges it the same way).
  const queue: ScheduledJob[] = await missedJobs(repo, jobs, tz, Date.now()).catch((err) => {
    log.error(
      { error: describeError(err) },
      'could not read the run records to catch up missed runs',
    );
    return [];
  });
  for (const j of queue) {
    log.warn(
      { job: j.job, target: j.target },
      `${jobName(j)}: missed while serve was not running; run now`,
    );
  }
  let running: ScheduledJob | undefined;
  let lastTick = Date.now();
  let lastStatus: StatusReport | undefined;
  // Captures stop with the service, and also if the loop below ends any other way.
  const stopCaptures = new AbortController();
  const onAbort = (): void => stopCaptures.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  let captures: CaptureLoop[] = [];
  // The configuration file as serve read it: an edit is said, once.
  const configFile = options.configFile;
  let configSeen = configFile === undefined ? undefined : await modified(configFile);
  const watchConfig = async (): Promise<void> => {
    if (configFile === undefined) return;
    const now = await modified(configFile);
    if (now === configSeen) return;
    configSeen = now;
    try {
      parseConfig(await readFile(configFile, 'utf8'), configFile);
      log.warn(
        { config: configFile },
        `${configFile} changed: serve goes on with the configuration it started with; restart it to apply the change`,
      );
    } catch (err) {
      log.error(
        { config: configFile, error: describeError(err) },
        `${configFile} changed and is no longer valid (${(err as Error).message}): serve goes on with the configuration it started with, and \`flashback status\` and the other commands refuse it until it is fixed`,
      );
    }
  };
  /** Runs whose record could not be written (the repository read-only or full), newest last. */
  const unrecorded: RunRecord[] = [];

  // Evaluations run one at a time (a capture failure asks for one at any moment).
  let evaluation = Promise.resolve();
  const evaluate = (): Promise<void> => {
    evaluation = evaluation.then(evaluateOnce);
    return evaluation;
  };
  const evaluateOnce = async (): Promise<void> => {
    try {
      try {
        lastStatus = await readStatus(repo, config, {
          slots: true,
          env: options.env,
          captureFailures: captures.flatMap((c) => c.failure() ?? []),
          unrecorded,
        });
      } catch (err) {
        // Not the last evaluation again: while the repository cannot be
        // read, every backup's failure is unseen, which is itself critical
        // (metrics, /healthz and an alert say so).
        metrics.error('status');
        log.error({ error: describeError(err) }, 'status evaluation failed');
        lastStatus = unreadableStatus(config, lastStatus, describeError(err).message, new Date());
      }
      metrics.observeStatus(lastStatus);
      const alerts = tracker.update(lastStatus.targets, lastStatus.at);
      for (const a of alerts) {
        log[a.event === 'recovered' ? 'info' : a.severity === 'critical' ? 'error' : 'warn'](
          { target: a.target, kind: a.kind, snapshot: a.snapshot },
          a.message,
        );
      }
      // Sent beside the evaluations and jobs, not in their way: a slow or
      // unreachable webhook (retries, backoff) delays neither.
      if (sender.configured && alerts.length > 0) {
        delivering = delivering.then(() => deliver(alerts));
      }
    } catch (err) {
      metrics.error('status');
      log.error({ error: describeError(err) }, 'status evaluation failed');
    }
  };
  let delivering = Promise.resolve();
  const deliver = async (alerts: readonly Alert[]): Promise<void> => {
    for (const a of alerts) {
      const results = await sender.send(a, signal);
      for (const d of results) {
        metrics.alert(d.ok);
        if (d.ok)
          log.info(
            { webhook: d.webhook, kind: a.kind, target: a.target, attempts: d.attempts },
            'alert sent',
          );
        else
          log.error(
            {
              webhook: d.webhook,
              kind: a.kind,
              target: a.target,
              attempts: d.attempts,
              error: d.error,
            },
            'alert could not be delivered; sent again at the next evaluation while it holds',
          );
      }
      // No webhook took it: alerted again while it holds, not forgotten.
      if (!signal.aborted && results.every((d) => !d.ok)) tracker.undelivered(a);
    }
  };

  const runJob = async (job: ScheduledJob): Promise<void> => {
    const started = Date.now();
    log.info({ job: job.job, target: job.target }, `${jobName(job)}: started`);
    const onRecordError = (err: unknown, run: RunRecord): void => {
      metrics.error('record');
      log.error({ error: describeError(err) }, 'could not record the run in the repository');
      // Kept in memory instead: a backup that failed because the repository
      // cannot be written must still reach status, metrics and alerts.
      unrecorded.push(run);
      if (unrecorded.length > MAX_UNRECORDED) unrecorded.shift();
      metrics.observeRun(run);
    };
    const hooks: RecordHooks = { onRecordError, onRecorded: (r) => metrics.observeRun(r) };
    try {
      // Not into an empty mount point: the evaluations say the repository is gone.
      await repo.assertPresent();
      const summary = await JOBS[job.job]({ job, options, signal, hooks });
      const fields = { job: job.job, target: job.target, seconds: (Date.now() - started) / 1000 };
      // A job that ran and found something wrong is an error in the log, not news.
      if (typeof summary === 'string') log.info(fields, `${jobName(job)}: ${summary}`);
      else log.error(fields, `${jobName(job)}: ${summary.failed}`);
    } catch (err) {
      const e = describeError(err);
      log.error(
        { job: job.job, target: job.target, seconds: (Date.now() - started) / 1000, error: e },
        `${jobName(job)}: failed: ${e.message}`,
      );
    }
  };

  const server = await listen(options.listen ?? config.serve.listen, async (path) => {
    if (path === '/metrics')
      return { status: 200, type: metrics.contentType, body: await metrics.text() };
    if (path === '/healthz') {
      // Alive means the scheduler loop is turning, or running a job (a
      // backup may take hours; the status, evaluated beside it, says if
      // it is late); the backups' health is in `status`.
      const alive = running !== undefined || Date.now() - lastTick < 10_000;
      return {
        status: alive ? 200 : 503,
        type: 'application/json',
        body: `${JSON.stringify({
          status: alive ? 'ok' : 'stalled',
          backups: lastStatus?.severity ?? 'unknown',
          running: running === undefined ? null : jobName(running),
          queued: queue.map(jobName),
          captures: captures.map((c) => c.describe()),
          next: jobs.map((j) => ({ job: jobName(j), at: next.get(j)!.toISOString() })),
        })}\n`,
      };
    }
    return { status: 404, type: 'text/plain', body: 'not found: try /metrics or /healthz\n' };
  });
  const address = serverAddress(server);
  options.onListening?.(address);
  log.info(
    {
      listen: address,
      jobs: jobs.map((j) => `${jobName(j)} (${j.cron})`),
      captures: captured.map((t) => t.name),
      timezone: tz,
      webhooks: sender.configured,
    },
    'flashback serve started',
  );

  // A failure is evaluated (and alerted) at once, not at the next check.
  const onCaptureEvent = (): void => {
    if (!stopCaptures.signal.aborted) void evaluate();
  };
  captures = captured.map(
    (target) =>
      new CaptureLoop({
        target,
        repo,
        signal: stopCaptures.signal,
        log,
        metrics,
        onFailure: onCaptureEvent,
        onRecovered: onCaptureEvent,
      }),
  );
  // The first status waits (briefly) for the captures to connect: a slot
  // nobody reads yet is not a finding at start-up.
  await Promise.race([
    Promise.all(captures.map((c) => c.settled)),
    sleep(5000, stopCaptures.signal),
  ]);
  await evaluate();
  // The status is evaluated on its own clock, also while a job runs: a
  // backup held up for minutes must not freeze the metrics and the alerts
  // (its lateness is exactly what they are for).
  // (It stops with the service, or when the loop below ends any other way;
  // a failure is logged, never an unhandled rejection.)
  const stopped = stopCaptures.signal;
  const evaluator = (async () => {
    while (!stopped.aborted) {
      await sleep(config.serve.check_interval, stopped);
      if (stopped.aborted) break;
      try {
        await watchConfig();
      } catch (err) {
        log.error({ error: describeError(err) }, 'reading the configuration file failed');
      }
      await evaluate();
    }
  })();
  try {
    while (!signal.aborted) {
      lastTick = Date.now();
      const now = new Date();
      for (const j of jobs) {
        if (next.get(j)! <= now) {
          next.set(j, nextDue(j, now, tz));
          if (running !== j && !queue.includes(j)) queue.push(j);
          else
            log.warn(
              { job: j.job, target: j.target },
              `${jobName(j)}: due again while still pending; skipped this time`,
            );
        }
      }
      const job = queue.shift();
      if (job !== undefined) {
        running = job;
        await runJob(job);
        running = undefined;
        if (signal.aborted) break;
        await evaluate();
        continue;
      }
      await sleep(Math.min(1000, msUntilNext(next)), signal);
    }
  } finally {
    stopCaptures.abort();
    signal.removeEventListener('abort', onAbort);
    await Promise.all(captures.map((c) => c.done));
    await evaluator;
    await evaluation;
    await delivering;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    log.info({}, 'flashback serve stopped');
  }
}

/** The work of each job kind; returns a one-line summary. */
const JOBS: Record<
  JobKind,
  (ctx: {
    job: ScheduledJob;
    options: ServeOptions;
    signal: AbortSignal;
    hooks: RecordHooks;
  }) => Promise<string | { failed: string }>
> = {
  async backup({ job, options, signal, hooks }) {
    const target = resolveTarget(job.target, options.config, options.env);
    const r = await recordRun(
      options.repo,
      { kind: 'backup', target: job.target, trigger: 'schedule' },
      async () => {
        const b = await backup({
          target,
          repo: options.repo,
          signal,
          onWait: (w) =>
            options.log.warn(
              { job: job.job, target: job.target },
              slotWaitMessage(`backup ${job.target}`, w),
            ),
        });
        const t = b.manifest.totals;
        return {
          value: b,
          snapshot: b.manifest.id,
          details: { bytes: t.bytes, newBytes: t.newBytes, rows: t.rows },
        };
      },
      hooks,
    );
    const m = r.value.manifest;
    return `snapshot ${m.id} committed: ${m.totals.rows.toLocaleString('en-US')} rows, ${formatBytes(m.totals.bytes)}, ${formatBytes(m.totals.newBytes)} new`;
  },
  async backup_from_log({ job, options, signal, hooks }) {
    const r = await recordRun<FromLogResult | NothingNew>(
      options.repo,
      { kind: 'backup', target: job.target, trigger: 'schedule', details: FROM_LOG },
      async () => {
        // Inside the run: a log that cannot be read is a failed run, recorded and alerted.
        const idle = await nothingNewInLog(options.repo, job.target);
        if (idle !== undefined) return { value: idle, details: { skipped: idle.reason } };
        const v = await backupFromLog({ repo: options.repo, target: job.target, signal });
        if ('reason' in v) return { value: v, details: { skipped: v.reason } };
        const t = v.manifest.totals;
        return {
          value: v,
          snapshot: v.manifest.id,
          details: { bytes: t.bytes, newBytes: t.newBytes, rows: t.rows, fromLog: v.base },
        };
      },
      hooks,
    );
    const v = r.value;
    if ('reason' in v) return `nothing to do: ${v.reason}`;
    return `snapshot ${v.manifest.id} committed from snapshot ${v.base} and ${v.transactions.toLocaleString('en-US')} transaction(s) of the change log: ${formatBytes(v.manifest.totals.newBytes)} new`;
  },
  async verify({ job, options, signal, hooks }) {
    // The target's newest snapshot, if it is not verified yet: not an older
    // one left unverified (verifying it says nothing of what a restore gets now).
    const unverified = await selectSnapshots(options.repo, {
      kind: 'unverified',
      target: job.target,
    });
    const latest = (await SnapshotStore.of(options.repo).all(job.target)).at(-1);
    const newest = unverified.find((m) => m.id === latest?.id);
    if (newest === undefined) {
      const nothing =
        latest === undefined
          ? `no snapshot of "${job.target}" yet`
          : 'the newest snapshot is verified';
      // Recorded all the same: the run happened, and without a record the
      // missed-run check took serve for dead at every due time.
      await recordRun(
        options.repo,
        { kind: 'verify', target: job.target, trigger: 'schedule' },
        async () => ({ value: undefined, details: { nothing } }),
        hooks,
      );
      return `nothing to verify: ${nothing}`;
    }
    const results = await verifyAll({
      repo: options.repo,
      config: options.config,
      env: options.env,
      manifests: [newest],
      trigger: 'schedule',
      signal,
      ...hooks,
    });
    const v = results[0]!.value;
    if (v.ok)
      return `snapshot ${v.snapshot} verified: restore ${v.restoreSeconds.toFixed(1)} s, compare ${v.compareSeconds.toFixed(1)} s`;
    return {
      failed: `snapshot ${v.snapshot} FAILED verification: ${v.problems[0]?.message ?? ''}`,
    };
  },
  async prune({ job, options, signal, hooks }) {
    const r = await recordRun(
      options.repo,
      // (tombstones: this prune leaves one per snapshot it removes; see readStatus.)
      { kind: 'prune', target: job.target, trigger: 'schedule', details: { tombstones: 1 } },
      async () => {
        const p = await prune({
          repo: options.repo,
          config: options.config,
          target: job.target,
          signal,
        });
        return {
          value: p,
          details: {
            snapshotsRemoved: p.snapshotsRemoved,
            chunksRemoved: p.chunksRemoved,
            bytesFreed: p.bytesFreed,
            logSegmentsRemoved: p.logs.reduce((n, l) => n + l.segmentsRemoved, 0),
          },
        };
      },
      hooks,
    );
    const { snapshotsRemoved, chunksRemoved, bytesFreed, logs } = r.value;
    const segments = logs.reduce((n, l) => n + l.segmentsRemoved, 0);
    const freed = bytesFreed + logs.reduce((n, l) => n + l.bytesFreed, 0);
    return segments === 0
      ? `${snapshotsRemoved} snapshot(s) and ${chunksRemoved} chunk(s) removed, ${formatBytes(freed)} freed`
      : `${snapshotsRemoved} snapshot(s), ${chunksRemoved} chunk(s) and ${segments} change-log segment(s) removed, ${formatBytes(freed)} freed`;
  },
};

function msUntilNext(next: ReadonlyMap<ScheduledJob, Date>): number {
  let min = Number.POSITIVE_INFINITY;
  for (const d of next.values()) min = Math.min(min, d.getTime() - Date.now());
  return Math.max(10, min);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

interface Response {
  readonly status: number;
  readonly type: string;
  readonly body: string;
}

async function listen(
  address: string,
  handle: (path: string) => Promise<Response>,
): Promise<Server> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i) || '127.0.0.1';
  const port = Number(address.slice(i + 1));
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res
        .writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' })
        .end('method not allowed\n');
      return;
    }
    handle(path).then(
      (r) =>
        res
          .writeHead(r.status, { 'content-type': r.type })
          .end(req.method === 'HEAD' ? undefined : r.body),
      (err: unknown) =>
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    const refused = (err: NodeJS.ErrnoException): void => {
      // The address is configuration: taken or not ours to use is a usage error, not a bug.
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') {
        reject(
          new UsageError(`cannot listen on ${address}: ${err.message}`, {
            hint:
              err.code === 'EADDRINUSE'
                ? 'another process listens there (another flashback serve?): choose another address with --listen or serve.listen'
                : 'choose an address of this machine, and a port above 1023 unless serve runs as root (--listen or serve.listen)',
          }),
        );
      } else reject(err);
    };
    server.once('error', refused);
    server.listen(port, host, () => {
      server.off('error', refused);
      resolve();
    });
  });
  return server;
}

function serverAddress(server: Server): string {
  const a = server.address();
  if (a === null || typeof a === 'string') return String(a);
  return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}

/** The jobs that ran before and missed their last due time (the status's missed-run rule, without its grace). */
async function missedJobs(
  repo: Repository,
  jobs: readonly ScheduledJob[],
  tz: string,
  now: number,
): Promise<ScheduledJob[]> {
  if (jobs.length === 0) return [];
  const runs = await new RunStore(repo.storage).list({});
  return jobs.filter((j) => {
    const due = previousDue(j.cron, now, tz);
    if (due === undefined) return false;
    const own = runs.filter(
      (r) => ranAs(r, j.job) && (r.target === j.target || (j.job === 'prune' && r.target === null)),
    );
    // (A minute's slack, as status allows: a run just before its time is on time.)
    return own.length > 0 && !own.some((r) => Date.parse(r.startedAt) >= due - 60_000);
  });
}
