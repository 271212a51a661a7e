/**
 * Prometheus metrics of `serve`, from the same status evaluation as
 * `flashback status` (so the two never disagree) plus this process's runs.
 * Names follow Prometheus conventions: base units (seconds, bytes), `_total`
 * for counters, one label set per target and job kind.
 */
import { Counter, Gauge, Registry } from 'prom-client';
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
