/**
 * Picking rows out of chunks in worker threads, as built (dist/): the same
 * lines as inline, in order; a damaged or missing chunk fails with the
 * chunk's error (and hint), as an inline read would.
 */
import { describe, expect, it } from 'vitest';

const dist = async <T>(m: string): Promise<T> =>
  (await import(new URL(`../../dist/${m}`, import.meta.url).href)) as T;
const pick = await dist<typeof import('../../src/restore/pick.js')>('restore/pick.js');
const chunksMod = await dist<typeof import('../../src/repo/chunks.js')>('repo/chunks.js');
const codec = await dist<typeof import('../../src/repo/codec.js')>('repo/codec.js');
const memory = await dist<typeof import('../../src/storage/memory.js')>('storage/memory.js');

describe('the pick thread pool', () => {
  it('picks the same lines as inline, in threads, and reports damaged chunks as inline does', async () => {
    const storage = new memory.MemoryStorage();
    const chunks = new chunksMod.ChunkStore(storage);
    // Integer keys (read as numbers), text keys that look like integers, and two-column keys.
    const ints = Buffer.from(
      Array.from({ length: 30000 }, (_, i) => `${i}\tvalue\\t${i % 97}\n`).join(''),
    );
    const texts = Buffer.from('007\ta\n7\tb\n8\tc\n');
    const pairs = Buffer.from('1\tx\tone\n1\ty\ttwo\n2\tx\tthree\n');
    const ids = await Promise.all([ints, texts, pairs].map(async (c) => (await chunks.put(c)).id));
    const jobs = [
      { id: ids[0]!, keyColumns: 1, keys: ['3', '29999', '15000', '30001', '-1'] },
      { id: ids[1]!, keyColumns: 1, keys: ['7'] },
      { id: ids[1]!, keyColumns: 1, keys: ['007', '8'] },
      { id: ids[2]!, keyColumns: 2, keys: ['1\ty', '2\tx', '2\ty'] },
    ];
    const threaded = pick.createPicker(chunks, 2);
    const inline = pick.inlinePicker(chunks);
    try {
      const got = await Promise.all(jobs.map((j) => threaded.pick(j)));
      expect(got.map((b) => b.content.toString())).toEqual([
        '3\tvalue\\t3\n15000\tvalue\\t62\n29999\tvalue\\t26\n',
        '7\tb\n',
        '007\ta\n8\tc\n',
        '1\ty\ttwo\n2\tx\tthree\n',
      ]);
      expect(got.map((b) => b.rows)).toEqual([3, 1, 2, 2]);
      for (const [i, j] of jobs.entries()) {
        const b = await inline.pick(j);
        expect(b.content.equals(got[i]!.content)).toBe(true);
      }

      // Enough chunks for threads: in order, chunks without a wanted line left out.
      const many = Array.from({ length: 40 }, (_, i) => jobs[i % jobs.length]!);
      many.push({ id: ids[0]!, keyColumns: 1, keys: ['nothing'] });
      const collect = async (p: typeof threaded) => {
        const out: string[] = [];
        for await (const b of p.blocks(many)) out.push(b.content.toString());
        return out;
      };
      const inOrder = await collect(threaded);
      expect(inOrder).toHaveLength(40);
      expect(inOrder).toEqual(await collect(inline));
      expect(inOrder[5]).toBe('7\tb\n');

      // A chunk whose bytes do not hash to its name, and one that is missing.
      const wrong = '0'.repeat(64);
      await storage.writeIfAbsent(chunksMod.chunkKey(wrong), await codec.encodeChunk(texts));
      const damaged = threaded.pick({ id: wrong, keyColumns: 1, keys: ['7'] });
      await expect(damaged).rejects.toBeInstanceOf(chunksMod.ChunkError);
      await expect(damaged).rejects.toThrow(/is damaged: its content hashes to/);
      await expect(damaged).rejects.toMatchObject({
        hint: expect.stringMatching(/check --read-data/),
      });
      await expect(
        threaded.pick({ id: 'f'.repeat(64), keyColumns: 1, keys: ['7'] }),
      ).rejects.toThrow(/is missing from memory:/);
      // The pool still works after a failed job.
      expect((await threaded.pick(jobs[1]!)).content.toString()).toBe('7\tb\n');
    } finally {
      await threaded.close();
    }
  });
});
