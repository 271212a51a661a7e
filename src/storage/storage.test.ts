import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { storageSuite } from '../../test/storage/backend-suite.js';
import { LocalStorage } from './local.js';
import { MemoryStorage } from './memory.js';

storageSuite('memory', async () => ({ storage: new MemoryStorage(), cleanup: async () => {} }));

storageSuite('local directory', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fb-storage-'));
  return {
    storage: new LocalStorage(dir),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

it('local storage leaves no temporary files behind after writes', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fb-storage-'));
  const s = new LocalStorage(dir);
  await s.write('x/y', Buffer.from('1'));
  await s.writeIfAbsent('x/y', Buffer.from('2'));
  await s.writeIfAbsent('x/z', Buffer.from('3'));
  expect((await readdir(path.join(dir, 'x'))).sort()).toEqual(['y', 'z']);
  await rm(dir, { recursive: true, force: true });
});
