import { describe, expect, it } from 'vitest';
import { knownDamage } from './damage.js';
import type { RunProblem, RunRecord } from './runs.js';

let clock = 0;
/** A run record finishing a minute after the previous one. */
function run(
  kind: RunRecord['kind'],
  o: { ok?: boolean; snapshot?: string; readData?: string; problems?: RunProblem[] } = {},
): RunRecord {
  clock += 60_000;
  const at = new Date(Date.UTC(2026, 10, 23) + clock).toISOString();
  return {
    format: 'flashback-run',
    version: 1,
    id: `r${clock}`,
    kind,
    target: kind === 'check' ? null : 'prod',
    snapshot: o.snapshot ?? null,
    ok: o.ok ?? (o.problems ?? []).length === 0,
    trigger: 'command',
    startedAt: new Date(Date.parse(at) - 30_000).toISOString(),
    finishedAt: at,
    seconds: 30,
    ...(o.problems === undefined ? {} : { problems: o.problems }),
    ...(o.readData === undefined ? {} : { details: { readData: o.readData } }),
  };
}
const damaged = (id: string): RunProblem => ({
  chunkId: id,
  kind: 'chunk-damaged',
  message: `chunk ${id} is damaged`,
});
const missing = (id: string): RunProblem => ({
  chunkId: id,
  kind: 'chunk-missing',
  message: `chunk ${id} is missing`,
});
const holders = new Map([
  ['a', new Set(['s1', 's2'])],
  ['b', new Set(['s2'])],
]);
const ids = (runs: RunRecord[]) => [...knownDamage(runs, holders).keys()].sort();

describe('chunks known bad, from the run records', () => {
  it('a check that did not read a chunk does not clear damage found by reading it', () => {
    const found = run('check', { readData: '100%', problems: [damaged('a')] });
    const plain = run('check', { readData: '0%' });
    expect(ids([found, plain])).toEqual(['a']);
    expect(knownDamage([found, plain], holders).get('a')).toMatchObject({
      kind: 'damaged',
      foundBy: 'check',
      snapshots: ['s1', 's2'],
    });
    // A subset did not read every chunk either; a whole read that passes clears it.
    expect(ids([found, run('check', { readData: '10%' })])).toEqual(['a']);
    expect(ids([found, plain, run('check', { readData: '100%' })])).toEqual([]);
  });

  it('a plain check is the whole picture of missing chunks, not of damaged ones', () => {
    const gone = run('check', { readData: '0%', problems: [missing('b')] });
    expect(ids([gone])).toEqual(['b']);
    expect(ids([gone, run('check', { readData: '0%' })])).toEqual([]);
    // An older record without kinds: told from its message.
    const old = run('check', {
      readData: '0%',
      problems: [{ chunkId: 'b', message: 'chunk b is missing; used by …' }],
    });
    expect(knownDamage([old], holders).get('b')?.kind).toBe('missing');
  });

  it('a verify that passed clears the chunks of its snapshot; one that failed adds its chunk', () => {
    const failed = run('verify', { snapshot: 's2', problems: [damaged('b')] });
    expect(ids([failed])).toEqual(['b']);
    expect(ids([failed, run('verify', { snapshot: 's1', ok: true })])).toEqual(['b']);
    expect(ids([failed, run('verify', { snapshot: 's2', ok: true })])).toEqual([]);
  });

  it('a backup that uses a known bad chunk wrote it again, if it began after it was known', () => {
    const found = run('check', { readData: '100%', problems: [damaged('a')] });
    expect(ids([found, run('backup', { snapshot: 's1', ok: true })])).toEqual([]);
    expect(ids([found, run('backup', { snapshot: 'other', ok: true })])).toEqual(['a']);
    expect(ids([found, run('backup', { snapshot: 's1', ok: false })])).toEqual(['a']);
    // Begun before the check finished: it may have reused the chunk.
    const backup = run('backup', { snapshot: 's1', ok: true });
    const late = {
      ...found,
      finishedAt: new Date(Date.parse(backup.startedAt) + 1000).toISOString(),
    };
    expect(ids([late, backup])).toEqual(['a']);
    // A snapshot from the log passes the chunk on unread: still bad (it was cleared).
    const fromLog = {
      ...run('backup', { snapshot: 's1', ok: true }),
      details: { mode: 'from-log' },
    };
    expect(ids([found, fromLog])).toEqual(['a']);
  });
});
