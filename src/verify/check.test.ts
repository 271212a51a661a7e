import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.js';
import { ChangeLog } from '../repo/changelog.js';
import { ChunkStore, chunkKey, type PutResult } from '../repo/chunks.js';
import { Repository } from '../repo/repository.js';
import { type ChunkRef, type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import { MemoryStorage } from '../storage/memory.js';
import { checkRepository, describeUses, parseReadDataSubset } from './check.js';

function ref(p: PutResult, rows: number, size: number): ChunkRef {
  return { id: p.id, rows, size, stored: p.storedSize, first: null, last: null };
}

function manifest(id: string, chunks: readonly ChunkRef[]): SnapshotManifest {
  const sum = (f: (c: ChunkRef) => number) => chunks.reduce((a, c) => a + f(c), 0);
  const table = {
    schema: 'public',
    name: 'items',
    columns: ['id'],
    key: ['id'],
    keyKind: 'primary' as const,
    boundaryBits: 10,
    rows: sum((c) => c.rows),
    bytes: sum((c) => c.size),
    storedBytes: sum((c) => c.stored),
    chunks,
  };
  return {
    format: 'flashback-snapshot',
    version: 1,
    id,
    target: 'prod',
    database: 'app',
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
    systemIdentifier: '1',
    host: 'db',
    serverVersion: '17.0',
    serverVersionNum: 170000,
    lsn: '0/0',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:00:01.000Z',
    schema: {},
    tables: [table],
    totals: {
      tables: 1,
      rows: table.rows,
      bytes: table.bytes,
      storedBytes: table.storedBytes,
      newChunks: 0,
      newBytes: 0,
    },
  };
}

/** A repository with two snapshots sharing chunk `a`; `b` and `c` are their own. */
async function fixture() {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage);
  const chunks = new ChunkStore(storage);
  const a = await chunks.put(Buffer.from('1\n2\n'));
  const b = await chunks.put(Buffer.from('3\n'));
  const c = await chunks.put(Buffer.from('4\n'));
  const s1 = manifest('20260101-000000-aaaa', [ref(a, 2, 4), ref(b, 1, 2)]);
  const s2 = manifest('20260102-000000-bbbb', [ref(a, 2, 4), ref(c, 1, 2)]);
  const snapshots = new SnapshotStore(storage);
  await snapshots.commit(s1);
  await snapshots.commit(s2);
  return { storage, repo, a, b, c, s1, s2 };
}

describe('parseReadDataSubset', () => {
  it('accepts N% with 0 < N <= 100 and rejects the rest', () => {
    expect(parseReadDataSubset('10%')).toBe(10);
    expect(parseReadDataSubset('2.5%')).toBe(2.5);
    expect(parseReadDataSubset('100%')).toBe(100);
    for (const bad of ['0%', '100.1%', '10', '%', '-5%', 'ten%', '']) {
      expect(() => parseReadDataSubset(bad), bad).toThrow(UsageError);
    }
  });
});

describe('describeUses', () => {
  it('groups snapshots by table and chunk position (counted from 1, as verify counts)', () => {
    expect(
      describeUses([
        { snapshot: 'A', table: 'public.files', chunk: 3 },
        { snapshot: 'B', table: 'public.files', chunk: 3 },
        { snapshot: 'C', table: 'public.files', chunk: 4 },
      ]),
    ).toBe('public.files chunk 4 in snapshots A, B; public.files chunk 5 in snapshot C');
  });
});

describe('checkRepository', () => {
  it('passes a clean repository and reads a random subset of the asked size', async () => {
    const { repo } = await fixture();
    const r = await checkRepository({ repo, readDataPercent: 50 });
    expect(r.findings).toEqual([]);
    // 3 distinct chunks: 50% rounds up to 2.
    expect(r.totals).toMatchObject({ snapshots: 2, chunks: 3, chunksRead: 2, errors: 0 });
  });

  it('names every snapshot using a damaged chunk, and only the manifests whose size is wrong', async () => {
    const { storage, repo, a, b, s1, s2 } = await fixture();
    const stored = await storage.read(chunkKey(a.id));
    stored[stored.length - 1] = stored[stored.length - 1]! ^ 0xff;
    await storage.write(chunkKey(a.id), stored);
    await storage.write(chunkKey(b.id), (await storage.read(chunkKey(b.id))).subarray(0, 6));
    expect((await checkRepository({ repo })).totals.errors).toBe(1); // only b: same size as recorded
    const r = await checkRepository({ repo, readDataPercent: 100 });
    const byKind = Object.fromEntries(r.findings.map((f) => [f.kind, f]));
    expect(byKind['chunk-damaged']).toMatchObject({
      chunkId: a.id,
      snapshots: [s1.id, s2.id],
      table: 'public.items',
      chunk: 0,
    });
    expect(byKind['chunk-size']).toMatchObject({ chunkId: b.id, snapshots: [s1.id], chunk: 1 });
    expect(r.totals.chunksRead).toBe(2); // the truncated chunk is not read again
  });

  it('finds a manifest whose counts do not add up, and one of a newer version', async () => {
    const { storage, repo, a } = await fixture();
    const altered = { ...manifest('20260103-000000-cccc', [ref(a, 2, 4)]) };
    await storage.write(
      'snapshots/20260103-000000-cccc.json',
      Buffer.from(JSON.stringify({ ...altered, tables: [{ ...altered.tables[0], rows: 3 }] })),
    );
    await storage.write(
      'snapshots/20260104-000000-dddd.json',
      Buffer.from(JSON.stringify({ ...manifest('20260104-000000-dddd', []), version: 2 })),
    );
    const r = await checkRepository({ repo });
    expect(r.findings.map((f) => [f.kind, f.snapshots[0]])).toEqual([
      ['manifest-invalid', '20260103-000000-cccc'],
      ['manifest-version', '20260104-000000-dddd'],
    ]);
    expect(r.findings[0]!.message).toContain('rows is 3 but its chunks add up to 2');
    // The altered manifest's chunk list is still checked.
    expect(r.totals.snapshotsChecked).toBe(3);
  });
});

describe('check of change logs', () => {
  it('finds a segment missing from the sequence, and with read-data a damaged one', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage);
    const log = new ChangeLog(storage, 'prod');
    await log.writeInfo({
      format: 'flashback-capture',
      version: 1,
      target: 'prod',
      slot: 'flashback_prod',
      publication: 'flashback',
      systemIdentifier: '1',
      database: 'app',
      startLsn: '0/10',
      created: '2026-11-21T00:00:00Z',
    });
    const heartbeat = (n: number) => [['H', `0/${n}0`, '2026-11-21T00:00:00.000000Z'] as const];
    await log.writeSegment(1, 0n, heartbeat(1));
    const second = await log.writeSegment(2, 0n, heartbeat(2));
    const third = await log.writeSegment(3, 0n, heartbeat(3));
    await log.writeSegment(4, 0n, heartbeat(4));
    expect((await checkRepository({ repo, readDataPercent: 100 })).findings).toEqual([]);

    // A flipped byte in the third segment: found only by reading it.
    const bytes = Buffer.from(await storage.read(third));
    bytes[bytes.length - 3]! ^= 0xff;
    await storage.write(third, bytes);
    expect((await checkRepository({ repo })).findings).toEqual([]);
    const damaged = await checkRepository({ repo, readDataPercent: 100 });
    expect(damaged.findings.map((f) => [f.kind, f.object])).toEqual([['changelog-damaged', third]]);

    // The second segment gone: its changes are lost, found without reading data.
    await storage.delete(second);
    const missing = await checkRepository({ repo });
    // Once, not again for every segment after it.
    expect(missing.findings.map((f) => f.kind)).toEqual(['changelog-missing']);
    expect(missing.findings[0]!.message).toContain('lacks segment 2 (the next is 3)');
    await storage.delete(third);
    const two = await checkRepository({ repo });
    expect(two.findings.map((f) => f.message)).toEqual([
      expect.stringContaining('lacks segments 2-3 (the next is 4)'),
    ]);
  });
});
