import { describe, expect, it } from 'vitest';
import type { RetentionConfig } from '../config/schema.js';
import { ExitCode, UsageError } from '../errors.js';
import {
  describePolicy,
  isoWeek,
  NO_POLICY_REASON,
  type PolicySnapshot,
  planRetention,
  type RetentionPlan,
} from './policy.js';

/** A snapshot at an ISO time (UTC), with an id derived from it as backup names them. */
function snap(time: string, suffix = '0000'): PolicySnapshot {
  const t = new Date(time).toISOString();
  const id = `${t.replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}-${suffix}`;
  return { id, time: t };
}

function plan(
  snapshots: readonly PolicySnapshot[],
  policy: RetentionConfig,
  options: { now?: string; verified?: readonly string[] } = {},
): RetentionPlan {
  return planRetention({
    target: 'prod',
    snapshots,
    policy,
    now: new Date(options.now ?? '2026-12-01T00:00:00Z'),
    verified: new Set(options.verified ?? []),
  });
}

/** id → reasons of the kept snapshots; removed ones are absent. */
function kept(p: RetentionPlan): Record<string, string[]> {
  return Object.fromEntries(p.decisions.filter((d) => d.keep).map((d) => [d.id, [...d.reasons]]));
}

const H = 3_600_000;
const D = 24 * H;

describe('retention policy', () => {
  it('keep_last keeps the N newest, whatever order they come in', () => {
    const s = ['2026-11-01T10:00Z', '2026-11-02T10:00Z', '2026-11-03T10:00Z', '2026-11-04T10:00Z'];
    const snaps = s.map((t) => snap(t));
    const p = plan([snaps[2]!, snaps[0]!, snaps[3]!, snaps[1]!], { keep_last: 2 });
    expect(p.decisions.map((d) => d.id)).toEqual(snaps.map((x) => x.id)); // oldest first
    expect(p.decisions.map((d) => d.keep)).toEqual([false, false, true, true]);
    expect(kept(p)).toEqual({ [snaps[2]!.id]: ['last 2'], [snaps[3]!.id]: ['last 2'] });
    expect(p.decisions[0]!.reasons).toEqual([]);
  });

  it('keep_daily keeps the newest of each of the N most recent days that have a snapshot (UTC)', () => {
    const snaps = [
      snap('2026-11-01T08:00Z'), // a day beyond the 3 most recent ones
      snap('2026-11-10T01:00Z'),
      snap('2026-11-10T23:59Z'), // newest of Nov 10
      // Nov 11–19: no snapshots; days without one do not use up the count.
      snap('2026-11-20T00:00Z'),
      snap('2026-11-20T12:00Z'),
      snap('2026-11-20T12:30Z'), // newest of Nov 20
      snap('2026-11-21T00:30Z'), // 30 min after the previous day's: another UTC day
    ];
    const p = plan(snaps, { keep_daily: 3 });
    expect(kept(p)).toEqual({
      [snaps[2]!.id]: ['daily 2026-11-10'],
      [snaps[5]!.id]: ['daily 2026-11-20'],
      [snaps[6]!.id]: ['daily 2026-11-21'],
    });
  });

  it('keep_hourly, keep_monthly and keep_yearly bucket by UTC hour, month and year', () => {
    const snaps = [
      snap('2024-06-01T00:00Z'),
      snap('2025-03-01T00:00Z'),
      snap('2025-12-31T23:00Z'),
      snap('2026-10-05T00:00Z'),
      snap('2026-11-30T10:05Z'),
      snap('2026-11-30T10:55Z'),
      snap('2026-11-30T11:10Z'),
    ];
    expect(kept(plan(snaps, { keep_hourly: 2 }))).toEqual({
      [snaps[5]!.id]: ['hourly 2026-11-30T10'],
      [snaps[6]!.id]: ['hourly 2026-11-30T11'],
    });
    expect(kept(plan(snaps, { keep_monthly: 3 }))).toEqual({
      [snaps[2]!.id]: ['monthly 2025-12'],
      [snaps[3]!.id]: ['monthly 2026-10'],
      [snaps[6]!.id]: ['monthly 2026-11'],
    });
    expect(kept(plan(snaps, { keep_yearly: 5 }))).toEqual({
      [snaps[0]!.id]: ['yearly 2024'],
      [snaps[2]!.id]: ['yearly 2025'],
      [snaps[6]!.id]: ['yearly 2026'],
    });
  });

  it('keep_weekly uses ISO weeks (Monday to Sunday; the year of the Thursday)', () => {
    expect(isoWeek(new Date('2026-01-01T12:00Z'))).toBe('2026-W01'); // a Thursday
    expect(isoWeek(new Date('2027-01-01T12:00Z'))).toBe('2026-W53'); // Friday of 2026's last week
    expect(isoWeek(new Date('2024-12-30T00:00Z'))).toBe('2025-W01'); // Monday, week 1 of 2025
    expect(isoWeek(new Date('2021-01-03T23:59Z'))).toBe('2020-W53'); // Sunday
    expect(isoWeek(new Date('2026-11-23T00:00Z'))).toBe('2026-W48');
    const snaps = [
      snap('2026-11-08T12:00Z'), // Sunday, W45
      snap('2026-11-09T12:00Z'), // Monday, W46
      snap('2026-11-15T23:00Z'), // Sunday, W46: newest of W46
      snap('2026-11-16T00:00Z'), // Monday, W47
    ];
    expect(kept(plan(snaps, { keep_weekly: 2 }))).toEqual({
      [snaps[2]!.id]: ['weekly 2026-W46'],
      [snaps[3]!.id]: ['weekly 2026-W47'],
    });
  });

  it('keep_within keeps everything newer than now minus the duration', () => {
    const now = '2026-12-01T00:00:00Z';
    const snaps = [
      snap('2026-11-28T23:00Z'), // 49 h before now
      snap('2026-11-29T01:00Z'), // 47 h before now
      snap('2026-11-30T23:00Z'),
    ];
    expect(kept(plan(snaps, { keep_within: 2 * D }, { now }))).toEqual({
      [snaps[1]!.id]: ['within 2d'],
      [snaps[2]!.id]: ['within 2d'],
    });
  });

  it('keeps the newest snapshot when no rule does: keep_within never empties a target whose backups stopped', () => {
    const now = '2026-12-01T00:00:00Z';
    const snaps = [snap('2026-11-20T10:00Z'), snap('2026-11-21T10:00Z'), snap('2026-11-22T10:00Z')];
    expect(kept(plan(snaps, { keep_within: 2 * D }, { now }))).toEqual({
      [snaps[2]!.id]: ['newest'],
    });
  });

  it('keeps what any rule keeps, listing every reason', () => {
    const snaps = [
      snap('2026-11-18T10:00Z'),
      snap('2026-11-19T10:00Z'),
      snap('2026-11-20T09:00Z'),
      snap('2026-11-20T10:00Z'),
    ];
    const p = plan(snaps, { keep_last: 1, keep_daily: 2, keep_monthly: 1 });
    expect(kept(p)).toEqual({
      [snaps[1]!.id]: ['daily 2026-11-19'],
      [snaps[3]!.id]: ['last 1', 'daily 2026-11-20', 'monthly 2026-11'],
    });
  });

  it('always keeps the newest snapshot whose latest verification passed', () => {
    const snaps = [
      snap('2026-11-01T10:00Z'),
      snap('2026-11-02T10:00Z'),
      snap('2026-11-03T10:00Z'),
      snap('2026-11-04T10:00Z'),
    ];
    // Two verified ones, both outside keep_last: only the newer is kept for it.
    const p = plan(snaps, { keep_last: 1 }, { verified: [snaps[0]!.id, snaps[1]!.id, 'other'] });
    expect(kept(p)).toEqual({
      [snaps[1]!.id]: ['newest verified'],
      [snaps[3]!.id]: ['last 1'],
    });
    // Kept by the policy anyway: the reason is added, nothing else is kept.
    const q = plan(snaps, { keep_last: 2 }, { verified: [snaps[0]!.id, snaps[3]!.id] });
    expect(kept(q)).toEqual({
      [snaps[2]!.id]: ['last 2'],
      [snaps[3]!.id]: ['last 2', 'newest verified'],
    });
  });

  it('removes nothing for a target without a policy, and says so', () => {
    const snaps = [snap('2020-01-01T00:00Z'), snap('2026-11-30T00:00Z')];
    const p = plan(snaps, {});
    expect(p.policy).toBeNull();
    expect(p.decisions.every((d) => d.keep && d.reasons[0] === NO_POLICY_REASON)).toBe(true);
  });

  it('refuses a policy that keeps nothing', () => {
    const err = (() => {
      try {
        plan([snap('2026-11-30T00:00Z')], { keep_daily: 0, keep_weekly: 0 });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(ExitCode.usage);
    expect((err as Error).message).toBe(
      'the retention policy of target "prod" keeps nothing (keep_daily 0, keep_weekly 0): prune would remove every snapshot',
    );
    expect((err as UsageError).hint).toContain('keep_last: 7');
  });

  it('keeps a snapshot whose time cannot be read', () => {
    const bad = { id: '20261101-000000-beef', time: 'garbage' };
    const good = snap('2026-11-30T00:00Z');
    expect(kept(plan([bad, good], { keep_last: 1 }))).toEqual({
      [bad.id]: ['unreadable time'],
      [good.id]: ['last 1'],
    });
  });

  it('describes a policy as written', () => {
    expect(describePolicy({ keep_last: 3, keep_within: 36 * H })).toBe(
      'keep_last 3, keep_within 1d 12h',
    );
    expect(describePolicy({})).toBe('none');
  });
});
