/**
 * The read thread pool, as built (dist/): content identical to inline
 * decoding, damage reported as inline reports it, and a process waiting on a
 * read is not left to exit (the threads are unreferenced only when idle).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The pool needs the compiled worker file, so test the built modules.
const dist = (m: string) => new URL(`../../dist/${m}`, import.meta.url).href;
const pool = (await import(
  dist('repo/decode-pool.js')
)) as typeof import('../../src/repo/decode-pool.js');
const codec = (await import(dist('repo/codec.js'))) as typeof import('../../src/repo/codec.js');
const chunks = (await import(dist('repo/chunks.js'))) as typeof import('../../src/repo/chunks.js');

describe('read pool', () => {
  it('decodes in worker threads exactly as inline, and rejects damage the same way', async () => {
    const decoder = pool.sharedDecoder();
    expect(decoder).not.toBe(pool.inlineDecoder);
    const contents = [
      Buffer.from(Array.from({ length: 30000 }, (_, i) => `${i}\tvalue ${i % 97}\n`).join('')),
      Buffer.from('1\tx\n'),
    ];
    for (const content of contents) {
      const stored = await codec.encodeChunk(content);
      const id = chunks.chunkId(content);
      const got = await Promise.all([decoder.decode(stored, id), decoder.decode(stored, id)]);
      for (const g of got) expect(g.equals(content)).toBe(true);
      expect(stored.length).toBeGreaterThan(0); // the caller's buffer is intact
      // Another id: the content hashes elsewhere.
      await expect(decoder.decode(stored, '0'.repeat(64))).rejects.toThrow(
        `its content hashes to ${id}`,
      );
      await expect(decoder.decode(stored, '0'.repeat(64))).rejects.toBeInstanceOf(
        pool.ChunkHashError,
      );
      // A flipped byte in the compressed body: does not decode, or hashes elsewhere.
      const flipped = Buffer.from(stored);
      flipped[flipped.length - 3]! ^= 0xff;
      const err = await decoder.decode(flipped, id).catch((e: unknown) => e);
      expect(
        err instanceof codec.ChunkFormatError || err instanceof pool.ChunkHashError,
        String(err),
      ).toBe(true);
    }
  });

  it('keeps a process alive while a read is pending, and lets it exit when idle', async () => {
    const script = `
      const pool = await import(${JSON.stringify(dist('repo/decode-pool.js'))});
      const codec = await import(${JSON.stringify(dist('repo/codec.js'))});
      const chunks = await import(${JSON.stringify(dist('repo/chunks.js'))});
      const content = Buffer.from('a\\tb\\n'.repeat(100000));
      const stored = await codec.encodeChunk(content);
      const got = await pool.sharedDecoder().decode(stored, chunks.chunkId(content));
      process.stdout.write(String(got.length));`;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-decode-'));
    try {
      await writeFile(path.join(dir, 'read.mjs'), script);
      const t = performance.now();
      const { stdout } = await promisify(execFile)(process.execPath, [path.join(dir, 'read.mjs')], {
        timeout: 20000,
      });
      // Before the fix the process exited at the await, printing nothing.
      expect(stdout).toBe('400000');
      // And it exits by itself once idle (the timeout would kill it otherwise).
      expect(performance.now() - t).toBeLessThan(10000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
