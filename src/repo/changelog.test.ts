import { describe, expect, it } from 'vitest';
import { DamagedError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { ChangeLog, lsnValue, readTransactions, skippable } from './changelog.js';
import { decodeChunk, encodeChunk } from './codec.js';

const rel = ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]] as const;

describe('change log reading', () => {
  it('reads a transaction whose Begin is in a segment before fromLsn and its Commit after', async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    await log.writeSegment(1, lsnValue('0/100'), [
      rel,
      ['B', 10, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['1']],
      ['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z'],
      // A large transaction begins; the segment is cut before it commits.
      ['B', 11, '0/200', '2026-11-21T10:00:01.000000Z'],
      ['I', 1, ['2']],
    ]);
    await log.writeSegment(2, lsnValue('0/210'), [
      rel,
      ['I', 1, ['3']],
      ['C', '0/200', '0/210', '2026-11-21T10:00:01.000000Z'],
    ]);
    const read = async (from?: string) => {
      const out: Array<[number, string[]]> = [];
      for await (const tx of readTransactions(
        log,
        from === undefined ? {} : { fromLsn: lsnValue(from) },
      )) {
        out.push([tx.xid, tx.changes.map((c) => String(c.row?.[0]))]);
      }
      return out;
    };
    expect(await read()).toEqual([
      [10, ['1']],
      [11, ['2', '3']],
    ]);
    expect(await read('0/150')).toEqual([[11, ['2', '3']]]);
  });

  it('reads segments written in format 1 (JSON lines) like format 2', async () => {
    const storage = new MemoryStorage();
    const records = [
      rel,
      ['B', 10, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['1']],
      ['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z'],
      ['H', '0/110', '2026-11-21T10:00:01.000000Z'],
    ];
    const lines = Buffer.from(`${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
    await storage.write(
      `changes/old/${'1'.padStart(12, '0')}-${'100'.padStart(16, '0')}.seg`,
      await encodeChunk(lines),
    );
    const log = new ChangeLog(storage, 'old');
    const beats: bigint[] = [];
    const txs = [];
    for await (const tx of readTransactions(log, { onHeartbeat: (l) => beats.push(l) }))
      txs.push(tx);
    expect(txs).toMatchObject([
      { xid: 10, commitLsn: 0xf0n, endLsn: 0x100n, changes: [{ op: 'insert', row: ['1'] }] },
    ]);
    expect(beats).toEqual([0x110n]);
    expect(await log.readSegment((await log.segments())[0]!)).toEqual(records);
  });

  it('refuses a damaged segment before yielding anything of it', async () => {
    const storage = new MemoryStorage();
    const log = new ChangeLog(storage, 'prod');
    await log.writeSegment(1, lsnValue('0/100'), [
      rel,
      ['B', 10, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['1']],
      ['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z'],
    ]);
    const key = (await log.segments())[0]!.key;
    const { content } = await decodeChunk(await storage.read(key));
    content[content.length - 45]! ^= 0x01; // inside the last frames, not the checksum
    await storage.write(key, await encodeChunk(content));
    const seen: number[] = [];
    const err = await (async () => {
      for await (const tx of readTransactions(log)) seen.push(tx.xid);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DamagedError);
    expect((err as Error).message).toMatch(/change-log segment .* is damaged \(checksum mismatch/);
    expect(seen).toEqual([]);
  });

  it('skips only segments whose every transaction committed before the start', () => {
    const seg = (seq: number, committed: number) => ({
      key: `k${seq}`,
      seq,
      committed: BigInt(committed),
      size: 1,
    });
    const segs = [seg(1, 100), seg(2, 100), seg(3, 200), seg(4, 300)];
    expect(skippable(segs, undefined)).toBe(0);
    expect(skippable(segs, 50n)).toBe(0);
    expect(skippable(segs, 150n)).toBe(0); // segment 1 is the first with committed 100: keep from there
    expect(skippable(segs, 250n)).toBe(2);
    expect(skippable(segs, 1000n)).toBe(3);
  });
});
