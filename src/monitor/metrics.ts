/**
 * Prometheus metrics of `serve`, from the same status evaluation as
 * `flashback status` (so the two never disagree) plus this process's runs.
 * Names follow Prometheus conventions: base units (seconds, bytes), `_total`
 * for counters, one label set per target and job kind.
 */
import { Counter, Gauge, Registry, Summary } from 'prom-client';
import type { RunRecord } from '../repo/runs.js';
import type { StatusReport } from './status.js';

const SEVERITY = { ok: 0, warning: 1, critical: 2 } as const;

/** The metric families and how they are fed. */
export class Metrics {
  readonly registry = new Registry();
  private readonly status = new Gauge({
    name: 'flashback_status',
    help: 'Health of a target: 0 ok, 1 warning, 2 critical (as `flashback status` exits)',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly backupAge = new Gauge({
    name: 'flashback_backup_age_seconds',
    help: 'Age of the newest snapshot of a target (from its consistent point)',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly verifiedAge = new Gauge({
    name: 'flashback_verified_backup_age_seconds',
    help: 'Age of the newest snapshot of a target that passed verification',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly snapshots = new Gauge({
    name: 'flashback_snapshots',
    help: 'Snapshots of a target in the repository',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly findings = new Gauge({
    name: 'flashback_findings',
    help: 'Current findings of a target by severity',
    labelNames: ['target', 'severity'],
    registers: [this.registry],
  });
  private readonly backupFailures = new Gauge({
    name: 'flashback_backup_failures',
    help: 'Failed backup attempts of a target since its last successful one',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly lastSuccess = new Gauge({
    name: 'flashback_last_run_success',
    help: 'Whether the last run of a job succeeded (1) or failed (0)',
    labelNames: ['target', 'job'],
    registers: [this.registry],
  });
  private readonly lastDuration = new Gauge({
    name: 'flashback_last_run_duration_seconds',
    help: 'Duration of the last run of a job',
    labelNames: ['target', 'job'],
    registers: [this.registry],
  });
  private readonly lastTime = new Gauge({
    name: 'flashback_last_run_timestamp_seconds',
    help: 'When the last run of a job finished (Unix time)',
    labelNames: ['target', 'job'],
    registers: [this.registry],
  });
  private readonly lastBytes = new Gauge({
    name: 'flashback_last_backup_bytes',
    help: 'Data (uncompressed COPY bytes) and new stored bytes of the last backup',
    labelNames: ['target', 'kind'],
    registers: [this.registry],
  });
  private readonly runs = new Counter({
    name: 'flashback_runs_total',
    help: 'Jobs run by this process, by result',
    labelNames: ['target', 'job', 'result'],
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: 'flashback_errors_total',
    help: 'Errors of this process outside jobs (status evaluation, alert delivery)',
    labelNames: ['where'],
    registers: [this.registry],
  });
  private readonly alerts = new Counter({
    name: 'flashback_alerts_total',
    help: 'Alerts sent, by delivery result',
    labelNames: ['result'],
    registers: [this.registry],
  });
  /** Per target: Unix ms of the newest change or heartbeat stored (the gauge is its age at scrape time). */
  private readonly newestStored = new Map<string, number>();
  /** Targets whose change log no snapshot is continued by (their recovery point is the newest snapshot's age). */
  private readonly unjoined = new Set<string>();
  private readonly recoveryPoint = new Gauge({
    name: 'flashback_recovery_point_seconds',
    help: 'Age of the newest moment a restore of a target can reach: the newest change or heartbeat stored in its change log, or its newest snapshot while no snapshot was taken since the log began (the data a restore to now would lose)',
    labelNames: ['target'],
    registers: [this.registry],
    collect: () => this.collectRecoveryPoint(),
  });
  private readonly retainedWal = new Gauge({
    name: 'flashback_slot_retained_wal_bytes',
    help: "WAL held on the server by Flashback's replication slot of a target",
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly logSinceSnapshot = new Gauge({
    name: 'flashback_change_log_bytes_since_snapshot',
    help: 'Stored change log after the newest snapshot of a target: what a restore to a moment after it reads before it begins',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly captureTransactions = new Counter({
    name: 'flashback_capture_transactions_total',
    help: 'Transactions stored in the change log by the captures of this process',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly captureChanges = new Counter({
    name: 'flashback_capture_changes_total',
    help: 'Row changes (insert, update, delete, truncate) stored by the captures of this process',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly captureLag = new Summary({
    name: 'flashback_capture_lag_seconds',
    help: 'Time from a transaction committing on the source to being stored in the repository, over the last minute',
    labelNames: ['target'],
    percentiles: [0.5, 0.99],
    maxAgeSeconds: 60,
    ageBuckets: 6,
    registers: [this.registry],
  });
  private readonly captureRunning = new Gauge({
    name: 'flashback_capture_running',
    help: 'Whether the capture of a target is streaming (1) or failed and waiting to retry (0)',
    labelNames: ['target'],
    registers: [this.registry],
  });
  private readonly captureFailures = new Counter({
    name: 'flashback_capture_failures_total',
    help: 'Failures of the captures of this process (each is retried with backoff)',
    labelNames: ['target'],
    registers: [this.registry],
  });

  /** Sets the gauges from a status evaluation. */
  observeStatus(report: StatusReport): void {
    for (const t of report.targets) {
      const target = t.target;
      this.status.set({ target }, SEVERITY[t.severity]);
      setOrRemove(this.backupAge, { target }, t.newest?.ageSeconds);
      setOrRemove(this.verifiedAge, { target }, t.newestVerified?.ageSeconds);
      this.snapshots.set({ target }, t.snapshots);
      this.backupFailures.set({ target }, t.backupFailures);
      for (const severity of ['warning', 'critical'] as const) {
        this.findings.set(
          { target, severity },
          t.findings.filter((f) => f.severity === severity).length,
        );
      }
      if (t.changeLog === null) {
        this.newestStored.delete(target);
        this.unjoined.delete(target);
      } else if (!t.changeLog.joined) {
        // No snapshot the log continues: the recovery point is the newest
        // snapshot's age, which stored segments do not move (see observeSegment).
        this.unjoined.add(target);
        this.newestStored.set(
          target,
          Date.parse(report.at) - t.changeLog.recoveryPointSeconds * 1000,
        );
      } else {
        this.unjoined.delete(target);
        // The evaluation's age, as a point in time, so the gauge keeps ageing between evaluations.
        this.noteStored(target, report.at, -t.changeLog.recoveryPointSeconds * 1000);
      }
      setOrRemove(this.retainedWal, { target }, t.changeLog?.slot?.retainedWalBytes);
      setOrRemove(this.logSinceSnapshot, { target }, t.changeLog?.bytesSinceSnapshot ?? undefined);
    }
  }

  /**
   * The newest change or heartbeat of `target` now stored: at `at` (ISO)
   * plus `offsetMs`. Only moves forward (a capture reports as it stores; an
   * evaluation may have read the repository a moment earlier).
   */
  noteStored(target: string, at: string, offsetMs = 0): void {
    const t = Date.parse(at) + offsetMs;
    if (!Number.isFinite(t)) return;
    const before = this.newestStored.get(target);
    if (before === undefined || t > before) this.newestStored.set(target, t);
  }

  /** A segment stored by a capture of this process. */
  observeSegment(
    target: string,
    s: {
      transactions: number;
      changes: number;
      lagsMs: readonly number[];
      newestAt?: string | undefined;
    },
  ): void {
    this.captureTransactions.inc({ target }, s.transactions);
    this.captureChanges.inc({ target }, s.changes);
    for (const ms of s.lagsMs) this.captureLag.observe({ target }, Math.max(0, ms) / 1000);
    if (s.newestAt !== undefined && !this.unjoined.has(target)) this.noteStored(target, s.newestAt);
  }

  /** A capture started streaming, failed (and will be retried), or stopped with the service. */
  captureState(target: string, state: 'streaming' | 'failed' | 'stopped'): void {
    this.captureRunning.set({ target }, state === 'streaming' ? 1 : 0);
    if (state === 'failed') this.captureFailures.inc({ target });
  }

  private collectRecoveryPoint(): void {
    this.recoveryPoint.reset();
    const now = Date.now();
    for (const [target, at] of this.newestStored) {
      this.recoveryPoint.set({ target }, Math.max(0, (now - at) / 1000));
    }
  }

  /** Records a finished job (from its run record). */
  observeRun(run: RunRecord): void {
    const labels = { target: run.target ?? '', job: run.kind };
    this.lastSuccess.set(labels, run.ok ? 1 : 0);
    this.lastDuration.set(labels, run.seconds);
    this.lastTime.set(labels, Date.parse(run.finishedAt) / 1000);
    this.runs.inc({ ...labels, result: run.ok ? 'success' : 'failure' });
    if (run.kind === 'backup' && run.ok && run.details !== undefined) {
      const target = run.target ?? '';
      if (typeof run.details.bytes === 'number')
        this.lastBytes.set({ target, kind: 'data' }, run.details.bytes);
      if (typeof run.details.newBytes === 'number')
        this.lastBytes.set({ target, kind: 'new' }, run.details.newBytes);
    }
  }

  error(where: string): void {
    this.errors.inc({ where });
  }

  alert(ok: boolean): void {
    this.alerts.inc({ result: ok ? 'delivered' : 'failed' });
  }

  /** The exposition text for /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function setOrRemove(
  g: Gauge<string>,
  labels: Record<string, string>,
  v: number | undefined,
): void {
  if (v === undefined) g.remove(labels);
  else g.set(labels, v);
}
