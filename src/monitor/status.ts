/**
 * Health of each target's backups, judged from the repository alone: the
 * snapshots, and the run records every backup and verify leaves (runs/).
 * `status` prints it and exits by its worst finding; `serve` turns it into
 * metrics and alerts. The evaluation is a pure function of its inputs, so
 * every rule is unit-tested with made-up timelines.
 *
 * Findings (each names the target and says what to do):
 * - no snapshot at all, or the newest older than backup_warning/critical;
 * - no snapshot that passed verification, or the newest such one older than
 *   verified_warning/critical (ages are of the snapshot's data, not of the
 *   verification);
 * - the most recent backup attempt failed (critical: incident 1 was backups
 *   failing silently for days) or was interrupted (warning);
 * - a snapshot whose latest verification found differences (critical if no
 *   newer snapshot passed since, else warning: restoring that one would fail);
 * - a verification that could not run (warning);
 * - a scheduled job that has run before but not within missed_run_grace of
 *   when it was last due (warning: the scheduler itself has stopped doing
 *   its work).
 */
import { CronExpressionParser } from 'cron-parser';
import { formatDuration } from '../config/duration.js';
import { type FlashbackConfig, type Freshness, freshnessFor } from '../config/schema.js';
import type { Repository } from '../repo/repository.js';
import { type RunKind, type RunRecord, RunStore } from '../repo/runs.js';
import { type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';

export type Severity = 'ok' | 'warning' | 'critical';

/** What a finding is about (stable identifiers for alerts and JSON). */
export type FindingKind =
  | 'no-backup'
  | 'backup-age'
  | 'no-verified'
  | 'verified-age'
  | 'backup-failed'
  | 'verify-failed'
  | 'verify-error'
  | 'missed-run';

export interface Finding {
  readonly severity: Exclude<Severity, 'ok'>;
  readonly kind: FindingKind;
  readonly target: string;
  readonly message: string;
  /** The snapshot concerned, if one is. */
  readonly snapshot?: string | undefined;
}

/** One target's state. */
export interface TargetStatus {
  readonly target: string;
  readonly severity: Severity;
  readonly newest: { readonly id: string; readonly at: string; readonly ageSeconds: number } | null;
  readonly newestVerified: {
    readonly id: string;
    readonly at: string;
    readonly ageSeconds: number;
    readonly verifiedAt: string;
  } | null;
  readonly lastBackup: {
    readonly at: string;
    readonly ok: boolean;
    readonly error?: string | undefined;
  } | null;
  /** Failed backup attempts since the last successful one. */
  readonly backupFailures: number;
  /** Snapshots whose latest verification found differences. */
  readonly failedVerifications: readonly string[];
  readonly snapshots: number;
  readonly thresholds: Freshness;
  readonly findings: readonly Finding[];
}

export interface StatusReport {
  readonly at: string;
  readonly severity: Severity;
  readonly targets: readonly TargetStatus[];
}

/** Everything the evaluation looks at. */
export interface StatusInput {
  readonly now: Date;
  readonly config: FlashbackConfig;
  /** Targets to judge; by default those with a schedule, snapshots or runs. */
  readonly targets?: readonly string[] | undefined;
  readonly snapshots: ReadonlyArray<Pick<SnapshotManifest, 'id' | 'target' | 'startedAt'>>;
  readonly runs: readonly RunRecord[];
}

const RANK: Record<Severity, number> = { ok: 0, warning: 1, critical: 2 };

/** The worse of two severities. */
export function worst(a: Severity, b: Severity): Severity {
  return RANK[a] >= RANK[b] ? a : b;
}

/** Reads what the evaluation needs from the repository and evaluates it. */
export async function readStatus(
  repo: Repository,
  config: FlashbackConfig,
  options: { now?: Date; targets?: readonly string[] | undefined } = {},
): Promise<StatusReport> {
  const snapshots = await new SnapshotStore(repo.storage).all();
  const runs = await new RunStore(repo.storage).list();
  return evaluateStatus({
    now: options.now ?? new Date(),
    config,
    targets: options.targets,
    snapshots,
    runs,
  });
}

/** Judges every target. Pure. */
export function evaluateStatus(input: StatusInput): StatusReport {
  const names =
    input.targets ??
    [
      ...new Set([
        ...Object.entries(input.config.targets)
          .filter(([, t]) => t.schedule?.backup !== undefined || t.schedule?.verify !== undefined)
          .map(([n]) => n),
        ...input.snapshots.map((s) => s.target),
        ...input.runs.flatMap((r) => (r.target === null ? [] : [r.target])),
      ]),
    ].sort();
  const targets = names.map((t) => evaluateTarget(t, input));
  return {
    at: input.now.toISOString(),
    severity: targets.reduce<Severity>((a, t) => worst(a, t.severity), 'ok'),
    targets,
  };
}

function evaluateTarget(target: string, input: StatusInput): TargetStatus {
  const now = input.now.getTime();
  const th = freshnessFor(input.config, target);
  const findings: Finding[] = [];
  const add = (
    severity: Finding['severity'],
    kind: FindingKind,
    message: string,
    snapshot?: string,
  ): void => {
    findings.push({
      severity,
      kind,
      target,
      message,
      ...(snapshot === undefined ? {} : { snapshot }),
    });
  };
  const snaps = input.snapshots
    .filter((s) => s.target === target)
    .sort((a, b) => (a.startedAt < b.startedAt ? -1 : 1));
  const exists = new Set(snaps.map((s) => s.id));
  const runs = input.runs.filter((r) => r.target === target);
  const of = (kind: RunKind): RunRecord[] => runs.filter((r) => r.kind === kind);
  const age = (iso: string): number => now - Date.parse(iso);

  // Newest snapshot and its age.
  const newestSnap = snaps[snaps.length - 1];
  if (newestSnap === undefined) {
    add('critical', 'no-backup', `no backup of "${target}" in the repository`);
  } else {
    const a = age(newestSnap.startedAt);
    const level = a > th.backupCritical ? 'critical' : a > th.backupWarning ? 'warning' : undefined;
    if (level !== undefined) {
      add(
        level,
        'backup-age',
        `newest backup of "${target}" is ${formatDuration(a)} old (${level} above ${formatDuration(level === 'critical' ? th.backupCritical : th.backupWarning)})`,
        newestSnap.id,
      );
    }
  }

  // Latest verification per snapshot still in the repository.
  const latestVerify = new Map<string, RunRecord>();
  for (const r of of('verify'))
    if (r.snapshot !== null && exists.has(r.snapshot)) latestVerify.set(r.snapshot, r);
  const passed = snaps.filter((s) => latestVerify.get(s.id)?.ok === true);
  const newestPassed = passed[passed.length - 1];
  if (newestPassed === undefined) {
    // With a failed verification the verify-failed finding below says it all.
    const anyFailed = snaps.some((s) => (latestVerify.get(s.id)?.problems?.length ?? 0) > 0);
    if (newestSnap !== undefined && !anyFailed) {
      add(
        'critical',
        'no-verified',
        `no backup of "${target}" has passed verification; run \`flashback verify --latest --target ${target}\``,
      );
    }
  } else {
    const a = age(newestPassed.startedAt);
    const level =
      a > th.verifiedCritical ? 'critical' : a > th.verifiedWarning ? 'warning' : undefined;
    if (level !== undefined) {
      add(
        level,
        'verified-age',
        `newest verified backup of "${target}" is ${formatDuration(a)} old (${level} above ${formatDuration(level === 'critical' ? th.verifiedCritical : th.verifiedWarning)})`,
        newestPassed.id,
      );
    }
  }
  const failedVerifications: string[] = [];
  for (const s of snaps) {
    const v = latestVerify.get(s.id);
    if (v === undefined || v.ok) continue;
    if ((v.problems?.length ?? 0) === 0) continue; // could not run: below
    failedVerifications.push(s.id);
    const newerPassed = newestPassed !== undefined && newestPassed.startedAt > s.startedAt;
    add(
      newerPassed ? 'warning' : 'critical',
      'verify-failed',
      `snapshot ${s.id} of "${target}" FAILED verification at ${v.finishedAt}: ${v.problems![0]!.message}${v.problems!.length > 1 ? ` (and ${v.problems!.length - 1} more)` : ''}`,
      s.id,
    );
  }
  const lastVerify = of('verify').at(-1);
  if (lastVerify !== undefined && !lastVerify.ok && (lastVerify.problems?.length ?? 0) === 0) {
    add(
      'warning',
      'verify-error',
      `the last verification of "${target}" could not run (${lastVerify.finishedAt}): ${lastVerify.error?.message ?? 'unknown error'}`,
      lastVerify.snapshot ?? undefined,
    );
  }

  // Backup attempts: the most recent one decides; count failures since the last success.
  const backups = of('backup');
  const lastBackup = backups.at(-1);
  let failures = 0;
  for (let i = backups.length - 1; i >= 0 && !backups[i]!.ok; i--) failures++;
  if (lastBackup !== undefined && !lastBackup.ok) {
    const interrupted = lastBackup.error?.code === 'interrupted';
    const lastGood = [...backups].reverse().find((r) => r.ok);
    add(
      interrupted ? 'warning' : 'critical',
      'backup-failed',
      `the last backup of "${target}" ${interrupted ? 'was interrupted' : 'FAILED'} at ${lastBackup.finishedAt}: ${lastBackup.error?.message ?? 'unknown error'} (${failures} failed attempt(s) since ${lastGood === undefined ? 'the first' : `the last good backup at ${lastGood.finishedAt}`})`,
    );
  }

  // Scheduled jobs that did not run.
  const schedule = input.config.targets[target]?.schedule ?? {};
  for (const job of ['backup', 'verify', 'prune'] as const) {
    const expr = schedule[job];
    if (expr === undefined) continue;
    const due = previousDue(expr, now - th.missedRunGrace, input.config.serve.timezone);
    if (due === undefined) continue;
    const jobRuns = input.runs.filter(
      (r) => r.kind === job && (r.target === target || (job === 'prune' && r.target === null)),
    );
    // A job that never ran is a new schedule (or no scheduler yet): the
    // freshness findings speak for it. One that ran and then stopped is the
    // silent failure this finding is for.
    if (jobRuns.length === 0) continue;
    const ran = jobRuns.some((r) => Date.parse(r.startedAt) >= due - 60_000);
    if (!ran) {
      add(
        'warning',
        'missed-run',
        `scheduled ${job} of "${target}" (${expr}) was due at ${new Date(due).toISOString()} and has not run: is \`flashback serve\` running?`,
      );
    }
  }

  const severity = findings.reduce<Severity>((a, f) => worst(a, f.severity), 'ok');
  return {
    target,
    severity,
    newest:
      newestSnap === undefined
        ? null
        : {
            id: newestSnap.id,
            at: newestSnap.startedAt,
            ageSeconds: Math.round(age(newestSnap.startedAt) / 1000),
          },
    newestVerified:
      newestPassed === undefined
        ? null
        : {
            id: newestPassed.id,
            at: newestPassed.startedAt,
            ageSeconds: Math.round(age(newestPassed.startedAt) / 1000),
            verifiedAt: latestVerify.get(newestPassed.id)!.finishedAt,
          },
    lastBackup:
      lastBackup === undefined
        ? null
        : {
            at: lastBackup.finishedAt,
            ok: lastBackup.ok,
            ...(lastBackup.error === undefined ? {} : { error: lastBackup.error.message }),
          },
    backupFailures: failures,
    failedVerifications,
    snapshots: snaps.length,
    thresholds: th,
    findings,
  };
}

/** The last time at or before `at` that a cron expression was due (ms), if any. */
export function previousDue(expr: string, at: number, tz: string): number | undefined {
  try {
    return CronExpressionParser.parse(expr, { currentDate: new Date(at), tz })
      .prev()
      .toDate()
      .getTime();
  } catch {
    return undefined;
  }
}
