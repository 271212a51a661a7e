import { describe, expect, it } from 'vitest';
import { ChangeLog, lsnValue } from '../repo/changelog.js';
import { MemoryStorage } from '../storage/memory.js';
import { awaitLogReaches } from './log-reach.js';

const NOW = Date.parse('2026-11-21T10:00:10.000Z');

async function logWithHeartbeat(at: string): Promise<ChangeLog> {
  const log = new ChangeLog(new MemoryStorage(), 'prod');
  await log.writeSegment(1, lsnValue('0/110'), [['H', '0/110', at]]);
  return log;
}

describe('whether the change log reaches a moment', () => {
  it('goes on at once when a heartbeat or commit at or after the moment is stored', async () => {
    const log = await logWithHeartbeat('2026-11-21T10:00:09.000000Z');
    await awaitLogReaches(log, 'prod', '2026-11-21T10:00:09.000000Z', { now: () => NOW });
  });

  it('waits for a recent moment until capture stores it', async () => {
    const log = await logWithHeartbeat('2026-11-21T10:00:08.000000Z');
    setTimeout(
      () =>
        void log.writeSegment(2, lsnValue('0/120'), [
          ['H', '0/120', '2026-11-21T10:00:10.500000Z'],
        ]),
      30,
    );
    const started = Date.now();
    await awaitLogReaches(log, 'prod', '2026-11-21T10:00:10.000000Z', {
      now: () => NOW + (Date.now() - started),
      pollMs: 10,
      waitMs: 5_000,
    });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('refuses a recent moment capture does not store in time, saying how long it waited', async () => {
    const log = await logWithHeartbeat('2026-11-21T10:00:08.000000Z');
    const started = Date.now();
    await expect(
      awaitLogReaches(log, 'prod', '2026-11-21T10:00:10.000000Z', {
        now: () => NOW + (Date.now() - started),
        pollMs: 10,
        waitMs: 100,
      }),
    ).rejects.toThrow(
      /^the change log of "prod" reaches only 2026-11-21T10:00:08.000000Z: it cannot say what changed up to 2026-11-21T10:00:10.000000Z \(waited 0 s for capture to store it\)$/,
    );
  });

  it('refuses at once an older moment not reached, and a moment in the future', async () => {
    const log = await logWithHeartbeat('2026-11-21T09:00:00.000000Z');
    const waitMs = 60_000; // (not waited: the test would time out)
    await expect(
      awaitLogReaches(log, 'prod', '2026-11-21T09:30:00.000000Z', { now: () => NOW, waitMs }),
    ).rejects.toThrow(
      /^the change log of "prod" reaches only 2026-11-21T09:00:00.000000Z: it cannot say what changed up to 2026-11-21T09:30:00.000000Z$/,
    );
    await expect(
      awaitLogReaches(log, 'prod', '2026-11-21T11:00:00.000000Z', { now: () => NOW, waitMs }),
    ).rejects.toThrow(/is in the future/);
  });
});
