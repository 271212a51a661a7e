import { describe, expect, it } from 'vitest';
import { ChangeLog, type ChangeRecord, lsnValue, windowSegments } from '../repo/changelog.js';
import { MemoryStorage } from '../storage/memory.js';
import { reachOf } from './overlay-parts.js';

/**
 * Segment i (0-9) holds transaction i+1, committed at second i+1 with end
 * LSN 0/(i+1)00; segment 5's transaction is cut and ends in segment 6,
 * where none begins.
 */
async function tenSegments() {
  const log = new ChangeLog(new MemoryStorage(), 'prod');
  const rel: ChangeRecord = ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]];
  const at = (s: number) => `2026-11-21T10:00:${String(s).padStart(2, '0')}.000000Z`;
  const lsn = (x: number) => `0/${x.toString(16)}00`;
  let committed = 0x10n;
  for (let i = 0; i < 10; i++) {
    const x = i + 1;
    const records: ChangeRecord[] = [rel];
    if (i !== 6) records.push(['B', x, lsn(x), at(x)], ['I', 1, [String(x)]]);
    if (i === 6) records.push(['I', 1, ['6b']]);
    if (i !== 5) {
      const c = i === 6 ? 6 : x;
      records.push(['C', lsn(c), lsn(c), at(c)]);
      committed = lsnValue(lsn(c));
    }
    await log.writeSegment(i + 1, committed, records);
  }
  const { segments } = await windowSegments(log, undefined);
  return { log, segments, at };
}

describe('where reading a window stops (the parts are balanced up to there)', () => {
  it('finds the first segment whose commits pass the point, by LSN or by commit time', async () => {
    const { log, segments, at } = await tenSegments();
    expect(segments).toHaveLength(10);
    const time = (s: string) => reachOf(log, segments, { point: { kind: 'time', at: s } });
    // Before every commit: the first segment; after the last: the last.
    expect(await time('2026-11-21T09:00:00.000000Z')).toBe(0);
    expect(await time(at(3))).toBe(3);
    expect(await time('2026-11-21T10:00:03.500000Z')).toBe(3);
    expect(await time(at(10))).toBe(9);
    expect(await time('2026-11-22T00:00:00.000000Z')).toBe(9);
    // Segment 6 begins no transaction: it is not past second 6.5.
    expect(await time('2026-11-21T10:00:06.500000Z')).toBe(7);
    const lsn = (l: string) => reachOf(log, segments, { point: { kind: 'lsn', lsn: l } });
    expect(await lsn('0/300')).toBe(2);
    expect(await lsn('0/350')).toBe(3);
    expect(await lsn('1/0')).toBe(9);
    // Before a transaction: its commit LSN, as the plan found it.
    expect(
      await reachOf(log, segments, { point: { kind: 'xid', xid: 4 }, xidCommitLsn: 0x400n }),
    ).toBe(3);
  });

  it('splits as if the point were at the end when a segment it reads is damaged', async () => {
    const { log, segments, at } = await tenSegments();
    const storage = log.storage as MemoryStorage;
    await storage.write(segments[9]!.key, Buffer.from('not a segment'));
    expect(await reachOf(log, segments, { point: { kind: 'time', at: at(3) } })).toBe(9);
  });
});
