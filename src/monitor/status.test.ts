import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config/load.js';
import type { RunRecord } from '../repo/runs.js';
import { AlertTracker } from './alerts.js';
import type { ChangeLogFacts } from './changelog-facts.js';
import { Metrics } from './metrics.js';
import {
  evaluateStatus,
  killedRuns,
  missingSnapshots,
  previousDue,
  unreadableStatus,
} from './status.js';

const NOW = new Date('2026-11-21T12:00:00.000Z');
const hoursAgo = (h: number): string => new Date(NOW.getTime() - h * 3_600_000).toISOString();

/** A snapshot taken `h` hours ago; later ones have later LSNs (0/3000000 one hour ago). */
function snap(id: string, h: number) {
  const lsn = `0/${Math.round((4 - h) * 0x1000000)
    .toString(16)
    .toUpperCase()}`;
  return { id, target: 'prod', startedAt: hoursAgo(h), lsn };
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
  it('a scheduled verify that had nothing to do does not hide the one before that could not run', () => {
    const runs = [
      run('backup', 3, true, { snapshot: 's1' }),
      run('verify', 2, true, { snapshot: 's1' }),
      run('backup', 1.5, true, { snapshot: 's2' }),
      run('verify', 1, false, {
        snapshot: 's2',
        error: { code: 'verify.scratch', message: 'the scratch server did not start' },
      }),
      run('verify', 0.5, true, { details: { nothing: 'the newest snapshot is verified' } }),
    ];
    const r = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 3), snap('s2', 1.5)],
      runs,
    });
    expect(r.targets[0]!.findings.map((f) => f.kind)).toContain('verify-error');
  });

  it('a verification that could not run does not hide the pass before it (verified, with a verify-error warning)', () => {
    const r = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 3)],
      runs: [
        run('backup', 3, true, { snapshot: 's1' }),
        run('verify', 2, true, { snapshot: 's1' }),
        run('verify', 1, false, {
          snapshot: 's1',
          error: { code: 'interrupted', message: 'restore interrupted' },
        }),
      ],
    });
    const kinds = r.targets[0]!.findings.map((f) => f.kind);
    expect(kinds).toContain('verify-error');
    expect(kinds).not.toContain('no-verified');
  });

  it('an unreadable repository makes every target critical and keeps the findings last seen (recovery re-sends none)', () => {
    const before = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 30)],
      runs: [run('backup', 30, true, { snapshot: 's1' })],
    });
    const seen = before.targets[0]!.findings.map((f) => f.kind);
    expect(seen).toContain('backup-age');
    const r = unreadableStatus(config, before, 'EACCES: permission denied', NOW);
    expect(r.severity).toBe('critical');
    expect(r.targets[0]!.findings.map((f) => f.kind)).toEqual(['status-unreadable', ...seen]);
    expect(r.targets[0]!.findings[0]!.message).toContain('EACCES: permission denied');
  });

  it('reports a prune killed holding its lock as a failed prune (it left no record)', () => {
    const at = hoursAgo(1);
    const killed = killedRuns(
      [
        {
          id: 'l1',
          exclusive: true,
          pid: 4242,
          hostname: 'db-backup-1',
          command: 'prune',
          created: at,
          refreshed: at,
          run: { kind: 'prune', target: null },
          stale: true,
          staleReason: 'process 4242 is not running',
        },
      ],
      [],
    );
    const t = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 2)],
      runs: [
        run('backup', 2, true, { snapshot: 's1' }),
        run('verify', 1.9, true, { snapshot: 's1' }),
        ...killed,
      ],
    }).targets[0]!;
    expect(t.findings.map((f) => f.kind)).toEqual(['prune-failed']);
    expect(t.findings[0]!.message).toContain('process 4242 is not running');
    // Nor does it excuse a snapshot gone without a tombstone (as an old prune's record would).
    expect(
      missingSnapshots(
        [run('backup', 3, true, { snapshot: 'gone' }), ...killed],
        new Set(['s1']),
        new Set(),
      ),
    ).toEqual(['gone']);
  });

  it('warns while the last prune failed (retention not applied), also one of the whole repository; a success clears it', () => {
    const base = [
      run('backup', 2, true, { snapshot: 's1' }),
      run('verify', 1.9, true, { snapshot: 's1' }),
    ];
    const failed = (h: number, target: string | null) =>
      run('prune', h, false, {
        id: `prune-${h}`,
        target,
        error: { code: 'repository.locked', message: 'the repository is locked by "backup prod"' },
      });
    const judge = (runs: RunRecord[]) =>
      evaluateStatus({ now: NOW, config, snapshots: [snap('s1', 2)], runs }).targets[0]!;
    const t = judge([...base, failed(1, 'prod')]);
    expect(t.severity).toBe('warning');
    expect(t.findings.map((f) => [f.kind, f.severity])).toEqual([['prune-failed', 'warning']]);
    expect(t.findings[0]!.message).toContain('the repository is locked');
    expect(judge([...base, failed(1, null)]).findings.map((f) => f.kind)).toEqual(['prune-failed']);
    expect(
      judge([...base, failed(1, 'prod'), run('prune', 0.5, true, { id: 'prune-ok' })]).findings,
    ).toEqual([]);
  });

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

  it('damaged chunks are critical while the newest snapshot uses them, a warning once a newer one does not', () => {
    const damage = new Map([
      [
        'c1',
        {
          chunkId: 'c1',
          kind: 'damaged' as const,
          foundBy: 'check' as const,
          foundAt: hoursAgo(2),
          message: 'chunk c1 is damaged',
          snapshots: ['s1'],
        },
      ],
    ]);
    const runs = [
      run('backup', 3, true, { snapshot: 's1' }),
      run('verify', 2.9, true, { snapshot: 's1' }),
    ];
    const only = evaluateStatus({ now: NOW, config, snapshots: [snap('s1', 3)], runs, damage });
    const f = only.targets[0]!.findings.find((x) => x.kind === 'chunks-damaged')!;
    expect(f.severity).toBe('critical');
    // The advice holds only if the rows are unchanged: it says so, and what else to do.
    expect(f.message).toContain('a backup writes it again only if those rows are unchanged');
    const newer = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 3), snap('s2', 1)],
      runs: [
        ...runs,
        run('backup', 1, true, { snapshot: 's2' }),
        run('verify', 0.9, true, { snapshot: 's2' }),
      ],
      damage,
    });
    const g = newer.targets[0]!.findings.find((x) => x.kind === 'chunks-damaged')!;
    expect(g.severity).toBe('warning');
    expect(g.message).toContain('(the newest, s2, does not use it)');
  });

  it('a check that found damage in what a target restores from is critical until a check passes', () => {
    const base = { now: NOW, config, snapshots: [snap('s1', 3)] };
    const ok = [
      run('backup', 3, true, { snapshot: 's1' }),
      run('verify', 2.9, true, { snapshot: 's1' }),
    ];
    const check = (h: number, passed: boolean, extra: Partial<RunRecord> = {}) =>
      run('check', h, passed, { target: null, ...extra });
    const damaged = check(1, false, {
      problems: [
        {
          snapshots: ['s1'],
          table: 'public.t',
          chunk: 0,
          message: 'chunk 1 of public.t is damaged',
        },
        {
          object: 'changes/prod/000000000007-0000000001000000.seg',
          message: 'segment 7 is missing',
        },
      ],
    });
    const r = evaluateStatus({ ...base, runs: [...ok, damaged] });
    expect(r.severity).toBe('critical');
    expect(r.targets[0]!.findings).toEqual([
      expect.objectContaining({
        kind: 'check-failed',
        severity: 'critical',
        snapshot: 's1',
        message: expect.stringMatching(
          /^the last check of the repository \(.*\) found 2 problem\(s\) in what "prod" restores from: chunk 1 of public\.t is damaged \(and 1 more\)/,
        ),
      }),
    ]);
    // Damage in another target's snapshot is not prod's; a check that passed since clears it.
    const elsewhere = check(1, false, { problems: [{ snapshots: ['other-s9'], message: 'x' }] });
    expect(evaluateStatus({ ...base, runs: [...ok, elsewhere] }).severity).toBe('ok');
    expect(evaluateStatus({ ...base, runs: [...ok, damaged, check(0.5, true)] }).severity).toBe(
      'ok',
    );
  });

  it('names an unreadable manifest: critical for the target whose backup wrote it, or every target', () => {
    const two = parseConfig(
      'targets:\n  prod:\n    database: app\n  staging:\n    database: app2\n',
      undefined,
    );
    const judge = (runs: RunRecord[]) =>
      evaluateStatus({
        now: NOW,
        config: two,
        targets: ['prod', 'staging'],
        snapshots: [snap('s1', 2)],
        unreadable: [
          { id: 's2', damaged: true, message: 'snapshot s2: manifest is not valid JSON' },
          {
            id: 's3',
            damaged: false,
            message: 'snapshot s3 has format version 2; this Flashback reads up to 1',
          },
        ],
        runs: [
          run('backup', 2, true, { snapshot: 's1' }),
          run('verify', 1, true, { snapshot: 's1' }),
          ...runs,
        ],
      });
    const found = (r: ReturnType<typeof judge>, t: string) =>
      r.targets
        .find((x) => x.target === t)!
        .findings.filter((f) => f.kind === 'snapshot-unreadable')
        .map((f) => [f.severity, f.snapshot, f.message]);
    const attributed = judge([run('backup', 1, true, { snapshot: 's2' })]);
    expect(found(attributed, 'prod')).toEqual([
      [
        'critical',
        's2',
        'snapshot s2 of "prod" cannot be restored: manifest is not valid JSON; run `flashback check`',
      ],
      [
        'warning',
        's3',
        'snapshot s3 is left out: it has format version 2; this Flashback reads up to 1',
      ],
    ]);
    expect(found(attributed, 'staging').map((f) => f[1])).toEqual(['s3']);
    expect(attributed.severity).toBe('critical');
    // No run record names s2: every target hears of it.
    expect(found(judge([]), 'staging').map((f) => f[1])).toEqual(['s2', 's3']);
  });

  it('finds a committed snapshot gone without a prune tombstone, excusing those a legacy prune may have removed', () => {
    const runs = [
      run('backup', 5, true, { snapshot: 'old' }),
      run('prune', 4, true), // before tombstones: it may have removed "old"
      run('backup', 3, true, { snapshot: 'pruned' }),
      run('backup', 2, true, { snapshot: 'gone' }),
      run('backup', 1, true, { snapshot: 'here' }),
      run('prune', 0.5, true, { details: { tombstones: 1 } }),
      run('backup', 0.2, false),
    ];
    const missing = missingSnapshots(runs, new Set(['here']), new Set(['pruned']));
    expect(missing).toEqual(['gone']);
    const r = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('here', 1)],
      missing,
      runs: [...runs, run('verify', 0.5, true, { snapshot: 'here' })],
    });
    expect(r.targets[0]!.findings.map((f) => [f.severity, f.kind, f.snapshot])).toContainEqual([
      'critical',
      'snapshot-missing',
      'gone',
    ]);
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
    expect(missed.targets[0]!.findings[0]!.message).toContain('is `flashback serve` running?');
    // A job still holding the repository since before the deadline is what delays it: named.
    const lock = (command: string, hoursAgo: number) => ({
      id: command,
      exclusive: false,
      pid: 42,
      hostname: 'h',
      command,
      created: new Date(NOW.getTime() - hoursAgo * 3_600_000).toISOString(),
      refreshed: NOW.toISOString(),
      stale: false,
    });
    const busy = evaluateStatus({
      ...base,
      runs: [verified, run('backup', 2.5, true)],
      held: [lock('backup prod', 2), lock('history public.t', 2), lock('prune', 0.1)],
    });
    expect(busy.targets[0]!.findings.map((f) => [f.kind, f.message])).toEqual([
      [
        'missed-run',
        expect.stringMatching(
          /has not run: running in the repository meanwhile: "backup prod" \(pid 42 on h, since 2026-11-21T10:00:00.000Z\); serve runs one job at a time/,
        ),
      ],
    ]);
    const ran = evaluateStatus({ ...base, runs: [verified, run('backup', 0.99, true)] });
    expect(ran.severity).toBe('ok');
    // Never ran at all: a new schedule, not a stopped scheduler.
    const fresh = evaluateStatus({ ...base, runs: [verified] });
    expect(fresh.targets[0]!.findings).toEqual([]);
  });

  it('tells scheduled backups from the log apart from direct ones', () => {
    const c = parseConfig(
      'targets:\n  prod:\n    database: app\n    schedule:\n      backup: "0 * * * *"\n      backup_from_log: "0 * * * *"\n',
      undefined,
    );
    const base = { now: NOW, config: c, snapshots: [snap('s1', 0.5)] };
    const verified = run('verify', 0.4, true, { snapshot: 's1' });
    const fromLog = (h: number, ok: boolean, details: Record<string, string>) =>
      run('backup', h, ok, { id: `fl-${h}`, details });
    // Only backups from the log ran lately (a failed one too): the direct backup is missed.
    const r = evaluateStatus({
      ...base,
      runs: [
        verified,
        run('backup', 2.5, true),
        fromLog(0.99, true, { mode: 'from-log', fromLog: 's0' }),
        fromLog(0.98, false, { mode: 'from-log' }),
      ],
    });
    const missed = r.targets[0]!.findings.filter((f) => f.kind === 'missed-run');
    expect(missed.map((f) => f.message)).toEqual([
      expect.stringMatching(/^scheduled backup of "prod"/),
    ]);
    // And the other way round; records written before `mode` existed carry only `fromLog`.
    const other = evaluateStatus({
      ...base,
      runs: [verified, run('backup', 0.99, true), fromLog(2.5, true, { fromLog: 's0' })],
    });
    expect(other.targets[0]!.findings.map((f) => f.message)).toEqual([
      expect.stringMatching(/^scheduled backup --from-log of "prod"/),
    ]);
    // A failing kind is a finding even when the other kind succeeds after it.
    const failing = evaluateStatus({
      ...base,
      runs: [
        verified,
        run('backup', 0.9, true),
        run('backup', 0.6, false, { error: { code: 'x', message: 'source down' } }),
        fromLog(0.5, false, { mode: 'from-log' }),
        fromLog(0.45, true, { mode: 'from-log', fromLog: 's0' }),
      ],
    });
    // The direct backup's failure stands (a later snapshot from the log does not
    // read the source); the from-log failure was followed by a success.
    const failed = failing.targets[0]!.findings.filter((f) => f.kind === 'backup-failed');
    expect(failed.map((f) => f.message)).toEqual([
      expect.stringMatching(/^the last backup of "prod" FAILED .*source down \(1 failed attempt/),
    ]);
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

describe('status of a change log', () => {
  const secondsAgo = (n: number): string => new Date(NOW.getTime() - n * 1000).toISOString();
  // A fresh, verified backup: only the change log's findings remain.
  const healthy = {
    snapshots: [snap('s1', 1)],
    runs: [run('verify', 0.5, true, { snapshot: 's1' })],
  };
  const log = (extra: Partial<ChangeLogFacts> = {}): ChangeLogFacts => ({
    target: 'prod',
    created: hoursAgo(3),
    startLsn: '0/1000000',
    number: 1,
    newestAt: secondsAgo(5),
    committed: '0/3000060',
    segments: 12,
    // Before the snapshot (0/3000000), then 3 MiB after it.
    segmentSizes: [
      { committed: 0x2000000n, size: 900 << 20 },
      { committed: 0x3000020n, size: 1 << 20 },
      { committed: 0x3000060n, size: 2 << 20 },
    ],
    ...extra,
  });
  const slot = (extra: object = {}) => ({
    slot: 'flashback_prod',
    active: true,
    walStatus: 'reserved',
    retainedWalBytes: 4096,
    ...extra,
  });
  const evaluate = (changeLogs: ChangeLogFacts[], c = config, more: object = {}) =>
    evaluateStatus({ now: NOW, config: c, ...healthy, changeLogs, ...more }).targets[0]!;

  it('reports the recovery point: ok within a minute, a warning after, critical after 5 minutes', () => {
    const fresh = evaluate([log()]);
    expect(fresh.severity).toBe('ok');
    expect(fresh.changeLog).toEqual({
      newestAt: secondsAgo(5),
      recoveryPointSeconds: 5,
      joined: true,
      committed: '0/3000060',
      slot: null,
      bytesSinceSnapshot: 3 << 20,
    });
    const behind = evaluate([log({ newestAt: secondsAgo(90) })]);
    expect(behind.findings.map((f) => [f.kind, f.severity])).toEqual([
      ['recovery-point', 'warning'],
    ]);
    expect(behind.findings[0]!.message).toContain('is 1m 30s behind');
    expect(behind.findings[0]!.message).toContain(secondsAgo(90));
    const stale = evaluate([log({ newestAt: secondsAgo(301) })]);
    expect(stale.severity).toBe('critical');
    expect(stale.findings[0]!.message).toContain('critical above 5m');
  });

  it('measures an empty log from its start, and lists a target that has only a change log', () => {
    const empty = evaluate([log({ newestAt: undefined, created: secondsAgo(20) })]);
    expect(empty.findings).toEqual([]);
    expect(empty.changeLog?.recoveryPointSeconds).toBe(20);
    expect(empty.changeLog?.newestAt).toBeNull();
    const stuck = evaluate([log({ newestAt: undefined, created: secondsAgo(400) })]);
    expect(stuck.findings[0]!.message).toMatch(/^nothing is stored in the change log of "prod"/);
    expect(stuck.severity).toBe('critical');

    const only = evaluateStatus({ now: NOW, config, snapshots: [], runs: [], changeLogs: [log()] });
    expect(only.targets.map((t) => t.target)).toEqual(['prod']);
    // A change log without any snapshot restores nothing.
    expect(only.targets[0]!.findings.map((f) => f.kind)).toEqual(['no-backup']);
  });

  it('judges a log no snapshot was taken after by the newest snapshot: no moment of the log can be restored', () => {
    // The only snapshot (0/3000000, an hour ago) is from before the log began.
    const late = log({ startLsn: '0/3000010', created: hoursAgo(0.5) });
    const t = evaluate([late]);
    expect(t.severity).toBe('critical');
    expect(t.findings.map((f) => [f.kind, f.severity, f.snapshot])).toEqual([
      ['log-unjoined', 'critical', 's1'],
    ]);
    expect(t.findings[0]!.message).toBe(
      `no snapshot of "prod" was taken since its change log began at ${hoursAgo(0.5)} (0/3000010): a restore reaches only the newest snapshot, s1 (1h old, critical above 5m), not any moment of the log; take one while capture runs: \`flashback backup prod\``,
    );
    // The recovery point is what a restore reaches, not the log's newest heartbeat.
    expect(t.changeLog).toMatchObject({
      recoveryPointSeconds: 3600,
      joined: false,
      newestAt: secondsAgo(5),
      bytesSinceSnapshot: null,
    });
    // A snapshot 30 s old (at 0/4000000), the log begun just after it or at it.
    const fresh = { ...snap('s2', 30 / 3600), lsn: '0/4000000' };
    const startingAt = (startLsn: string) =>
      evaluateStatus({
        now: NOW,
        config,
        snapshots: [fresh],
        runs: [run('verify', 0.001, true, { snapshot: 's2' })],
        changeLogs: [log({ startLsn, created: secondsAgo(20) })],
      }).targets[0]!;
    // A warning while within the thresholds.
    const soon = startingAt('0/4000001');
    expect(soon.findings.map((f) => [f.kind, f.severity])).toEqual([['log-unjoined', 'warning']]);
    expect(soon.findings[0]!.message).toContain('s2 (30s old), not any moment');
    expect(soon.changeLog?.recoveryPointSeconds).toBe(30);
    // A snapshot at the log's start is continued by it.
    const atStart = startingAt('0/4000000');
    expect(atStart.findings).toEqual([]);
    expect(atStart.changeLog).toMatchObject({ recoveryPointSeconds: 5, joined: true });
    // A later log (capture --new-log, after a failover) continues only a
    // snapshot taken since it began, whatever its LSN: the promoted server
    // may have restarted from an earlier position than the old one reached.
    const secondLogBegun = (ago: number) =>
      evaluateStatus({
        now: NOW,
        config,
        snapshots: [fresh],
        runs: [run('verify', 0.001, true, { snapshot: 's2' })],
        changeLogs: [log({ startLsn: '0/3000000', number: 2, created: secondsAgo(ago) })],
      }).targets[0]!;
    const after = secondLogBegun(20);
    expect(after.findings.map((f) => [f.kind, f.severity])).toEqual([['log-unjoined', 'warning']]);
    expect(after.changeLog).toMatchObject({ recoveryPointSeconds: 30, joined: false });
    expect(secondLogBegun(40).changeLog).toMatchObject({ recoveryPointSeconds: 5, joined: true });
  });

  it('the recovery point metric of a log no snapshot is continued by stays the snapshot age', async () => {
    const metrics = new Metrics();
    const rpo = async () =>
      Number(
        /^flashback_recovery_point_seconds\{target="prod"\} (\S+)$/m.exec(
          await metrics.text(),
        )?.[1],
      );
    const report = (startLsn: string) =>
      evaluateStatus({
        now: new Date(),
        config,
        snapshots: [
          {
            id: 's1',
            target: 'prod',
            startedAt: new Date(Date.now() - 600_000).toISOString(),
            lsn: '0/3000000',
          },
        ],
        runs: [],
        changeLogs: [log({ startLsn, newestAt: new Date(Date.now() - 2000).toISOString() })],
      });
    const stored = () =>
      metrics.observeSegment('prod', {
        transactions: 1,
        changes: 1,
        lagsMs: [],
        newestAt: new Date().toISOString(),
      });
    metrics.observeStatus(report('0/3000010'));
    // Capture stores a segment: the log is newer, a restore reaches no further.
    stored();
    expect(await rpo()).toBeGreaterThanOrEqual(600);
    // Once a snapshot the log continues exists, the log's newest change counts.
    metrics.observeStatus(report('0/2000000'));
    stored();
    expect(await rpo()).toBeLessThan(2);
  });

  it('warns when a restore to now would first read more change log than log_since_snapshot_warning', () => {
    const big = log({
      segmentSizes: [
        { committed: 0x2000000n, size: 900 << 20 },
        { committed: 0x3000020n, size: 200 << 20 },
        { committed: 0x3000060n, size: 100 << 20 },
      ],
    });
    const t = evaluate([big]);
    expect(t.changeLog?.bytesSinceSnapshot).toBe(300 << 20);
    expect(t.severity).toBe('warning');
    expect(t.findings.map((f) => [f.kind, f.severity, f.snapshot])).toEqual([
      ['log-since-snapshot', 'warning', 's1'],
    ]);
    expect(t.findings[0]!.message).toContain(
      'restoring "prod" to a moment now reads 300 MiB of change log stored since its newest snapshot s1 (1h ago)',
    );
    // In the unit the threshold is configured in (256MB is 256 MiB), not 268.4 MB.
    expect(t.findings[0]!.message).toContain('(warning above 256 MiB)');
    expect(t.findings[0]!.message).toContain('backup_from_log');
    // A snapshot from the log at the end leaves nothing to read first.
    const caughtUp = evaluateStatus({
      now: NOW,
      config,
      snapshots: [snap('s1', 1), { ...snap('s2', 0.1), lsn: '0/3000060' }],
      runs: [run('verify', 0.05, true, { snapshot: 's2' })],
      changeLogs: [big],
    }).targets[0]!;
    expect(caughtUp.changeLog?.bytesSinceSnapshot).toBe(0);
    expect(caughtUp.findings).toEqual([]);
    // The threshold from the config.
    const c = parseConfig(
      'targets:\n  prod:\n    database: app\n    freshness:\n      log_since_snapshot_warning: 1GB\n',
      undefined,
    );
    expect(evaluate([big], c).findings).toEqual([]);
    // No snapshot: nothing to measure from (no-backup says what is wrong).
    const none = evaluateStatus({ now: NOW, config, snapshots: [], runs: [], changeLogs: [big] });
    expect(none.targets[0]!.changeLog?.bytesSinceSnapshot).toBeNull();
  });

  it('takes the recovery point thresholds from the config, per target over top level', () => {
    const c = parseConfig(
      'freshness:\n  recovery_point_warning: 10s\n  recovery_point_critical: 20s\ntargets:\n  prod:\n    database: app\n    freshness:\n      recovery_point_critical: 2m\n',
      undefined,
    );
    const t = evaluate([log({ newestAt: secondsAgo(30) })], c);
    expect(t.thresholds.recoveryPointWarning).toBe(10_000);
    expect(t.thresholds.recoveryPointCritical).toBe(120_000);
    expect(t.findings.map((f) => [f.kind, f.severity])).toEqual([['recovery-point', 'warning']]);
  });

  it('judges the replication slot: healthy, gone, lost WAL, too much WAL, not read, not checkable', () => {
    const kinds = (s: ChangeLogFacts['slot'], c = config) =>
      evaluate([log({ slot: s })], c).findings.map((f) => [f.kind, f.severity]);
    expect(kinds(slot())).toEqual([]);
    expect(evaluate([log({ slot: slot() })]).changeLog?.slot).toMatchObject({ active: true });
    expect(kinds({ missing: true })).toEqual([['slot-missing', 'critical']]);
    expect(kinds(slot({ walStatus: 'lost', retainedWalBytes: undefined }))).toEqual([
      ['slot-lost', 'critical'],
    ]);
    expect(kinds(slot({ walStatus: 'unreserved' }))).toEqual([['slot-lost', 'warning']]);
    // Default limit 1 GB (1024^3 bytes).
    expect(kinds(slot({ retainedWalBytes: 1024 ** 3 }))).toEqual([]);
    expect(kinds(slot({ retainedWalBytes: 1024 ** 3 + 1 }))).toEqual([['slot-wal', 'warning']]);
    const small = parseConfig(
      'capture:\n  max_retained_wal: 1MB\ntargets:\n  prod:\n    database: app\n',
      undefined,
    );
    expect(kinds(slot({ retainedWalBytes: 2 * 1024 * 1024 }), small)).toEqual([
      ['slot-wal', 'warning'],
    ]);
    expect(kinds(slot({ active: false }))).toEqual([['slot-inactive', 'warning']]);
    const inactive = evaluate([log({ slot: slot({ active: false, retainedWalBytes: 5 << 20 }) })]);
    expect(inactive.findings[0]!.message).toContain('the slot holds 5.00 MiB of WAL');
    expect(kinds({ error: 'connection refused' })).toEqual([['slot-unchecked', 'warning']]);
  });

  it('a capture failing in serve is a warning, critical once it has failed for longer than recovery_point_critical', () => {
    const failing = (since: number) =>
      evaluate([log()], config, {
        captureFailures: [
          { target: 'prod', since: secondsAgo(since), failures: 3, message: 'walsender ended' },
        ],
      }).findings;
    expect(failing(10).map((f) => [f.kind, f.severity])).toEqual([['capture-failed', 'warning']]);
    expect(failing(10)[0]!.message).toContain('failed 3 time(s)');
    expect(failing(10)[0]!.message).toContain('walsender ended');
    expect(failing(400).map((f) => f.severity)).toEqual(['critical']);
    // Nobody reads the slot meanwhile: that is the same news, not a second finding.
    const idle = evaluate([log({ slot: slot({ active: false }) })], config, {
      captureFailures: [{ target: 'prod', since: secondsAgo(3), failures: 1, message: 'x' }],
    });
    expect(idle.findings.map((f) => f.kind)).toEqual(['capture-failed']);
  });

  it('alerts a recovery point finding once, again when it becomes critical, and on recovery', () => {
    const tr = new AlertTracker();
    const at = (newest: number) =>
      evaluateStatus({
        now: NOW,
        config,
        ...healthy,
        changeLogs: [log({ newestAt: secondsAgo(newest) })],
      }).targets;
    expect(tr.update(at(5), 't0')).toEqual([]);
    expect(tr.update(at(70), 't1').map((a) => [a.kind, a.severity])).toEqual([
      ['recovery-point', 'warning'],
    ]);
    expect(tr.update(at(80), 't2')).toEqual([]);
    expect(tr.update(at(400), 't3').map((a) => [a.kind, a.severity])).toEqual([
      ['recovery-point', 'critical'],
    ]);
    expect(tr.update(at(2), 't4').map((a) => a.event)).toEqual(['recovered']);
  });
});
