import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../storage/memory.js';
import { type CaptureInfo, ChangeLog } from './changelog.js';
import {
  logForLsn,
  logForTime,
  logOfSnapshot,
  snapshotsOfLog,
  type TargetLog,
  targetLogs,
} from './changelogs.js';

const storage = new MemoryStorage();

function info(extra: Partial<CaptureInfo>): CaptureInfo {
  return {
    format: 'flashback-capture',
    version: 1,
    target: 'prod',
    slot: 'flashback_prod',
    publication: 'flashback',
    systemIdentifier: '1',
    database: 'app',
    startLsn: '0/100',
    created: '2026-11-20T10:00:00.000Z',
    ...extra,
  };
}

/**
 * Log 1 from 0/100 (10:00) to 0/5000; after a failover the promoted
 * standby had replayed only up to 0/4F00, and log 2 begins there at 0/4F80
 * (12:00): the two logs' LSNs overlap between 0/4F80 and 0/5000.
 */
const logs: TargetLog[] = [
  { log: new ChangeLog(storage, 'prod'), info: info({}) },
  {
    log: new ChangeLog(storage, 'prod', 2),
    info: info({
      startLsn: '0/4F80',
      created: '2026-11-20T12:00:00.000Z',
      log: 2,
      previousEnd: '0/5000',
    }),
  },
];
const snap = (lsn: string, startedAt: string) => ({ lsn, startedAt });

describe("a target's change logs", () => {
  it('are found from the first: changes/<scope>/, then changes/<scope>.<n>/ while one exists', async () => {
    const s = new MemoryStorage();
    expect(await targetLogs(s, 'prod')).toEqual([]);
    await new ChangeLog(s, 'prod').writeInfo(logs[0]!.info);
    await new ChangeLog(s, 'prod', 2).writeInfo(logs[1]!.info);
    // A start of log 3 that died before recording it is not a log.
    await new ChangeLog(s, 'prod', 3).setPendingSlot({
      slot: 'flashback_prod',
      systemIdentifier: '1',
      database: 'app',
      at: '2026-11-20T13:00:00.000Z',
    });
    const found = await targetLogs(s, 'prod');
    expect(found.map((l) => [l.log.dir, l.log.number, l.log.label])).toEqual([
      ['changes/prod/', 1, '"prod"'],
      ['changes/prod.2/', 2, '"prod" (log 2)'],
    ]);
    expect(found[1]!.info).toEqual(logs[1]!.info);
    // Another target whose name begins the same is not one of them.
    expect(await targetLogs(s, 'prod2')).toEqual([]);
    expect(ChangeLog.inDirectory(s, 'prod.2')?.dir).toBe('changes/prod.2/');
    expect(ChangeLog.inDirectory(s, 'prod')?.number).toBe(1);
    expect(ChangeLog.inDirectory(s, 'prod.x')).toBeUndefined();
  });

  it('a snapshot belongs to the log current when it was taken, never to one by its LSN alone', () => {
    // Taken under log 1, within what it holds.
    expect(logOfSnapshot(logs, snap('0/4000', '2026-11-20T11:00:00.000Z'))).toBe(0);
    // Taken under log 1 but past its end (capture had stopped; perhaps on the
    // promoted server): no log continues it.
    expect(logOfSnapshot(logs, snap('0/6000', '2026-11-20T11:59:00.000Z'))).toBeUndefined();
    // Taken after log 2 began: log 2's, even at an LSN log 1 also covers.
    expect(logOfSnapshot(logs, snap('0/4FC0', '2026-11-20T12:00:01.000Z'))).toBe(1);
    const all = [
      snap('0/4000', '2026-11-20T11:00:00.000Z'),
      snap('0/4FF0', '2026-11-20T11:30:00.000Z'),
      snap('0/6000', '2026-11-20T12:30:00.000Z'),
    ];
    expect(snapshotsOfLog(logs, 0, all)).toEqual(all.slice(0, 2));
    expect(snapshotsOfLog(logs, 1, all)).toEqual(all.slice(2));
    // With one log, every snapshot is its (whether the log continues it is
    // the LSN question the callers ask).
    expect(snapshotsOfLog(logs.slice(0, 1), 0, all)).toEqual(all);
  });

  it('a moment is in the newest log begun at or before it; an LSN between two logs is in none', () => {
    expect(logForTime(logs, '2026-11-20T11:59:59.999999Z')).toBe(0);
    expect(logForTime(logs, '2026-11-20T12:00:00.000000Z')).toBe(1);
    expect(logForTime(logs.slice(0, 1), '2026-11-20T13:00:00.000000Z')).toBe(0);
    expect(logForLsn(logs, 0x4000n)).toEqual({ log: 0 });
    // In both ranges: the newer history, log 2's.
    expect(logForLsn(logs, 0x4fc0n)).toEqual({ log: 1 });
    expect(logForLsn(logs, 0x9000n)).toEqual({ log: 1 });
    // With log 2 beginning after log 1's end, the LSNs between are in neither.
    const apart = [logs[0]!, { ...logs[1]!, info: { ...logs[1]!.info, startLsn: '0/7000' } }];
    expect(logForLsn(apart, 0x5000n)).toEqual({ log: 0 });
    expect(logForLsn(apart, 0x6000n)).toEqual({ gapAfter: 0 });
    expect(logForLsn(apart, 0x7000n)).toEqual({ log: 1 });
  });
});
