import { describe, expect, it } from 'vitest';
import type { ResolvedTarget } from '../config/targets.js';
import type { ServerIdentity } from '../pg/server-info.js';
import { Repository } from '../repo/repository.js';
import { MemoryStorage } from '../storage/memory.js';
import { compareFingerprint, FingerprintStore, sameDatabase } from './fingerprints.js';
import { identityLine } from './guard.js';
import { checkIdentity } from './identity.js';

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
  it('a first contact with a repository that cannot be written goes on, unrecorded, and says so', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage);
    const readOnly = Object.assign(Object.create(storage) as MemoryStorage, {
      writeIfAbsent: async () => {
        throw Object.assign(new Error("EROFS: read-only file system, open 'targets/.tmp'"), {
          code: 'EROFS',
        });
      },
    });
    const s = new FingerprintStore(await Repository.open(readOnly));
    const target = { kind: 'config', name: 'copy' } as unknown as ResolvedTarget;
    const check = await checkIdentity(target, prod, s);
    expect(check.status).toBe('new');
    expect(identityLine(check)).toBe(
      "first contact; fingerprint NOT recorded: the repository cannot be written (EROFS: read-only file system, open 'targets/.tmp')",
    );
    expect(await new FingerprintStore(repo).get('copy')).toBeUndefined();
    // Any other failure is not swallowed.
    const broken = Object.assign(Object.create(storage) as MemoryStorage, {
      writeIfAbsent: async () => {
        throw new Error('bug');
      },
    });
    await expect(
      checkIdentity(target, prod, new FingerprintStore(await Repository.open(broken))),
    ).rejects.toThrow('bug');
  });

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
    const r = await s.accept('staging', prod, ['prod', 'ci'], true);
    expect(r).toMatchObject({
      database: 'shop',
      acceptedSameAs: ['ci', 'prod'],
      acceptedProtected: true,
    });
    expect((await s.all()).map((x) => x.target)).toEqual(['staging']);
  });
});
