import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DamagedError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { isoToPgTimestamp } from '../util/pg-time.js';
import {
  type Change,
  ChangeLog,
  findCommitLsn,
  lsnValue,
  readTransactions,
  scanTransactions,
  skippable,
  storedChange,
  type Transaction,
} from './changelog.js';
import { encodeRecord, lastBeginMicros, SegmentBuilder } from './changelog-format.js';
import { decodeChunk, encodeChunk } from './codec.js';

const rel = ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]] as const;
/** Table 1 described again with a column added. */
const wide = [
  'R',
  1,
  'public',
  't',
  'd',
  [
    ['id', 23, -1, true],
    ['v', 25, -1, false],
  ],
] as const;

describe('change log reading', () => {
  it('finds a transaction from the newest segment back: damage in older segments does not stop it', async () => {
    const storage = new MemoryStorage();
    const log = new ChangeLog(storage, 'prod');
    const tx = (xid: number, at: number) => [
      ['B', xid, `0/${(at + 8).toString(16)}`, '2026-11-21T10:00:00.000000Z'],
      ['I', 1, [String(xid)]],
      ['C', `0/${at.toString(16)}`, `0/${(at + 8).toString(16)}`, '2026-11-21T10:00:00.000000Z'],
    ];
    const old = await log.writeSegment(1, lsnValue('0/108'), [rel, ...tx(10, 0x100)] as never);
    await log.writeSegment(2, lsnValue('0/208'), [rel, ...tx(11, 0x200)] as never);
    // xid 12 committed twice in the log's life (ids wrap around): the newer one is meant.
    await log.writeSegment(3, lsnValue('0/308'), [rel, ...tx(12, 0x300)] as never);
    await log.writeSegment(4, lsnValue('0/408'), [rel, ...tx(12, 0x400)] as never);
    await storage.write(old, Buffer.from('damaged'));
    expect(await findCommitLsn(log, 11)).toBe(lsnValue('0/208'));
    expect(await findCommitLsn(log, 12)).toBe(lsnValue('0/408'));
    // An id found only by reading the damaged segment is its DamagedError.
    await expect(findCommitLsn(log, 10)).rejects.toBeInstanceOf(DamagedError);
    await storage.delete(old);
    expect(await findCommitLsn(log, 99)).toBeUndefined();
  });

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
        out.push([tx.xid, [...tx.changes].map((c) => String(c.row?.[0]))]);
      }
      return out;
    };
    expect(await read()).toEqual([
      [10, ['1']],
      [11, ['2', '3']],
    ]);
    expect(await read('0/150')).toEqual([[11, ['2', '3']]]);
  });

  it('reads segments whose <committed> is a later heartbeat or keepalive position, and segments without messages', async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    await log.writeSegment(1, lsnValue('0/110'), [
      rel,
      ['B', 10, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['1']],
      ['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z'],
      // A heartbeat after the commit: the log is complete up to it.
      ['H', '0/110', '2026-11-21T10:00:01.000000Z'],
    ]);
    // Idle: a keepalive's position stored on its own (capture, before the server shuts down).
    await log.writeSegment(2, lsnValue('0/180'), new SegmentBuilder().content());
    await log.writeSegment(3, lsnValue('0/210'), [
      rel,
      ['B', 11, '0/200', '2026-11-21T10:00:02.000000Z'],
      ['I', 1, ['2']],
      ['C', '0/200', '0/210', '2026-11-21T10:00:02.000000Z'],
    ]);
    expect((await log.segments()).map((s) => s.committed)).toEqual([0x110n, 0x180n, 0x210n]);
    const read = async (from?: string) => {
      const out: number[] = [];
      await scanTransactions(log, from === undefined ? {} : { fromLsn: lsnValue(from) }, (tx) => {
        out.push(tx.xid);
        return undefined;
      });
      return out;
    };
    expect(await read()).toEqual([10, 11]);
    expect(await read('0/150')).toEqual([11]);
    expect(await read('0/211')).toEqual([]);
    // Read in two parts (the second after segment 2's position), as long windows are.
    const segs = await log.segments();
    const second: number[] = [];
    await scanTransactions(
      log,
      {},
      (tx) => {
        second.push(tx.xid);
        return undefined;
      },
      { segments: segs.slice(1), after: segs[0]!.committed },
    );
    expect(second).toEqual([11]);
    // A window from 0/200 skips segment 1 (complete up to 0/110); segment 2 might begin a transaction.
    expect(skippable(segs, lsnValue('0/200'))).toBe(1);
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
      txs.push({ ...tx, changes: [...tx.changes] });
    expect(txs).toMatchObject([
      { xid: 10, commitLsn: 0xf0n, endLsn: 0x100n, changes: [{ op: 'insert', row: ['1'] }] },
    ]);
    expect(beats).toEqual([0x110n]);
    expect(await log.readSegment((await log.segments())[0]!)).toEqual(records);
    // The last transaction begun in it, as the split of a long window looks for it.
    const seg = (await log.segments())[0]!;
    expect(await log.decode(seg, lastBeginMicros)).toBe(
      isoToPgTimestamp('2026-11-21T10:00:00.000000Z'),
    );
  });

  it("holds a transaction's changes until it is used: the same each time it is read, each with the relation as described before it", async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    await log.writeSegment(1, lsnValue('0/100'), [
      rel,
      // Cut off by a crash: its changes are never read.
      ['B', 9, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['0']],
      ['B', 9, '0/F0', '2026-11-21T10:00:00.000000Z'],
      ['I', 1, ['1']],
      ['D', 1, ['1'], null],
      // A column added within the transaction: the table is described again.
      wide,
      ['U', 1, null, null, ['2', 'two']],
    ]);
    await log.writeSegment(2, lsnValue('0/100'), [
      wide,
      ['T', [1], false, false],
      ['I', 1, ['3', 'three']],
      ['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z'],
    ]);
    const expected = [
      ['insert', 1, null, ['1']],
      ['delete', 1, ['1'], null],
      ['update', 2, null, ['2', 'two']],
      ['truncate', 2, null, null],
      ['insert', 2, null, ['3', 'three']],
    ];
    // Held from the first change on, from the second, or none (the usual limit).
    for (const decodedChanges of [0, 1, undefined]) {
      const txs = [];
      for await (const tx of readTransactions(log, { decodedChanges })) txs.push(tx);
      expect(txs.map((t) => t.xid)).toEqual([9]);
      const changes = txs[0]!.changes;
      expect(changes.length).toBe(5);
      const seen = () => [...changes].map((c) => [c.op, c.columns.length, c.key, c.row] as const);
      expect(seen()).toEqual(expected);
      expect(seen()).toEqual(expected);
    }
  });

  it('scans in place what readTransactions yields: duplicates and cut-off transactions skipped, stopping when told', async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    const at = '2026-11-21T10:00:00.000000Z';
    await log.writeSegment(1, lsnValue('0/300'), [
      rel,
      ['B', 8, '0/100', at],
      ['I', 1, ['0']],
      ['B', 9, '0/200', at], // 8 was cut off
      ['I', 1, ['1']],
      ['S', '0/1F0', '{"kind":"x"}'],
      ['D', 1, ['1'], null],
    ]);
    await log.writeSegment(2, lsnValue('0/300'), [
      rel,
      ['T', [1], false, false],
      ['C', '0/200', '0/208', at],
      ['B', 9, '0/200', at], // delivered again after a restart
      ['I', 1, ['1']],
      ['C', '0/200', '0/208', at],
      ['B', 10, '0/300', at],
      ['U', 1, null, null, ['5']],
      ['C', '0/300', '0/308', at],
    ]);
    const show = (c: Change) => [c.op, c.key, c.row];
    const read = [];
    for await (const tx of readTransactions(log)) {
      read.push([tx.xid, tx.commitLsn, tx.endLsn, tx.schema, [...tx.changes].map(show)]);
    }
    const scanned: unknown[] = [];
    await scanTransactions(log, {}, (tx) => {
      const changes: unknown[] = [];
      tx.changes.forEachStored(
        (content, start, end, relation) =>
          changes.push(show(storedChange(content, start, end, relation))),
        (c) => changes.push(show(c)),
      );
      scanned.push([tx.xid, tx.commitLsn, tx.endLsn, tx.schema, changes]);
      return undefined;
    });
    expect(read).toEqual([
      [
        9,
        0x200n,
        0x208n,
        [{ at: 1, lsn: 0x1f0n, event: '{"kind":"x"}' }],
        [
          ['insert', null, ['1']],
          ['delete', ['1'], null],
          ['truncate', null, null],
        ],
      ],
      [10, 0x300n, 0x308n, undefined, [['update', null, ['5']]]],
    ]);
    expect(scanned).toEqual(read);
    const first: number[] = [];
    await scanTransactions(log, {}, (tx) => {
      first.push(tx.xid);
      return false;
    });
    expect(first).toEqual([9]);
  });

  it('keeps a transaction larger than the budget in a temporary file: the same changes, in order, the file freed after', async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    const at = '2026-11-21T10:00:00.000000Z';
    const other = ['R', 2, 'public', 'u', 'd', [['id', 23, -1, true]]] as const;
    const pad = 'x'.repeat(300);
    const rows = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ['I', 1, [String(from + i)]] as const);
    // One transaction over three segments (a relation described again, a
    // truncate, a schema event, another table), then a small one.
    await log.writeSegment(1, lsnValue('0/100'), [
      rel,
      ['B', 9, '0/200', at],
      ...rows(0, 2000),
      wide,
      ['U', 1, null, null, ['5', pad]],
    ]);
    await log.writeSegment(2, lsnValue('0/100'), [
      wide,
      other,
      ['T', [2], false, false],
      ['S', '0/1F0', '{"kind":"x"}'],
      ...Array.from({ length: 2000 }, (_, i) => ['I', 1, [String(i), pad]] as const),
      ['D', 2, ['7'], null],
    ]);
    await log.writeSegment(3, lsnValue('0/308'), [
      wide,
      ['U', 1, ['5'], null, ['6', pad]],
      ['C', '0/200', '0/208', at],
      ['B', 10, '0/300', at],
      ['I', 1, ['1', 'small']],
      ['C', '0/300', '0/308', at],
    ]);
    const show = (c: Change) => `${c.op} ${c.table} ${c.columns.length} ${c.key} ${c.row}`;
    const fds = () => readdirSync('/proc/self/fd').length;
    const scan = async (heldBytes?: number) => {
      const out: unknown[] = [];
      const files: number[] = [];
      const base = fds();
      await scanTransactions(log, { heldBytes }, (tx) => {
        files.push(fds() - base);
        const changes: string[] = [];
        tx.changes.forEachStored(
          (content, start, end, relation) =>
            changes.push(show(storedChange(content, start, end, relation))),
          (c) => changes.push(show(c)),
        );
        out.push([tx.xid, tx.schema, tx.changes.length, changes, [...tx.changes].map(show)]);
        return undefined;
      });
      return { out, files, after: fds() - base };
    };
    const inMemory = await scan();
    const spilled = await scan(2000);
    expect(inMemory.files).toEqual([0, 0]);
    // The large one in a file (one more descriptor open while it is read), the small one not.
    expect(spilled.files).toEqual([1, 0]);
    expect(spilled.after).toBe(0);
    expect(spilled.out).toEqual(inMemory.out);
    const big = inMemory.out[0] as [number, unknown, number, string[], string[]];
    expect(big[2]).toBe(4004);
    expect(big[3]).toEqual(big[4]);
    expect(big[3].slice(2000, 2002)).toEqual([
      `update t 2 null 5,${pad}`,
      'truncate u 1 null null',
    ]);
    expect(big[3].at(-1)).toBe(`update t 2 5 6,${pad}`);
    expect(big[1]).toEqual([{ at: 2002, lsn: 0x1f0n, event: '{"kind":"x"}' }]);

    // readTransactions: a file moves with the transaction, freed when the next is asked for.
    const base = fds();
    const txs: Transaction[] = [];
    const seen: Array<[number, number, number, string[]]> = [];
    for await (const tx of readTransactions(log, { heldBytes: 2000 })) {
      seen.push([tx.xid, tx.changes.length, fds() - base, [...tx.changes].map(show)]);
      txs.push(tx);
    }
    expect(fds() - base).toBe(0);
    expect(seen.map(([xid, n, files]) => [xid, n, files])).toEqual([
      [9, 4004, 1],
      [10, 1, 0],
    ]);
    expect(seen[0]![3]).toEqual(big[4]);
    expect(() => [...txs[0]!.changes]).toThrow(
      'the changes of a transaction were read after the next transaction (their temporary file is closed)',
    );
  });

  it('names the segment when a change it held cannot be decoded', async () => {
    const log = new ChangeLog(new MemoryStorage(), 'prod');
    const b = new SegmentBuilder();
    for (const r of [rel, ['B', 10, '0/F0', '2026-11-21T10:00:00.000000Z']] as const)
      b.append(encodeRecord(r));
    // An Insert of table 1 whose one column is of a kind pgoutput does not send ('x').
    b.append(Buffer.from([0x49, 0, 0, 0, 1, 0x4e, 0, 1, 0x78]));
    b.append(encodeRecord(['C', '0/F0', '0/100', '2026-11-21T10:00:00.000000Z']));
    await log.writeSegment(1, lsnValue('0/100'), Buffer.from(b.content()));
    const txs = [];
    for await (const tx of readTransactions(log, { decodedChanges: 0 })) txs.push(tx);
    expect(txs).toHaveLength(1);
    const err = (() => {
      try {
        return [...txs[0]!.changes];
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(DamagedError);
    expect((err as Error).message).toMatch(
      /change-log segment .*000000000001-.* is damaged \(unknown column kind 0x78\)/,
    );
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
