import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../storage/memory.js';
import { type NewRun, RunStore, runScope } from './runs.js';

function run(over: Partial<NewRun>): NewRun {
  return {
    kind: 'backup',
    target: 'prod',
    snapshot: null,
    ok: true,
    trigger: 'command',
    startedAt: '2026-11-21T10:00:00.000Z',
    finishedAt: '2026-11-21T10:00:05.000Z',
    seconds: 5,
    ...over,
  };
}

describe('run records', () => {
  it('lists by target and kind, oldest first, and keeps the newest verification per snapshot', async () => {
    const storage = new MemoryStorage();
    const runs = new RunStore(storage);
    await runs.record(run({ startedAt: '2026-11-21T11:00:00.000Z', snapshot: 's2' }));
    await runs.record(run({ startedAt: '2026-11-21T10:00:00.000Z', snapshot: 's1' }));
    await runs.record(run({ kind: 'verify', snapshot: 's1', ok: false }));
    await runs.record(
      run({ kind: 'verify', snapshot: 's1', startedAt: '2026-11-21T12:00:00.000Z', ok: true }),
    );
    await runs.record(run({ target: 'staging', snapshot: 's3' }));
    await runs.record(run({ kind: 'check', target: null }));

    const prodBackups = await runs.list({ target: 'prod', kind: 'backup' });
    expect(prodBackups.map((r) => r.snapshot)).toEqual(['s1', 's2']);
    expect((await runs.list()).length).toBe(6);
    expect((await runs.list({ target: null })).map((r) => r.kind)).toEqual(['check']);
    const v = await runs.verifications();
    expect(v.get('s1')?.ok).toBe(true);
    expect(v.size).toBe(1);

    await runs.delete(prodBackups);
    expect(await runs.list({ target: 'prod', kind: 'backup' })).toEqual([]);
  });

  it('counts only verifications that reached a verdict: one that could not run neither verifies nor hides a pass', async () => {
    const runs = new RunStore(new MemoryStorage());
    const at = (h: number) => `2026-11-21T${String(h).padStart(2, '0')}:00:00.000Z`;
    const error = { code: 'verify.scratch', message: 'the scratch server is unreachable' };
    // s1 passed, then a later verify could not run: still verified.
    await runs.record(run({ kind: 'verify', snapshot: 's1', startedAt: at(10) }));
    await runs.record(run({ kind: 'verify', snapshot: 's1', startedAt: at(11), ok: false, error }));
    // s2 was never verified: only an attempt that could not run (tried again later).
    await runs.record(run({ kind: 'verify', snapshot: 's2', startedAt: at(12), ok: false, error }));
    // s3 found a difference: that is a verdict.
    const problems = [{ table: 'public.t', kind: 'rows', message: 'rows differ' }];
    await runs.record(
      run({ kind: 'verify', snapshot: 's3', startedAt: at(13), ok: false, error, problems }),
    );
    const v = await runs.verifications();
    expect([...v.keys()].sort()).toEqual(['s1', 's3']);
    expect(v.get('s1')?.ok).toBe(true);
    expect(v.get('s3')?.ok).toBe(false);
  });

  it('finds the newest record of a kind, within one second by its start, past unreadable ones', async () => {
    const storage = new MemoryStorage();
    const runs = new RunStore(storage);
    expect(await runs.newest({ target: null, kind: 'check' })).toBeUndefined();
    const check = (startedAt: string, seconds: number) =>
      runs.record(run({ kind: 'check', target: null, startedAt, seconds }));
    await check('2026-11-21T10:00:00.000Z', 1);
    await check('2026-11-21T11:00:00.900Z', 2);
    await check('2026-11-21T11:00:00.100Z', 3);
    await runs.record(run({ startedAt: '2026-11-21T12:00:00.000Z' }));
    expect((await runs.newest({ target: null, kind: 'check' }))?.seconds).toBe(2);
    // An unreadable newest record: the one before it.
    await storage.write('runs/_repository/20261121-130000-check-abcdef.json', Buffer.from('{'));
    expect((await runs.newest({ target: null, kind: 'check' }))?.seconds).toBe(2);
    await storage.write('runs/_repository/20261121-110000-check-000000.json', Buffer.from('{'));
    expect((await runs.newest({ target: null, kind: 'check' }))?.seconds).toBe(2);
  });

  it('keeps URL targets in a folder of their own, by hash', () => {
    expect(runScope('prod')).toBe('prod');
    expect(runScope(null)).toBe('_repository');
    const s = runScope('postgres://u@h:5432/db');
    expect(s).toMatch(/^url-[0-9a-f]{16}$/);
    expect(runScope('postgres://u@h:5432/other')).not.toBe(s);
  });

  it('skips records it cannot read', async () => {
    const storage = new MemoryStorage();
    await storage.write('runs/prod/20261121-100000-backup-abcdef.json', Buffer.from('{oops'));
    const runs = new RunStore(storage);
    await runs.record(run({}));
    expect((await runs.list({ target: 'prod' })).length).toBe(1);
  });
});
