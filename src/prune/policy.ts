/**
 * Retention policy evaluation: which snapshots of one target a policy keeps,
 * and why. Pure: the result is plain data that `prune --dry-run` prints and
 * tests assert on; nothing here reads or deletes anything.
 *
 * Semantics follow restic's `forget`. Snapshots are walked newest first;
 * `keep_last N` keeps the N newest; `keep_daily N` keeps the newest snapshot
 * of each of the N most recent days (UTC) that have one, and likewise hourly,
 * weekly (ISO week), monthly and yearly; `keep_within D` keeps everything
 * newer than now − D. A snapshot kept by any rule stays. On top of the
 * policy, the newest snapshot, and the newest whose latest verification
 * passed, are always kept, so a prune can never leave a target without a
 * snapshot, nor without its proven restore point.
 */
import { formatDuration } from '../config/duration.js';
import type { RetentionConfig } from '../config/schema.js';
import { UsageError } from '../errors.js';

/** What the policy needs to know about a snapshot. */
export interface PolicySnapshot {
  readonly id: string;
  /** The snapshot's time (its start, the consistent point), ISO 8601. */
  readonly time: string;
}

/** The decision for one snapshot. */
export interface SnapshotDecision {
  readonly id: string;
  readonly time: string;
  readonly keep: boolean;
  /** Why it is kept (every rule that keeps it); empty when it is removed. */
  readonly reasons: readonly string[];
}

/** The decisions for one target's snapshots, oldest first. */
export interface RetentionPlan {
  readonly target: string;
  /** The policy applied; null when the target has none (then every snapshot is kept). */
  readonly policy: RetentionConfig | null;
  readonly decisions: readonly SnapshotDecision[];
}

/** Input of `planRetention`. */
export interface RetentionInput {
  readonly target: string;
  /** The target's snapshots, in any order. */
  readonly snapshots: readonly PolicySnapshot[];
  /** The target's policy as configured (`retentionFor`). */
  readonly policy: RetentionConfig;
  readonly now: Date;
  /** Ids of snapshots whose latest verification passed (of any target). */
  readonly verified: ReadonlySet<string>;
}

/** The reason given for every snapshot of a target without a policy. */
export const NO_POLICY_REASON = 'no retention policy';

type BucketRule = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

/** Bucket rules in the order reasons are listed; each maps a UTC time to its period. */
const BUCKETS: ReadonlyArray<readonly [BucketRule, keyof RetentionConfig, (d: Date) => string]> = [
  ['hourly', 'keep_hourly', (d) => d.toISOString().slice(0, 13)],
  ['daily', 'keep_daily', (d) => d.toISOString().slice(0, 10)],
  ['weekly', 'keep_weekly', isoWeek],
  ['monthly', 'keep_monthly', (d) => d.toISOString().slice(0, 7)],
  ['yearly', 'keep_yearly', (d) => d.toISOString().slice(0, 4)],
];

/** True when at least one retention key is set. */
export function hasPolicy(policy: RetentionConfig): boolean {
  return Object.values(policy).some((v) => v !== undefined);
}

/** The policy as written, for messages: `keep_last 3, keep_daily 7, keep_within 2d`. */
export function describePolicy(policy: RetentionConfig): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(policy)) {
    if (value === undefined) continue;
    parts.push(`${key} ${key === 'keep_within' ? formatDuration(value) : value}`);
  }
  return parts.length === 0 ? 'none' : parts.join(', ');
}

/**
 * Decides keep or remove for each snapshot of one target. A target without a
 * policy keeps everything (a missing policy must never mean "delete all");
 * a policy whose every key is 0 is refused with a UsageError, because it
 * would remove every snapshot and is almost certainly a mistake.
 */
export function planRetention(input: RetentionInput): RetentionPlan {
  const { target, policy } = input;
  const oldestFirst = [...input.snapshots].sort(compareOldestFirst);
  if (!hasPolicy(policy)) {
    return {
      target,
      policy: null,
      decisions: oldestFirst.map((s) => ({
        id: s.id,
        time: s.time,
        keep: true,
        reasons: [NO_POLICY_REASON],
      })),
    };
  }
  if (Object.values(policy).every((v) => v === undefined || v === 0)) {
    throw new UsageError(
      `the retention policy of target "${target}" keeps nothing (${describePolicy(policy)}): prune would remove every snapshot`,
      {
        hint: 'set at least one keep_* key above 0 (e.g. keep_last: 7) in flashback.yaml; see docs/CONFIG.md',
      },
    );
  }

  const reasons = new Map<string, string[]>(input.snapshots.map((s) => [s.id, []]));
  const keep = (id: string, reason: string): void => {
    reasons.get(id)!.push(reason);
  };
  const newestFirst = [...oldestFirst].reverse();
  const now = input.now.getTime();

  let lastLeft = policy.keep_last ?? 0;
  const bucketsLeft = BUCKETS.map(([, key]) => (policy[key] as number | undefined) ?? 0);
  const lastBucket: Array<string | undefined> = BUCKETS.map(() => undefined);
  for (const s of newestFirst) {
    const t = Date.parse(s.time);
    if (Number.isNaN(t)) {
      // No rule can place it in time; keeping it is the only safe choice.
      keep(s.id, 'unreadable time');
      continue;
    }
    if (lastLeft > 0) {
      keep(s.id, `last ${policy.keep_last}`);
      lastLeft--;
    }
    const date = new Date(t);
    for (let i = 0; i < BUCKETS.length; i++) {
      const [rule, , bucketOf] = BUCKETS[i]!;
      const bucket = bucketOf(date);
      // Newest first, so the first snapshot seen in a period is its newest.
      if (bucketsLeft[i]! <= 0 || bucket === lastBucket[i]) continue;
      lastBucket[i] = bucket;
      bucketsLeft[i]!--;
      keep(s.id, `${rule} ${bucket}`);
    }
    if (policy.keep_within !== undefined && t > now - policy.keep_within) {
      keep(s.id, `within ${formatDuration(policy.keep_within)}`);
    }
  }

  const newestVerified = newestFirst.find((s) => input.verified.has(s.id));
  if (newestVerified !== undefined) keep(newestVerified.id, 'newest verified');
  // The newest snapshot stays whatever the policy says: `keep_within`
  // counts back from now, so after backups failed for longer than it (or
  // with nothing verified yet) it would otherwise leave the target with
  // no snapshot at all.
  const newest = newestFirst[0];
  if (newest !== undefined && reasons.get(newest.id)!.length === 0) keep(newest.id, 'newest');

  return {
    target,
    policy,
    decisions: oldestFirst.map((s) => {
      const why = reasons.get(s.id)!;
      return { id: s.id, time: s.time, keep: why.length > 0, reasons: why };
    }),
  };
}

/** ISO 8601 week of a UTC time, e.g. `2026-W47` (weeks start on Monday; week 1 holds the first Thursday). */
export function isoWeek(d: Date): string {
  const day = d.getUTCDay() === 0 ? 7 : d.getUTCDay();
  // The Thursday of the same week decides the week's year.
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 4 - day);
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * 86_400_000)) + 1;
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** By time, then id (ids start with the UTC time, so they order snapshots whose time is unreadable too). */
function compareOldestFirst(a: PolicySnapshot, b: PolicySnapshot): number {
  const ta = Date.parse(a.time);
  const tb = Date.parse(b.time);
  if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
