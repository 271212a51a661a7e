import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config/load.js';
import type { RunRecord } from '../repo/runs.js';
import { evaluateStatus, previousDue } from './status.js';

const NOW = new Date('2026-11-21T12:00:00.000Z');
const hoursAgo = (h: number): string => new Date(NOW.getTime() - h * 3_600_000).toISOString();

function snap(id: string, h: number) {
  return { id, target: 'prod', startedAt: hoursAgo(h) };
}

function run(
  kind: RunRecord['kind'],
  h: number,
  ok: boolean,
  extra: Partial<RunRecord> = {},
): RunRecord {
  return {
    format: 'flashback-run',
    version: 1,
    id: `${kind}-${h}-${ok}`,
    kind,
    target: 'prod',
    snapshot: null,
    ok,
    trigger: 'schedule',
    startedAt: hoursAgo(h),
    finishedAt: hoursAgo(h),
    seconds: 1,
    ...extra,
  };
}

const config = parseConfig('targets:\n  prod:\n    database: app\n', undefined);

describe('status evaluation', () => {
  it('is ok with a fresh, verified backup and no failures', () => {
    const r = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 2)],
      runs: [
        run('backup', 2, true, { snapshot: 's1' }),
        run('verify', 1, true, { snapshot: 's1' }),
      ],
    });
    expect(r.severity).toBe('ok');
    expect(r.targets[0]!.findings).toEqual([]);
    expect(r.targets[0]!.newestVerified?.id).toBe('s1');
    expect(r.targets[0]!.newestVerified?.ageSeconds).toBe(7200);
  });

  it('is critical without any verified backup, and when the newest verified is older than 26 h', () => {
    const unverified = evaluateStatus({ now: NOW, config, snapshots: [snap('s1', 1)], runs: [] });
    expect(unverified.severity).toBe('critical');
    expect(unverified.targets[0]!.findings.map((f) => f.kind)).toEqual(['no-verified']);

    const old = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 27), snap('s2', 1)],
      runs: [run('verify', 26.5, true, { snapshot: 's1' })],
    });
    expect(old.severity).toBe('critical');
    expect(old.targets[0]!.findings.map((f) => f.kind)).toEqual(['verified-age']);
    expect(old.targets[0]!.findings[0]!.message).toContain('1d 3h old');
  });

  it('warns between the thresholds; thresholds come from the config', () => {
    const c = parseConfig(
      'freshness:\n  backup_warning: 1h\n  backup_critical: 3h\ntargets:\n  prod:\n    database: app\n    freshness:\n      verified_warning: 30m\n',
      undefined,
    );
    const r = evaluateStatus({
      now: NOW,
      config: c,
      snapshots: [snap('s1', 2)],
      runs: [run('verify', 1, true, { snapshot: 's1' })],
    });
    expect(r.severity).toBe('warning');
    expect(r.targets[0]!.findings.map((f) => f.kind).sort()).toEqual([
      'backup-age',
      'verified-age',
    ]);
  });

  it('is critical when the last backup attempt failed, counting failures since the last good one', () => {
    const r = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 3)],
      runs: [
        run('backup', 3, true, { snapshot: 's1' }),
        run('verify', 2.9, true, { snapshot: 's1' }),
        run('backup', 2, false, {
          error: { code: 'target.unreachable', message: 'connection refused' },
        }),
        run('backup', 1, false, {
          error: { code: 'target.unreachable', message: 'connection refused' },
        }),
      ],
    });
    expect(r.severity).toBe('critical');
    const t = r.targets[0]!;
    expect(t.backupFailures).toBe(2);
    expect(t.findings[0]!.kind).toBe('backup-failed');
    expect(t.findings[0]!.message).toContain('connection refused');
    expect(t.findings[0]!.message).toContain('2 failed attempt(s)');
  });

  it('an interrupted backup is a warning; a later success clears both', () => {
    const interrupted = [run('backup', 2, false, { error: { code: 'interrupted', message: 'x' } })];
    const base = { now: NOW, config, snapshots: [snap('s1', 3)] };
    const verified = run('verify', 2.9, true, { snapshot: 's1' });
    expect(evaluateStatus({ ...base, runs: [verified, ...interrupted] }).severity).toBe('warning');
    expect(
      evaluateStatus({ ...base, runs: [verified, ...interrupted, run('backup', 1, true)] })
        .severity,
    ).toBe('ok');
  });

  it('a snapshot that failed verification is critical, a warning once a newer one passed', () => {
    const failed = run('verify', 2, false, {
      snapshot: 's1',
      problems: [{ table: 'public.t', chunk: 3, message: 'chunk 4 of 9 is damaged' }],
    });
    const r = evaluateStatus({ now: NOW, config, snapshots: [snap('s1', 3)], runs: [failed] });
    expect(r.severity).toBe('critical');
    const f = r.targets[0]!.findings.find((x) => x.kind === 'verify-failed')!;
    expect(f.snapshot).toBe('s1');
    expect(f.message).toContain('chunk 4 of 9 is damaged');

    const later = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 3), snap('s2', 1)],
      runs: [failed, run('verify', 0.5, true, { snapshot: 's2' })],
    });
    expect(later.severity).toBe('warning');
    expect(later.targets[0]!.failedVerifications).toEqual(['s1']);
  });

  it('a scheduled job that did not run is a finding; one that ran is not', () => {
    const c = parseConfig(
      'targets:\n  prod:\n    database: app\n    schedule:\n      backup: "0 * * * *"\n',
      undefined,
    );
    const base = { now: NOW, config: c, snapshots: [snap('s1', 0.5)] };
    const verified = run('verify', 0.4, true, { snapshot: 's1' });
    // Due at 11:00 (the 12:00 run is within the 30 min grace); the last run was at 09:30.
    const missed = evaluateStatus({ ...base, runs: [verified, run('backup', 2.5, true)] });
    expect(missed.targets[0]!.findings.map((f) => f.kind)).toEqual(['missed-run']);
    expect(missed.targets[0]!.findings[0]!.message).toContain('2026-11-21T11:00:00.000Z');
    const ran = evaluateStatus({ ...base, runs: [verified, run('backup', 0.99, true)] });
    expect(ran.severity).toBe('ok');
    // Never ran at all: a new schedule, not a stopped scheduler.
    const fresh = evaluateStatus({ ...base, runs: [verified] });
    expect(fresh.targets[0]!.findings).toEqual([]);
  });

  it('lists scheduled targets without snapshots as critical, and nothing for unused targets', () => {
    const c = parseConfig(
      'targets:\n  prod:\n    database: app\n    schedule:\n      backup: "0 2 * * *"\n  scratch:\n    database: s\n',
      undefined,
    );
    const r = evaluateStatus({ now: NOW, config: c, snapshots: [], runs: [] });
    expect(r.targets.map((t) => t.target)).toEqual(['prod']);
    expect(r.targets[0]!.findings.map((f) => f.kind)).toContain('no-backup');
  });

  it('finds when a cron expression was last due', () => {
    expect(new Date(previousDue('0 2 * * *', NOW.getTime(), 'UTC')!).toISOString()).toBe(
      '2026-11-21T02:00:00.000Z',
    );
  });
});
