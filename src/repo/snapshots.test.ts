import { describe, expect, it } from 'vitest';
import { DamagedError, ExitCode, RepositoryError, UsageError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { newSnapshotId, type SnapshotManifest, SnapshotStore } from './snapshots.js';

function manifest(id: string, target = 'prod', version = 1): SnapshotManifest {
  return {
    format: 'flashback-snapshot',
    version,
    id,
    target,
    database: 'app',
    encoding: 'UTF8',
    collate: 'C',
    ctype: 'C',
    systemIdentifier: '1',
    host: 'h',
    serverVersion: '17.10',
    serverVersionNum: 170010,
    lsn: '0/1',
    startedAt: '',
    finishedAt: '',
    schema: {},
    tables: [],
    totals: { tables: 0, rows: 0, bytes: 0, storedBytes: 0, newChunks: 0, newBytes: 0 },
  };
}

describe('snapshot manifests', () => {
  it('commits once, never overwrites, and resolves ids, prefixes and latest per target', async () => {
    const store = new SnapshotStore(new MemoryStorage());
    await store.commit(manifest('20261121-100000-aaaa'));
    await store.commit(manifest('20261121-110000-bbbb', 'staging'));
    await store.commit(manifest('20261121-120000-cccc'));
    await expect(store.commit(manifest('20261121-100000-aaaa'))).rejects.toThrow(/already exists/);
    expect(await store.ids()).toEqual([
      '20261121-100000-aaaa',
      '20261121-110000-bbbb',
      '20261121-120000-cccc',
    ]);
    expect((await store.resolve('latest')).id).toBe('20261121-120000-cccc');
    expect((await store.resolve('latest', 'staging')).id).toBe('20261121-110000-bbbb');
    expect((await store.resolve('20261121-11')).id).toBe('20261121-110000-bbbb');
    await expect(store.resolve('20261121-1')).rejects.toThrow(/ambiguous/);
    await expect(store.resolve('nope')).rejects.toBeInstanceOf(UsageError);
    await expect(store.resolve('latest', 'other')).rejects.toThrow(
      /no snapshots of target "other"/,
    );
  });

  it('rejects a manifest of a newer format, and a damaged one', async () => {
    const s = new MemoryStorage();
    const store = new SnapshotStore(s);
    await store.commit(manifest('20261121-100000-aaaa', 'prod', 2));
    const err = await store.read('20261121-100000-aaaa').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryError);
    expect(err).toMatchObject({ exitCode: ExitCode.repository });
    expect((err as Error).message).toContain('format version 2; this Flashback reads up to 1');
    await s.write('snapshots/20261121-100000-bbbb.json', Buffer.from('{"format":'));
    await expect(store.read('20261121-100000-bbbb')).rejects.toThrow(/not valid JSON/);
  });

  it('leaves an unreadable manifest out when told how to report it, and throws when not', async () => {
    const s = new MemoryStorage();
    const seen: string[] = [];
    const tolerant = new SnapshotStore(s, {
      onUnreadable: (m) => seen.push(`${m.id} ${m.error.code}`),
    });
    const strict = new SnapshotStore(s);
    await strict.commit(manifest('20261121-100000-aaaa'));
    await s.write('snapshots/20261121-110000-bbbb.json', Buffer.from('{"format":'));
    await strict.commit(manifest('20261121-120000-cccc', 'prod', 2));
    await s.write('snapshots/20261121-130000-dddd.json', Buffer.from('null'));
    const damaged = await strict.all().catch((e: unknown) => e);
    expect(damaged).toBeInstanceOf(DamagedError);
    expect(damaged).toMatchObject({ exitCode: ExitCode.damaged, code: 'snapshot.damaged' });
    expect((await tolerant.all()).map((m) => m.id)).toEqual(['20261121-100000-aaaa']);
    expect((await tolerant.resolve('latest', 'prod')).id).toBe('20261121-100000-aaaa');
    expect(seen).toContain('20261121-110000-bbbb snapshot.damaged');
    expect(seen).toContain('20261121-120000-cccc repository.version');
    expect(seen).toContain('20261121-130000-dddd snapshot.damaged');
    // Asked for by name, a damaged snapshot is an error all the same.
    await expect(tolerant.resolve('20261121-11')).rejects.toMatchObject({
      exitCode: ExitCode.damaged,
    });
  });

  it('orders snapshots of the same second by when they started, not by their random part', async () => {
    const store = new SnapshotStore(new MemoryStorage());
    const at = (id: string, startedAt: string) => ({ ...manifest(id), startedAt });
    await store.commit(at('20261121-100000-ffff', '2026-11-21T10:00:00.100Z'));
    await store.commit(at('20261121-100000-0000', '2026-11-21T10:00:00.900Z'));
    await store.commit(at('20261121-095959-9999', '2026-11-21T09:59:59.950Z'));
    await store.commit(at('20261121-100001-1111', '2026-11-21T10:00:01.000Z'));
    expect(await store.ids()).toEqual([
      '20261121-095959-9999',
      '20261121-100000-ffff',
      '20261121-100000-0000',
      '20261121-100001-1111',
    ]);
    expect((await store.resolve('latest')).id).toBe('20261121-100001-1111');
  });

  it('marks a snapshot removed before removing it: a prune killed in between leaves no snapshot gone unmarked', async () => {
    const storage = new MemoryStorage();
    const store = new SnapshotStore(storage);
    await store.commit(manifest('20261121-160530-aaaa'));
    // The process dies as it deletes the manifest.
    const killed = Object.assign(Object.create(storage) as MemoryStorage, {
      delete: async () => {
        throw new Error('killed');
      },
    });
    await expect(new SnapshotStore(killed).delete('20261121-160530-aaaa')).rejects.toThrow(
      'killed',
    );
    expect(await store.catalog()).toEqual({
      ids: ['20261121-160530-aaaa'],
      pruned: new Set(['20261121-160530-aaaa']),
    });
    await store.delete('20261121-160530-aaaa');
    expect(await store.catalog()).toEqual({ ids: [], pruned: new Set(['20261121-160530-aaaa']) });
  });

  it('checks a manifest against its checksum, and refuses one that lacks what readers rely on (exit 8)', async () => {
    const storage = new MemoryStorage();
    const store = new SnapshotStore(storage);
    const id = '20261121-160530-bbbb';
    await store.commit({ ...manifest(id), lsn: '3/AE2CBFC8' });
    const key = `snapshots/${id}.json`;
    const text = (await storage.read(key)).toString('utf8');
    expect(JSON.parse(text).checksum).toMatch(new RegExp(`^${id}:[0-9a-f]{64}$`));
    // Read back whole, without the checksum field.
    const read = await store.read(id);
    expect(read.lsn).toBe('3/AE2CBFC8');
    expect(read.checksum).toBeUndefined();
    // One bit of the LSN flipped (E to F): another moment, restored with exit 0 before.
    await storage.write(key, Buffer.from(text.replace('3/AE2CBFC8', '3/AF2CBFC8')));
    const err = await store.read(id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DamagedError);
    expect((err as DamagedError).exitCode).toBe(ExitCode.damaged);
    expect((err as Error).message).toBe(
      `snapshot ${id}: manifest does not match its checksum (changed or damaged since it was written)`,
    );
    // A manifest from before checksums is read as it is, unless it lacks a field readers use.
    const { totals: _, ...noTotals } = manifest(id);
    await storage.write(key, Buffer.from(JSON.stringify(noTotals)));
    await expect(store.read(id)).rejects.toThrow(
      `snapshot ${id}: manifest is incomplete (no totals)`,
    );
    await storage.write(key, Buffer.from(JSON.stringify(manifest(id))));
    expect((await store.read(id)).id).toBe(id);
    // Committing a manifest made from a read one writes a checksum of its own.
    const id2 = '20261121-160531-cccc';
    await store.commit({ ...read, id: id2 });
    expect((await store.read(id2)).lsn).toBe('3/AE2CBFC8');
    // A build that did not know the field copies it into a manifest made
    // from one: it names the other id, and is not checked.
    const copied = JSON.parse((await storage.read(`snapshots/${id2}.json`)).toString('utf8'));
    await storage.write(
      `snapshots/20261121-160532-dddd.json`,
      Buffer.from(JSON.stringify({ ...copied, id: '20261121-160532-dddd', lsn: '3/B0000000' })),
    );
    expect((await store.read('20261121-160532-dddd')).lsn).toBe('3/B0000000');
  });

  it('makes sortable, readable ids', () => {
    expect(newSnapshotId(new Date('2026-11-21T16:05:30.123Z'))).toMatch(
      /^20261121-160530-[0-9a-f]{4}$/,
    );
  });
});
