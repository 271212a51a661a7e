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
 *   failing silently for days), was killed (critical: its process is gone
 *   and left its lock and no run record: killedRuns) or was interrupted
 *   (warning);
 * - a snapshot whose latest verification found differences (critical if no
 *   newer snapshot passed since, else warning: restoring that one would fail);
 * - a verification that could not run (warning);
 * - a snapshot a backup committed that is gone without a prune's tombstone
 *   (critical: deleted by hand or lost);
 * - a snapshot whose manifest cannot be read (critical when damaged: it
 *   cannot be restored, and "latest" and moments are chosen without it;
 *   warning when of a newer format), of the target named by the backup's
 *   run record, or of every target when none names it;
 * - a scheduled job that has run before but not within missed_run_grace of
 *   when it was last due (warning: the scheduler itself has stopped doing
 *   its work);
 * - for a target with a change log: the recovery point (age of the newest
 *   change or heartbeat stored) older than recovery_point_warning/critical;
 *   no snapshot that the log continues (taken after the log began), so no
 *   moment in the log can be restored: the recovery point is then the
 *   newest snapshot's age (warning, critical past recovery_point_critical);
 *   its replication slot gone (critical: capture cannot resume), lost WAL
 *   (critical), holding more than capture.max_retained_wal or not read by
 *   any capture (warnings), or not checkable (warning);
 * - a change log whose `capture.json` cannot be read (critical when
 *   damaged: no moment of it can be restored; warning when of a newer
 *   format), judged for its target alone;
 * - in `serve`: a capture that failed and is being retried (warning,
 *   critical once failing longer than recovery_point_critical).
 */
import { CronExpressionParser } from 'cron-parser';
import { judgeSlot, type SlotLog, type SlotState } from '../capture/slot-health.js';
import { formatDuration } from '../config/duration.js';
import {
  type FlashbackConfig,
  type Freshness,
  freshnessFor,
  SCHEDULE_JOBS,
  type ScheduleJob,
  scheduleJobLabel,
} from '../config/schema.js';
import { formatSize } from '../config/size.js';
import { DamagedError, RepositoryError, UsageError } from '../errors.js';
import { lsnValue } from '../repo/changelog.js';
import { begunBy } from '../repo/changelogs.js';
import { damagedSnapshots, type KnownDamage, readKnownDamage } from '../repo/damage.js';
import { type LockStatus, listLocks } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import {
  type RunKind,
  type RunRecord,
  RunStore,
  reachedVerdict,
  runScope,
  type UnreadableRun,
} from '../repo/runs.js';
import { byDataTime, dataTime, type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import { type ChangeLogFacts, readChangeLogFacts, type UnreadableLog } from './changelog-facts.js';

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
  | 'prune-failed'
  | 'run-unreadable'
  | 'check-failed'
  | 'chunks-damaged'
  | 'snapshot-unreadable'
  | 'snapshot-missing'
  | 'missed-run'
  | 'recovery-point'
  | 'log-unjoined'
  | 'log-since-snapshot'
  | 'slot-missing'
  | 'slot-ahead'
  | 'slot-lost'
  | 'slot-wal'
  | 'slot-inactive'
  | 'slot-unchecked'
  | 'changelog-unreadable'
  | 'capture-failed'
  | 'status-unreadable';

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
  /** The change log, for a target that has one. */
  readonly changeLog: {
    /** Source time of the newest change or heartbeat stored (null: nothing stored yet). */
    readonly newestAt: string | null;
    /**
     * The recovery point: the age of the newest moment a restore can reach.
     * With a snapshot the log continues, the age of `newestAt` (from the
     * log's start while nothing is stored); with snapshots but none the
     * log continues, the newest snapshot's (no moment of the log can be
     * restored). With no snapshot at all it is the log's, and the no-backup
     * finding says that nothing can be restored.
     */
    readonly recoveryPointSeconds: number;
    /**
     * False when the target has snapshots but none was taken after the log
     * began (an LSN at or after the log's start): a restore can reach no
     * moment of the log, only the newest snapshot.
     */
    readonly joined: boolean;
    /** The log is complete up to this LSN. */
    readonly committed: string | null;
    /** The replication slot's state; null when not checked, missing, or not checkable. */
    readonly slot: SlotState | null;
    /**
     * Stored bytes of the segments after the newest snapshot's LSN: what a
     * restore to a moment after that snapshot reads before it can begin
     * (null without a snapshot).
     */
    readonly bytesSinceSnapshot: number | null;
  } | null;
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
  readonly snapshots: readonly SnapshotSummary[];
  /** Snapshots whose manifest cannot be read (damaged, or of a newer format). */
  readonly unreadable?: readonly UnreadableSnapshot[] | undefined;
  /** Snapshots a backup committed whose manifest is gone, and no prune removed (missingSnapshots). */
  readonly missing?: readonly string[] | undefined;
  /** Run records, oldest first (by start): the last of a kind is the newest. */
  readonly runs: readonly RunRecord[];
  /** Targets' change logs (read by `readStatus`); targets without one are absent. */
  readonly changeLogs?: readonly ChangeLogFacts[] | undefined;
  /** Captures run by `serve` that are failing now (serve alone knows). */
  readonly captureFailures?: readonly CaptureFailure[] | undefined;
  /** Chunks known missing or damaged now (src/repo/damage.ts), with the snapshots using them. */
  readonly damage?: ReadonlyMap<string, KnownDamage> | undefined;
  /** Run records that exist and cannot be read: what they recorded is not judged. */
  readonly unreadableRuns?: readonly UnreadableRun[] | undefined;
  /** Locks held now by live processes: what is running (named in missed-run findings). */
  readonly held?: readonly LockStatus[] | undefined;
  /** Targets' change logs that cannot be read (damaged, or of a newer format). */
  readonly unreadableLogs?: readonly UnreadableLog[] | undefined;
}

/** A capture in `serve` that failed and is being retried. */
export interface CaptureFailure {
  readonly target: string;
  /** The first failure since capture last stored a segment. */
  readonly since: string;
  /** Failures since then. */
  readonly failures: number;
  /** The latest failure's message. */
  readonly message: string;
}

const RANK: Record<Severity, number> = { ok: 0, warning: 1, critical: 2 };

/** The worse of two severities. */
export function worst(a: Severity, b: Severity): Severity {
  return RANK[a] >= RANK[b] ? a : b;
}

/**
 * Snapshots that a successful backup committed and that are gone without a
 * prune's tombstone: deleted by hand, lost with the storage, or never
 * copied over. A prune from before tombstones (its record lacks the
 * `tombstones` detail) that finished after the backup may have removed it:
 * such a snapshot is not counted, rather than give an old repository false
 * alarms.
 */
export function missingSnapshots(
  runs: readonly RunRecord[],
  present: ReadonlySet<string>,
  pruned: ReadonlySet<string>,
): string[] {
  // (ISO times: the newest sorts last.)
  const lastLegacy =
    runs
      .filter((r) => r.kind === 'prune' && r.details?.tombstones === undefined)
      .map((r) => r.finishedAt)
      .sort()
      .at(-1) ?? '';
  return runs
    .filter(
      (r) =>
        r.kind === 'backup' &&
        r.ok &&
        r.snapshot !== null &&
        !present.has(r.snapshot) &&
        !pruned.has(r.snapshot) &&
        r.finishedAt > lastLegacy,
    )
    .map((r) => r.snapshot!);
}

/** What status needs of a snapshot. */
export type SnapshotSummary = Pick<
  SnapshotManifest,
  'id' | 'target' | 'startedAt' | 'consistentAt' | 'lsn'
> &
  Partial<Pick<SnapshotManifest, 'finishedAt'>>;

/** A snapshot whose manifest cannot be read, and why. */
export interface UnreadableSnapshot {
  readonly id: string;
  /** Damaged; otherwise written by a newer Flashback (a newer format version). */
  readonly damaged: boolean;
  readonly message: string;
}

/**
 * Manifests are written once and never change, and `serve` evaluates the
 * status every minute: each is read once per storage, not once per
 * evaluation (a manifest lists every chunk; there can be hundreds).
 */
const summaries = new WeakMap<object, Map<string, SnapshotSummary>>();

async function snapshotSummaries(repo: Repository): Promise<{
  snapshots: SnapshotSummary[];
  unreadable: UnreadableSnapshot[];
  pruned: Set<string>;
}> {
  const store = new SnapshotStore(repo.storage);
  let known = summaries.get(repo.storage);
  if (known === undefined) {
    known = new Map();
    summaries.set(repo.storage, known);
  }
  const snapshots: SnapshotSummary[] = [];
  const unreadable: UnreadableSnapshot[] = [];
  const { ids, pruned } = await store.catalog();
  for (const id of ids) {
    let s = known.get(id);
    if (s === undefined) {
      let m: SnapshotManifest;
      try {
        m = await store.read(id);
      } catch (err) {
        if (err instanceof UsageError) continue; // removed (by prune) since listed
        // Not cached: a manifest copied back is read again at the next evaluation.
        if (err instanceof DamagedError || err instanceof RepositoryError) {
          unreadable.push({ id, damaged: err instanceof DamagedError, message: err.message });
          continue;
        }
        throw err;
      }
      s = {
        id: m.id,
        target: m.target,
        startedAt: m.startedAt,
        consistentAt: m.consistentAt,
        lsn: m.lsn,
        finishedAt: m.finishedAt,
      };
      known.set(id, s);
    }
    snapshots.push(s);
  }
  return { snapshots, unreadable, pruned };
}

/**
 * The report when the status cannot be read at all (the repository
 * unreadable to this user, its volume gone): every target of the last
 * report and every configured one is critical, so that serve's metrics,
 * /healthz and alerts say so instead of repeating the last evaluation while
 * nothing can be seen.
 */
export function unreadableStatus(
  config: FlashbackConfig,
  previous: StatusReport | undefined,
  reason: string,
  now: Date,
): StatusReport {
  // (Every configured target too: what it has cannot be seen either.)
  const names = [
    ...new Set([...(previous?.targets.map((t) => t.target) ?? []), ...Object.keys(config.targets)]),
  ];
  const targets = names.map((target): TargetStatus => {
    const before = previous?.targets.find((t) => t.target === target);
    return {
      ...(before ?? {
        target,
        newest: null,
        newestVerified: null,
        lastBackup: null,
        backupFailures: 0,
        failedVerifications: [],
        snapshots: 0,
        changeLog: null,
        thresholds: freshnessFor(config, target),
      }),
      severity: 'critical',
      findings: [
        {
          severity: 'critical',
          kind: 'status-unreadable',
          target,
          message: `the status of "${target}" cannot be read from the repository: ${reason}; failures of its backups cannot be seen`,
        },
        // (Kept, as last seen: alerts already sent for them are not sent
        // again as new once the repository can be read.)
        ...(before?.findings.filter((f) => f.kind !== 'status-unreadable') ?? []),
      ],
    };
  });
  return { at: now.toISOString(), severity: targets.length > 0 ? 'critical' : 'ok', targets };
}

export async function readStatus(
  repo: Repository,
  config: FlashbackConfig,
  options: ReadStatusOptions = {},
): Promise<StatusReport> {
  // (An empty place where the repository was would read as "no backups".)
  await repo.assertPresent();
  const { snapshots, unreadable, pruned } = await snapshotSummaries(repo);
  // With the runs serve could not record (the repository read-only or full).
  const unreadableRuns: UnreadableRun[] = [];
  // (Locks that cannot be listed, say unreadable to the monitoring user:
  // killed runs and running jobs are not judged, the rest is.)
  const locks = await listLocks(repo.storage).catch(() => []);
  const runs = [
    ...(await new RunStore(repo.storage).list({}, (u) => unreadableRuns.push(u))),
    ...(options.unrecorded ?? []),
    ...killedRuns(locks, snapshots),
  ].sort(
    // (The store's order: by start time, as its keys are.)
    (a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0),
  );
  const missing = missingSnapshots(
    runs,
    new Set([...snapshots.map((s) => s.id), ...unreadable.map((u) => u.id)]),
    pruned,
  );
  // Change logs are kept per target name: look for one of every target known.
  const candidates = [
    ...new Set([
      ...Object.keys(config.targets),
      ...snapshots.map((s) => s.target),
      ...runs.flatMap((r) => (r.target === null ? [] : [r.target])),
      ...(options.targets ?? []),
    ]),
  ];
  const unreadableLogs: UnreadableLog[] = [];
  const changeLogs = await readChangeLogFacts(repo, config, candidates, {
    slots: options.slots,
    env: options.env,
    onUnreadable: (u) => unreadableLogs.push(u),
  });
  // A target asked for that nothing knows is a typo, not a critical "no backup".
  const unknown = (options.targets ?? []).filter(
    (t) =>
      config.targets[t] === undefined &&
      !snapshots.some((s) => s.target === t) &&
      !runs.some((r) => r.target === t) &&
      !changeLogs.some((l) => l.target === t) &&
      !unreadableLogs.some((l) => l.target === t),
  );
  if (unknown.length > 0) {
    throw new UsageError(
      `unknown target(s) ${unknown.map((t) => `"${t}"`).join(', ')}: not in the configuration, and no snapshots, runs or change log of them in the repository`,
      { hint: '`flashback targets` lists the configured targets, `flashback list` the snapshots' },
    );
  }
  const damage = await readKnownDamage(repo.storage, runs);
  return evaluateStatus({
    unreadableRuns,
    unreadableLogs,
    held: locks.filter((l) => !l.stale),
    damage,
    now: options.now ?? new Date(),
    config,
    targets: options.targets,
    snapshots,
    unreadable,
    missing,
    runs,
    changeLogs,
    captureFailures: options.captureFailures,
  });
}

/**
 * Runs that were killed: a stale lock held for a run (a backup) is a process
 * that ended without releasing it, so without writing its run record either
 * (killed, out of memory, the machine restarted). Without this, such a
 * backup leaves no trace until the newest backup grows old enough to alert.
 * Judged as a failed run (error code `killed`) from the lock's creation to
 * its last refresh; a later run of the same kind supersedes it as any
 * other. Not when a snapshot of its target was committed after it began:
 * killed after its commit point, it did its work (or another run did).
 * `flashback unlock` removes the lock, and with it this record.
 */
export function killedRuns(
  locks: readonly LockStatus[],
  snapshots: readonly Pick<SnapshotSummary, 'target' | 'finishedAt'>[],
): RunRecord[] {
  return locks.flatMap((l): RunRecord[] => {
    if (!l.stale || l.run === undefined) return [];
    const began = Date.parse(l.created);
    const since = snapshots.some(
      (s) =>
        s.target === l.run!.target &&
        s.finishedAt !== undefined &&
        Date.parse(s.finishedAt) >= began,
    );
    if (since) return [];
    const seconds = Math.max(0, (Date.parse(l.refreshed) - Date.parse(l.created)) / 1000);
    return [
      {
        format: 'flashback-run',
        version: 1,
        id: `killed-${l.id}`,
        kind: l.run.kind,
        target: l.run.target,
        snapshot: null,
        ok: false,
        trigger: 'command',
        startedAt: l.created,
        finishedAt: l.refreshed,
        seconds: Number.isFinite(seconds) ? seconds : 0,
        error: {
          code: 'killed',
          message: `"${l.command}" (pid ${l.pid} on ${l.hostname}, started ${l.created}) ended without finishing or recording a result: ${l.staleReason ?? 'its lock is stale'} (killed, out of memory, or the machine restarted?); it committed nothing, and its lock is left in the repository (\`flashback unlock\` removes it)`,
        },
        ...(l.run.fromLog === true ? { details: { mode: 'from-log' } } : {}),
        // (A prune of a version that names its run leaves a tombstone before
        // each delete: it excuses no snapshot gone, as older prunes' records do.)
        ...(l.run.kind === 'prune' ? { details: { tombstones: 1 } } : {}),
      },
    ];
  });
}

/** Options for `readStatus`. */
export interface ReadStatusOptions {
  readonly now?: Date | undefined;
  readonly targets?: readonly string[] | undefined;
  /**
   * Connect to each target with a change log to check its replication slot
   * (best effort, 3 s connect timeout). Default false: the repository alone.
   */
  readonly slots?: boolean | undefined;
  /** Environment for target passwords (with `slots`). */
  readonly env?: NodeJS.ProcessEnv | undefined;
  readonly captureFailures?: readonly CaptureFailure[] | undefined;
  /** Runs whose records could not be written, kept by serve (judged as if recorded). */
  readonly unrecorded?: readonly RunRecord[] | undefined;
}

/** Judges every target. Pure. */
export function evaluateStatus(input: StatusInput): StatusReport {
  const names =
    input.targets ??
    [
      ...new Set([
        ...Object.entries(input.config.targets)
          .filter(
            ([, t]) =>
              t.schedule?.backup !== undefined ||
              t.schedule?.backup_from_log !== undefined ||
              t.schedule?.verify !== undefined,
          )
          .map(([n]) => n),
        ...input.snapshots.map((s) => s.target),
        ...input.runs.flatMap((r) => (r.target === null ? [] : [r.target])),
        ...(input.changeLogs ?? []).map((c) => c.target),
        ...(input.unreadableLogs ?? []).map((c) => c.target),
        ...(input.captureFailures ?? []).map((c) => c.target),
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
  // By the moment of their data: a snapshot from the log of an earlier
  // moment, written last, is not the newest (and its age is its data's).
  const snaps = input.snapshots.filter((s) => s.target === target).sort(byDataTime);
  const exists = new Set(snaps.map((s) => s.id));
  const runs = input.runs.filter((r) => r.target === target);
  const of = (kind: RunKind): RunRecord[] => runs.filter((r) => r.kind === kind);
  const age = (iso: string): number => now - Date.parse(iso);
  const dataAge = (s: SnapshotSummary): number => now - dataTime(s);

  // Newest snapshot and its age.
  const newestSnap = snaps[snaps.length - 1];
  if (newestSnap === undefined) {
    add('critical', 'no-backup', `no backup of "${target}" in the repository`);
  } else {
    const a = dataAge(newestSnap);
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

  // Latest verdict of a verification per snapshot still in the repository
  // (one that could not run is the verify-error finding below).
  const latestVerify = new Map<string, RunRecord>();
  for (const r of of('verify'))
    if (r.snapshot !== null && exists.has(r.snapshot) && reachedVerdict(r))
      latestVerify.set(r.snapshot, r);
  // A snapshot using a chunk known bad since does not restore, whatever its verify said.
  const broken = damagedSnapshots(input.damage ?? new Map());
  const passed = snaps.filter((s) => latestVerify.get(s.id)?.ok === true && !broken.has(s.id));
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
    const a = dataAge(newestPassed);
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
  // The newest check of the repository: damage it found in what this target
  // restores from stays critical until a check passes again.
  const lastCheck = input.runs.filter((r) => r.kind === 'check').at(-1);
  if (lastCheck !== undefined && !lastCheck.ok && lastCheck.error?.code !== 'interrupted') {
    // (Chunks are judged over every run, below: a later check that did not
    // read them must not clear what one that read them found.)
    const problems = (lastCheck.problems ?? []).filter((p) => p.chunkId === undefined);
    const log = `changes/${runScope(target)}/`;
    const mine = problems.filter(
      (p) => p.snapshots?.some((id) => exists.has(id)) || p.object?.startsWith(log),
    );
    const unattributed = problems.filter(
      (p) => (p.snapshots?.length ?? 0) === 0 && !p.object?.startsWith('changes/'),
    );
    const first = mine[0] ?? unattributed[0];
    if (first !== undefined) {
      const n = mine.length > 0 ? mine.length : unattributed.length;
      add(
        mine.length > 0 ? 'critical' : 'warning',
        'check-failed',
        `the last check of the repository (${lastCheck.finishedAt}) found ${n} problem(s)${mine.length > 0 ? ` in what "${target}" restores from` : ''}: ${first.message}${n > 1 ? ` (and ${n - 1} more)` : ''}; run \`flashback check\``,
        mine[0]?.snapshots?.find((id) => exists.has(id)),
      );
    } else if (problems.length === 0 && lastCheck.error !== undefined) {
      add(
        'warning',
        'check-failed',
        `the last check of the repository (${lastCheck.finishedAt}) could not finish: ${lastCheck.error.message}`,
      );
    }
  }

  // Chunks known missing or damaged that this target's snapshots use.
  const hit = [...(input.damage?.values() ?? [])].filter((d) =>
    d.snapshots.some((id) => exists.has(id)),
  );
  if (hit.length > 0) {
    const first = hit[0]!;
    const using = new Set(hit.flatMap((d) => d.snapshots));
    const mine = snaps.filter((s) => using.has(s.id)).map((s) => s.id); // (oldest first)
    // Critical while the newest snapshot is among them (a restore of the
    // target fails); a warning once a newer one does not use them.
    const newestHit = newestSnap !== undefined && using.has(newestSnap.id);
    const it = hit.length === 1 ? 'it' : 'them';
    add(
      newestHit ? 'critical' : 'warning',
      'chunks-damaged',
      `${hit.length} chunk(s) found ${first.kind} (by ${first.foundBy} at ${first.foundAt}: ${first.message}${hit.length > 1 ? `; and ${hit.length - 1} more` : ''}) and not written again since: snapshot(s) ${mine.join(', ')} of "${target}" cannot be restored as they are${newestHit ? '' : ` (the newest, ${newestSnap!.id}, does not use ${it})`}; a backup writes ${it} again only if those rows are unchanged in the database; otherwise copy ${it} back from a copy of the repository, or let retention remove those snapshots. \`flashback check --read-data\` reads everything anew`,
      mine.at(-1),
    );
  }

  // A snapshot gone without prune removing it (a backup of this target committed it).
  for (const id of input.missing ?? []) {
    const by = input.runs.find((r) => r.kind === 'backup' && r.snapshot === id);
    if (by?.target !== target) continue;
    add(
      'critical',
      'snapshot-missing',
      `snapshot ${id} of "${target}", committed by the backup of ${by.finishedAt}, is gone from the repository and no prune removed it: copy snapshots/${id}.json back from a copy of the repository (\`flashback check\` then checks its chunks)`,
      id,
    );
  }

  // A manifest that cannot be read: its target is the one whose backup wrote it, if recorded.
  for (const u of input.unreadable ?? []) {
    const by = input.runs.find((r) => r.kind === 'backup' && r.snapshot === u.id)?.target;
    if (by !== undefined && by !== null && by !== target) continue;
    const which = `snapshot ${u.id}${by === target ? ` of "${target}"` : ''}`;
    if (u.damaged) {
      const why = u.message.replace(`snapshot ${u.id}: `, '');
      add(
        'critical',
        'snapshot-unreadable',
        `${which} cannot be restored: ${why}; run \`flashback check\``,
        u.id,
      );
    } else {
      const why = u.message.replace(`snapshot ${u.id} `, 'it ');
      add('warning', 'snapshot-unreadable', `${which} is left out: ${why}`, u.id);
    }
  }

  const failedVerifications: string[] = [];
  for (const s of snaps) {
    const v = latestVerify.get(s.id);
    if (v === undefined || v.ok) continue;
    if ((v.problems?.length ?? 0) === 0) continue; // could not run: below
    failedVerifications.push(s.id);
    const newerPassed = newestPassed !== undefined && byDataTime(newestPassed, s) > 0;
    add(
      newerPassed ? 'warning' : 'critical',
      'verify-failed',
      `snapshot ${s.id} of "${target}" FAILED verification at ${v.finishedAt}: ${v.problems![0]!.message}${v.problems!.length > 1 ? ` (and ${v.problems!.length - 1} more)` : ''}`,
      s.id,
    );
  }
  // (Not a scheduled verify that had nothing to do: it says nothing of the last one that ran.)
  const lastVerify = of('verify')
    .filter((r) => r.details?.nothing === undefined)
    .at(-1);
  if (lastVerify !== undefined && !lastVerify.ok && (lastVerify.problems?.length ?? 0) === 0) {
    add(
      'warning',
      'verify-error',
      `the last verification of "${target}" could not run (${lastVerify.finishedAt}): ${lastVerify.error?.message ?? 'unknown error'}`,
      lastVerify.snapshot ?? undefined,
    );
  }

  // A run record that cannot be read may be the failure that matters (a
  // garbled record of a failed backup made the status ok).
  for (const u of input.unreadableRuns ?? []) {
    if (u.scope !== runScope(target) && u.scope !== runScope(null)) continue;
    add(
      'warning',
      'run-unreadable',
      `the record of a ${u.kind} ${u.scope === runScope(null) ? 'of the repository ' : ''}started ${u.second.replace(/^(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)$/, '$1-$2-$3 $4:$5:$6Z')} (${u.key}) cannot be read: what it recorded, a failure perhaps, is not judged here; \`flashback check\` reports it, and removing it (once looked at) clears this`,
    );
  }

  // The change log cannot be read: no moment of it can be restored, and its
  // recovery point is unknown.
  for (const u of input.unreadableLogs ?? []) {
    if (u.target !== target) continue;
    add(
      u.damaged ? 'critical' : 'warning',
      'changelog-unreadable',
      `${u.message}${u.damaged ? '' : ' (status does not judge its recovery point)'}`,
    );
  }

  // The last prune of the target (its own, or of the whole repository)
  // failed: retention is not applied and the repository grows until one works.
  const lastPrune = input.runs
    .filter((r) => r.kind === 'prune' && (r.target === target || r.target === null))
    .at(-1);
  if (lastPrune !== undefined && !lastPrune.ok && lastPrune.error?.code !== 'interrupted') {
    add(
      'warning',
      'prune-failed',
      `the last prune of "${target}" FAILED at ${lastPrune.finishedAt}: ${lastPrune.error?.message ?? 'unknown error'}; old snapshots and chunks are kept until a prune succeeds`,
    );
  }

  // Backup attempts: the most recent one decides; count failures since the
  // last success. Direct backups and backups from the log are judged apart:
  // frequent snapshots from the log must not hide direct backups that keep
  // failing (the source's tables never read again), nor the other way round.
  const lastBackup = of('backup').at(-1);
  let failures = 0;
  for (const job of ['backup', 'backup_from_log'] as const) {
    const backups = runs.filter((r) => ranAs(r, job));
    const last = backups.at(-1);
    let failed = 0;
    for (let i = backups.length - 1; i >= 0 && !backups[i]!.ok; i--) failed++;
    if (job === 'backup') failures = failed;
    if (last !== undefined && !last.ok) {
      const interrupted = last.error?.code === 'interrupted';
      const killed = last.error?.code === 'killed';
      const lastGood = [...backups].reverse().find((r) => r.ok);
      const what = scheduleJobLabel(job);
      add(
        interrupted ? 'warning' : 'critical',
        'backup-failed',
        `the last ${what} of "${target}" ${interrupted ? 'was interrupted' : killed ? `was KILLED (last seen running at ${last.finishedAt})` : 'FAILED'}${killed ? '' : ` at ${last.finishedAt}`}: ${last.error?.message ?? 'unknown error'} (${failed} failed attempt(s) since ${lastGood === undefined ? 'the first' : `the last good ${what} at ${lastGood.finishedAt}`})`,
      );
    }
  }

  // Scheduled jobs that did not run.
  const schedule = input.config.targets[target]?.schedule ?? {};
  for (const job of SCHEDULE_JOBS) {
    const expr = schedule[job];
    if (expr === undefined) continue;
    const due = previousDue(expr, now - th.missedRunGrace, input.config.serve.timezone);
    if (due === undefined) continue;
    const jobRuns = input.runs.filter(
      (r) => ranAs(r, job) && (r.target === target || (job === 'prune' && r.target === null)),
    );
    // A job that never ran is a new schedule (or no scheduler yet): the
    // freshness findings speak for it. One that ran and then stopped is the
    // silent failure this finding is for.
    if (jobRuns.length === 0) continue;
    const ran = jobRuns.some((r) => Date.parse(r.startedAt) >= due - 60_000);
    if (!ran) {
      // A job still running (serve runs one at a time, and skips a job due
      // again while it is pending) is not a stopped scheduler: say what runs.
      // (Jobs serve runs: backups, prunes, and verify's restores.)
      const busy = (input.held ?? []).filter(
        (l) =>
          /^(backup|prune|restore) /.test(`${l.command} `) &&
          Date.parse(l.created) < due + th.missedRunGrace,
      );
      const why =
        busy.length === 0
          ? 'is `flashback serve` running?'
          : `running in the repository meanwhile: ${busy
              .slice(0, 3)
              .map((l) => `"${l.command}" (pid ${l.pid} on ${l.hostname}, since ${l.created})`)
              .join(
                ', ',
              )}${busy.length > 3 ? ` and ${busy.length - 3} more` : ''}; serve runs one job at a time, so a long job of its own delays the others (if none of these is serve's, is it running?)`;
      add(
        'warning',
        'missed-run',
        `scheduled ${scheduleJobLabel(job)} of "${target}" (${expr}) was due at ${new Date(due).toISOString()} and has not run: ${why}`,
      );
    }
  }

  // The change log: how far behind it is, and whether its slot is safe.
  const log = input.changeLogs?.find((c) => c.target === target);
  const failing = input.captureFailures?.find((c) => c.target === target);
  let changeLog: TargetStatus['changeLog'] = null;
  if (log !== undefined) {
    // Moments in the log can be restored only from a snapshot taken after
    // the log began: one taken before it (say, the first backup, with capture
    // started after) misses the changes in between. Without one, a restore
    // reaches only the newest snapshot, however fresh the log is.
    // A later log (after `capture --new-log`) continues only snapshots taken
    // since it began: one from before, even at a later LSN, may be of another
    // history (a standby promoted before it replayed the primary's last
    // transactions continues from an earlier LSN).
    const logStart = lsnValue(log.startLsn);
    const joined = snaps.filter(
      (s) => lsnValue(s.lsn) >= logStart && (log.number === 1 || begunBy(log.created, s.startedAt)),
    );
    // (No snapshot at all: the no-backup finding says what is wrong; the log
    // is still judged, so that a stopped capture is found meanwhile.)
    const unjoined = joined.length === 0 ? newestSnap : undefined;
    const a = age(unjoined?.startedAt ?? log.newestAt ?? log.created);
    const limitOf = (level: 'warning' | 'critical') =>
      formatDuration(level === 'critical' ? th.recoveryPointCritical : th.recoveryPointWarning);
    const level =
      a > th.recoveryPointCritical
        ? 'critical'
        : a > th.recoveryPointWarning
          ? 'warning'
          : undefined;
    if (unjoined !== undefined) {
      add(
        level ?? 'warning',
        'log-unjoined',
        `no snapshot of "${target}" was taken since its change log began at ${log.created} (${log.startLsn}): a restore reaches only the newest snapshot, ${unjoined.id} (${formatDuration(a)} old${level === undefined ? '' : `, ${level} above ${limitOf(level)}`}), not any moment of the log; take one while capture runs: \`flashback backup ${target}\``,
        unjoined.id,
      );
    } else if (level !== undefined) {
      const limit = limitOf(level);
      add(
        level,
        'recovery-point',
        log.newestAt === undefined
          ? `nothing is stored in the change log of "${target}" since it began at ${log.created}, ${formatDuration(a)} ago (${level} above ${limit}): is capture running?`
          : `the change log of "${target}" is ${formatDuration(a)} behind: its newest stored change or heartbeat is from ${log.newestAt} (${level} above ${limit}); is capture running?`,
      );
    }
    const slot = log.slot;
    let state: SlotState | null = null;
    if (slot !== undefined && 'missing' in slot) {
      add(
        'critical',
        'slot-missing',
        `the change log of "${target}" continues from a replication slot that no longer exists on the server: capture cannot resume, and changes after ${log.committed ?? 'its start'} are not in the log; begin a new one (\`flashback capture ${target} --new-log\`) and take a backup`,
      );
    } else if (slot !== undefined && 'error' in slot) {
      add(
        'warning',
        'slot-unchecked',
        `could not check the replication slot of "${target}": ${slot.error}`,
      );
    } else if (slot !== undefined) {
      state = slot;
      const stored: SlotLog | undefined =
        log.dir === undefined
          ? undefined
          : {
              end: lsnValue(log.committed ?? log.startLsn),
              ackSince: log.ackSince === undefined ? undefined : lsnValue(log.ackSince),
              dir: log.dir,
            };
      for (const p of judgeSlot(target, slot, input.config.capture.max_retained_wal, stored)) {
        // While serve retries a failed capture, capture-failed says why nobody reads the slot.
        if (p.kind === 'slot-inactive' && failing !== undefined) continue;
        add(p.severity, p.kind, `${p.message}; ${p.fix}`);
      }
    }
    // The log a restore to now reads first: from the snapshot with the newest LSN.
    const base = joined.reduce<SnapshotSummary | undefined>(
      (x, s) => (x === undefined || lsnValue(s.lsn) > lsnValue(x.lsn) ? s : x),
      undefined,
    );
    const baseLsn = base === undefined ? undefined : lsnValue(base.lsn);
    const bytesSinceSnapshot =
      baseLsn === undefined
        ? null
        : log.segmentSizes.filter((s) => s.committed > baseLsn).reduce((x, s) => x + s.size, 0);
    if (bytesSinceSnapshot !== null && bytesSinceSnapshot > th.logSinceSnapshotWarning) {
      add(
        'warning',
        'log-since-snapshot',
        `restoring "${target}" to a moment now reads ${formatSize(bytesSinceSnapshot)} of change log stored since its newest snapshot ${base!.id} (${formatDuration(dataAge(base!))} ago) before it can begin (warning above ${formatSize(th.logSinceSnapshotWarning)}); snapshots from the log bound it: schedule backup_from_log, or run \`flashback backup ${target} --from-log\``,
        base!.id,
      );
    }
    changeLog = {
      newestAt: log.newestAt ?? null,
      recoveryPointSeconds: Math.round(a / 1000),
      joined: unjoined === undefined,
      committed: log.committed ?? null,
      slot: state,
      bytesSinceSnapshot,
    };
  }
  if (failing !== undefined) {
    const a = age(failing.since);
    add(
      a > th.recoveryPointCritical ? 'critical' : 'warning',
      'capture-failed',
      `capture of "${target}" failed ${failing.failures} time(s) since ${failing.since} and is being retried: ${failing.message}`,
    );
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
            at: newestSnap.consistentAt ?? newestSnap.startedAt,
            ageSeconds: Math.round(dataAge(newestSnap) / 1000),
          },
    newestVerified:
      newestPassed === undefined
        ? null
        : {
            id: newestPassed.id,
            at: newestPassed.consistentAt ?? newestPassed.startedAt,
            ageSeconds: Math.round(dataAge(newestPassed) / 1000),
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
    changeLog,
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

/** Whether a run is one of scheduled `job`: backups from the log are backup runs marked `mode: from-log`. */
export function ranAs(r: RunRecord, job: ScheduleJob): boolean {
  const fromLog = r.details?.mode === 'from-log' || r.details?.fromLog !== undefined;
  if (job === 'backup_from_log') return r.kind === 'backup' && fromLog;
  if (job === 'backup') return r.kind === 'backup' && !fromLog;
  return r.kind === job;
}
