/**
 * A target's change logs, in the order they were begun.
 *
 * A log is the changes of one replication slot. When the slot is gone (a
 * failover to a standby, which does not carry logical slots; WAL removed
 * under `max_slot_wal_keep_size`; a slot dropped by hand), the log cannot
 * continue without a gap, and `capture --new-log` begins the next one. The
 * old log stays, readable for the moments it covers: log 1 in
 * `changes/<scope>/`, log n in `changes/<scope>.<n>/` (docs/REPOSITORY.md,
 * "Change log").
 *
 * Two logs of one target can cover overlapping LSNs that are not the same
 * history: a standby promoted before it replayed the primary's last
 * transactions continues from an earlier LSN than the old log ends at. So a
 * snapshot belongs to the log that was current when it was taken (by
 * Flashback's clock: its `startedAt` against each log's `created`), never
 * to a log by its LSN alone; and a snapshot of the old log past that log's
 * end (taken after capture stopped, perhaps on the promoted server) belongs
 * to none.
 *
 * Contract: `targetLogs` reads one `capture.json` per log (plus one probe),
 * never lists segments; the rest is pure.
 */

import type { Storage } from '../storage/storage.js';
import { type CaptureInfo, ChangeLog, lsnValue } from './changelog.js';

/** One of a target's change logs with its description. */
export interface TargetLog {
  readonly log: ChangeLog;
  readonly info: CaptureInfo;
}

/** The target's change logs, oldest first; empty when capture never began one. */
export async function targetLogs(storage: Storage, scope: string): Promise<TargetLog[]> {
  const out: TargetLog[] = [];
  for (let n = 1; ; n++) {
    const log = new ChangeLog(storage, scope, n);
    const info = await log.info();
    if (info === undefined) return out;
    out.push({ log, info });
  }
}

/** The newest of the target's logs, or undefined when it has none. */
export async function newestLog(storage: Storage, scope: string): Promise<TargetLog | undefined> {
  return (await targetLogs(storage, scope)).at(-1);
}

/** What of a snapshot decides its log. */
export interface SnapshotTimes {
  readonly lsn: string;
  readonly startedAt: string;
}

/**
 * The index in `logs` of the log current when the snapshot was taken, or
 * undefined when it belongs to none: taken under an older log but past that
 * log's end (`previousEnd` of the next). Whether the log continues the
 * snapshot (its LSN at or after the log's start) is the caller's question.
 */
export function logOfSnapshot(logs: readonly TargetLog[], m: SnapshotTimes): number | undefined {
  if (logs.length === 0) return undefined;
  const k = logForTime(logs, m.startedAt);
  const next = logs[k + 1];
  if (next?.info.previousEnd !== undefined && lsnValue(m.lsn) > lsnValue(next.info.previousEnd)) {
    return undefined;
  }
  return k;
}

/** The snapshots of `manifests` taken under log `k` of `logs` (all of them when the target has one log or none). */
export function snapshotsOfLog<M extends SnapshotTimes>(
  logs: readonly TargetLog[],
  k: number,
  manifests: readonly M[],
): M[] {
  if (logs.length <= 1) return [...manifests];
  return manifests.filter((m) => logOfSnapshot(logs, m) === k);
}

/**
 * The log that holds a moment (an ISO time): the newest begun at or before
 * it. A moment after an older log's end and before the next log's start is
 * in the older one's span here; reading it finds the log short of it.
 */
export function logForTime(logs: readonly TargetLog[], at: string): number {
  let k = 0;
  for (let i = 1; i < logs.length; i++) if (begunBy(logs[i]!.info.created, at)) k = i;
  return k;
}

/**
 * Whether a log created at `created` (capture.json) had begun by `at`: a
 * snapshot taken then is under it (or a later log), a moment then is in it.
 */
export function begunBy(created: string, at: string): boolean {
  return Date.parse(at) >= Date.parse(created);
}

/**
 * The log that holds an LSN: the newest whose start (the slot's consistent
 * point) is at or before it (the first log for one before every start). An
 * LSN past that log's end and before the next one begins is in no log:
 * `gapAfter` names that log.
 */
export function logForLsn(
  logs: readonly TargetLog[],
  lsn: bigint,
): { readonly log: number } | { readonly gapAfter: number } {
  let k = 0;
  for (let i = 1; i < logs.length; i++) {
    const info = logs[i]!.info;
    if (lsn >= lsnValue(info.originLsn ?? info.startLsn)) k = i;
  }
  const next = logs[k + 1];
  if (next?.info.previousEnd !== undefined && lsn > lsnValue(next.info.previousEnd)) {
    return { gapAfter: k };
  }
  return { log: k };
}

/** Names the gap between log `k` and the next, for messages: "log 1 ends at 0/5000 and log 2 begins at 0/6000 (2026-…)". */
export function gapBetween(logs: readonly TargetLog[], k: number): string {
  const next = logs[k + 1]!;
  return `log ${k + 1} ends at ${next.info.previousEnd ?? 'its last segment'} and log ${k + 2} begins at ${next.info.originLsn ?? next.info.startLsn} (${next.info.created})`;
}
