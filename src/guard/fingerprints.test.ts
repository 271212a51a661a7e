import { describe, expect, it } from 'vitest';
import type { ServerIdentity } from '../pg/server-info.js';
import { Repository } from '../repo/repository.js';
import { MemoryStorage } from '../storage/memory.js';
import { compareFingerprint, FingerprintStore, sameDatabase } from './fingerprints.js';

const prod: ServerIdentity = {
  systemIdentifier: '7001',
  database: 'shop',
  host: 'db1',
  port: 5432,
};

async function store(): Promise<FingerprintStore> {
  return new FingerprintStore(await Repository.init(new MemoryStorage()));
}

describe('fingerprint records', () => {
  it('keeps the first observation: a second recordFirst changes nothing', async () => {
    const s = await store();
    expect(await s.recordFirst('prod', prod)).toBe(true);
    expect(await s.recordFirst('prod', { ...prod, database: 'other' })).toBe(false);
    expect((await s.get('prod'))?.database).toBe('shop');
    expect(await s.get('nope')).toBeUndefined();
  });

  it('compares system identifier, database and host, but not port', async () => {
    const s = await store();
    await s.recordFirst('prod', prod);
    const rec = (await s.get('prod'))!;
    expect(compareFingerprint(rec, { ...prod, port: 6432 })).toEqual([]);
    expect(compareFingerprint(rec, { ...prod, host: 'db2' })).toEqual([
      { field: 'host', recorded: 'db1', current: 'db2' },
    ]);
    expect(
      compareFingerprint(rec, { ...prod, systemIdentifier: '9', database: 'x' }).map(
        (c) => c.field,
      ),
    ).toEqual(['systemIdentifier', 'database']);
  });

  it('treats the same cluster and database as the same database whatever the host', () => {
    const alias: ServerIdentity = { ...prod, host: 'alias' };
    const other: ServerIdentity = { ...prod, database: 'other' };
    expect(sameDatabase(prod, alias)).toBe(true);
    expect(sameDatabase(prod, other)).toBe(false);
  });

  it('replaces a record on accept, with the targets it shares a database with', async () => {
    const s = await store();
    await s.recordFirst('staging', { ...prod, database: 'staging' });
    const r = await s.accept('staging', prod, ['prod', 'ci']);
    expect(r).toMatchObject({ database: 'shop', acceptedSameAs: ['ci', 'prod'] });
    expect((await s.all()).map((x) => x.target)).toEqual(['staging']);
  });
});
