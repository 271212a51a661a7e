/**
 * The contract every storage backend must meet, as one suite. A backend's
 * test file calls `storageSuite(name, factory)`. (STYLE.md: one suite for all
 * backends; S3 will run it against a real server.)
 */
import { describe, expect, it } from 'vitest';
import { ObjectNotFoundError, type Storage } from '../../src/storage/storage.js';

export function storageSuite(
  name: string,
  make: () => Promise<{ storage: Storage; cleanup: () => Promise<void> }>,
): void {
  describe(`storage backend: ${name}`, () => {
    const withStorage = (fn: (s: Storage) => Promise<void>) => async () => {
      const { storage, cleanup } = await make();
      try {
        await fn(storage);
      } finally {
        await cleanup();
      }
    };

    it(
      'writes and reads back the same bytes',
      withStorage(async (s) => {
        const data = Buffer.from([0, 1, 2, 255, 10, 13]);
        await s.write('a/b/c.bin', data);
        expect(await s.read('a/b/c.bin')).toEqual(data);
        expect(await s.stat('a/b/c.bin')).toEqual({ key: 'a/b/c.bin', size: 6 });
      }),
    );

    it(
      'reads byte ranges, short at the end',
      withStorage(async (s) => {
        await s.write('r', Buffer.from('0123456789'));
        expect((await s.read('r', { offset: 2, length: 3 })).toString()).toBe('234');
        expect((await s.read('r', { offset: 8, length: 10 })).toString()).toBe('89');
        expect((await s.read('r', { offset: 20, length: 5 })).length).toBe(0);
      }),
    );

    it(
      'reports a missing object as ObjectNotFoundError, and stat as undefined',
      withStorage(async (s) => {
        await expect(s.read('nope')).rejects.toBeInstanceOf(ObjectNotFoundError);
        expect(await s.stat('nope')).toBeUndefined();
      }),
    );

    it(
      'replaces on write, but never on writeIfAbsent',
      withStorage(async (s) => {
        expect(await s.writeIfAbsent('k', Buffer.from('first'))).toBe(true);
        expect(await s.writeIfAbsent('k', Buffer.from('second'))).toBe(false);
        expect((await s.read('k')).toString()).toBe('first');
        await s.write('k', Buffer.from('third'));
        expect((await s.read('k')).toString()).toBe('third');
      }),
    );

    it(
      'lets exactly one of many concurrent writeIfAbsent calls win',
      withStorage(async (s) => {
        const results = await Promise.all(
          Array.from({ length: 16 }, (_, i) => s.writeIfAbsent('lock', Buffer.from(`w${i}`))),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = results.indexOf(true);
        expect((await s.read('lock')).toString()).toBe(`w${winner}`);
      }),
    );

    it(
      'lists by prefix, across directories, without temporary files',
      withStorage(async (s) => {
        for (const k of [
          'snap/1.json',
          'snap/2.json',
          'snapx',
          'chunks/aa/1',
          'chunks/ab/2',
          'other',
        ])
          await s.write(k, Buffer.from(k));
        const keys = async (p: string) => {
          const out: string[] = [];
          for await (const o of s.list(p)) out.push(o.key);
          return out.sort();
        };
        expect(await keys('snap/')).toEqual(['snap/1.json', 'snap/2.json']);
        expect(await keys('snap')).toEqual(['snap/1.json', 'snap/2.json', 'snapx']);
        expect(await keys('chunks/a')).toEqual(['chunks/aa/1', 'chunks/ab/2']);
        expect(await keys('')).toHaveLength(6);
        expect(await keys('missing/')).toEqual([]);
      }),
    );

    it(
      'deletes, and deleting a missing key is fine',
      withStorage(async (s) => {
        await s.write('d', Buffer.from('x'));
        await s.delete('d');
        await s.delete('d');
        expect(await s.stat('d')).toBeUndefined();
      }),
    );

    it(
      'rejects keys that could escape the repository',
      withStorage(async (s) => {
        for (const bad of ['../x', '/abs', 'a//b', 'a/../b', '', 'sp ace']) {
          await expect(s.write(bad, Buffer.from('x'))).rejects.toThrow(/invalid storage key/);
        }
      }),
    );
  });
}
