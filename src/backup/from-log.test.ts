import { describe, expect, it } from 'vitest';
import { ChangeLog, type ChangeRecord, lsnText, lsnValue } from '../repo/changelog.js';
import { Repository } from '../repo/repository.js';
import type { SnapshotManifest } from '../repo/snapshots.js';
import { SnapshotStore } from '../repo/snapshots.js';
import { MemoryStorage } from '../storage/memory.js';
import type { ByteRange } from '../storage/storage.js';
import { nothingNewInLog } from './from-log.js';

/** Storage that counts the segments read. */
class Counting extends MemoryStorage {
  segmentsRead = 0;
  override read(key: string, range?: ByteRange): Promise<Buffer> {
    if (key.endsWith('.seg')) this.segmentsRead++;
    return super.read(key, range);
  }
}

const snapshot = (id: string, lsn: string) =>
  ({
    format: 'flashback-snapshot',
    version: 1,
    id,
    target: 'prod',
    lsn,
    startedAt: '2026-11-22T10:00:00.000Z',
    finishedAt: '2026-11-22T10:00:01.000Z',
    tables: [],
    totals: { tables: 0, rows: 0, bytes: 0, storedBytes: 0, newChunks: 0, newBytes: 0 },
  }) as unknown as SnapshotManifest;

/** A repository with a snapshot of "prod" at `lsn`, and its log started at `startLsn`. */
async function repoWith(lsn: string, startLsn: string | undefined) {
  const repo = await Repository.init(new Counting());
  await new SnapshotStore(repo.storage).commit(snapshot('20261122-100000-aaaa', lsn));
  const log = new ChangeLog(repo.storage, 'prod');
  if (startLsn !== undefined) {
    await log.writeInfo({
      format: 'flashback-capture',
      version: 1,
      target: 'prod',
      slot: 'flashback_prod',
      publication: 'flashback_prod',
      systemIdentifier: '1',
      database: 'app',
      startLsn,
      created: '2026-11-22T09:00:00Z',
    });
  }
  return { repo, log };
}

const tx = (xid: number, lsn: string): ChangeRecord[] => [
  ['B', xid, lsn, '2026-11-22T10:00:00.000000Z'],
  ['C', lsn, lsn.replace(/0$/, '8'), '2026-11-22T10:00:00.000000Z'],
];

describe('whether a snapshot from the log would add anything', () => {
  it('nothing, while capture has started and stored nothing after the snapshot', async () => {
    const { repo } = await repoWith('0/500', '0/100');
    expect((await nothingNewInLog(repo, 'prod'))?.reason).toBe(
      'the change log of "prod" has stored no transaction yet (it starts at 0/100, before snapshot 20261122-100000-aaaa)',
    );
  });

  it('leaves it to the backup to refuse without a log, or with a snapshot before it', async () => {
    expect(
      await nothingNewInLog((await repoWith('0/500', undefined)).repo, 'prod'),
    ).toBeUndefined();
    expect(await nothingNewInLog((await repoWith('0/50', '0/100')).repo, 'prod')).toBeUndefined();
  });

  it('nothing, with only heartbeats or a keepalive position stored after the snapshot', async () => {
    const { repo, log } = await repoWith('0/500', '0/100');
    await log.writeSegment(1, lsnValue('0/408'), tx(7, '0/400'));
    await log.writeSegment(2, lsnValue('0/600'), [['H', '0/600', '2026-11-22T10:00:09.000000Z']]);
    await log.writeSegment(3, lsnValue('0/700'), []);
    expect((await nothingNewInLog(repo, 'prod'))?.reason).toMatch(
      /^no transaction of "prod" committed after snapshot 20261122-100000-aaaa \(LSN 0\/500\): the change log holds only heartbeats since \(stored up to 0\/700\)$/,
    );
    await log.writeSegment(4, lsnValue('0/808'), tx(8, '0/800'));
    expect(await nothingNewInLog(repo, 'prod')).toBeUndefined();
  });

  it('reads again only what the log stored since the last run found it idle', async () => {
    const { repo, log } = await repoWith('0/500', '0/100');
    const storage = repo.storage as Counting;
    const beat = (seq: number, lsn: number) =>
      log.writeSegment(seq, BigInt(lsn), [
        ['H', lsnText(BigInt(lsn)), '2026-11-22T10:00:00.000000Z'],
      ]);
    for (let i = 1; i <= 40; i++) await beat(i, 0x500 + i * 0x10);
    const read = async () => {
      storage.segmentsRead = 0;
      const r = await nothingNewInLog(repo, 'prod');
      return { idle: r !== undefined, segments: storage.segmentsRead };
    };
    expect(await read()).toEqual({ idle: true, segments: 40 });
    // (From the segment before: one may end inside a transaction committed after it.)
    expect(await read()).toEqual({ idle: true, segments: 2 });
    await beat(41, 0x500 + 41 * 0x10);
    await beat(42, 0x500 + 42 * 0x10);
    expect(await read()).toEqual({ idle: true, segments: 4 });
    // A commit after the last idle run is found.
    await log.writeSegment(43, lsnValue('0/808'), tx(9, '0/800'));
    expect(await read()).toEqual({ idle: false, segments: 3 });
    // After another snapshot, the record of the last one is not used.
    await new SnapshotStore(repo.storage).commit(snapshot('20261122-110000-bbbb', '0/600'));
    expect(await read()).toEqual({ idle: false, segments: 29 });
  });
});
