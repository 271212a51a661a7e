/**
 * The compression thread pool, as built (dist/): output identical to inline
 * encoding; shared buffers are never detached, handed-over whole ones are
 * transferred; a process waiting on the pool stays alive, and one whose pool
 * is idle exits without closing it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The pool needs the compiled worker file, so test the built module.
const pool = (await import(
  new URL('../../dist/repo/compress-pool.js', import.meta.url).href
)) as typeof import('../../src/repo/compress-pool.js');
const codec = (await import(
  new URL('../../dist/repo/codec.js', import.meta.url).href
)) as typeof import('../../src/repo/codec.js');

describe('compression pool', () => {
  it("encodes in worker threads exactly as inline, and leaves the caller's buffers intact", async () => {
    const encoder = pool.createEncoder(2);
    expect(encoder).not.toBe(pool.inlineEncoder);
    try {
      const big = Buffer.from(
        Array.from({ length: 20000 }, (_, i) => `${i}\tvalue ${i % 97}\n`).join(''),
      );
      const view = big.subarray(1000, 50000); // shares big's memory
      const small = Buffer.from('1\tx\n'); // from Node's shared allocation pool
      const results = await Promise.all([big, view, small].map((b) => encoder.encode(b)));
      for (const [i, b] of [big, view, small].entries()) {
        expect((await codec.decodeChunk(results[i]!)).content.equals(b)).toBe(true);
        expect(results[i]!.equals(await codec.encodeChunk(b))).toBe(true);
      }
      // The caller's buffers are intact: copied to the threads, never transferred away.
      expect(big.length).toBeGreaterThan(100000);
      expect(view.length).toBe(49000);
      expect(small.toString()).toBe('1\tx\n');
    } finally {
      await encoder.close();
    }
  });

  it('takes a handed-over buffer by transfer, and copies a view even when handed over', async () => {
    const encoder = pool.createEncoder(1);
    try {
      const text = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i}\n`).join('');
      const owned = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
      owned.write(text);
      const expected = await codec.encodeChunk(Buffer.from(text));
      expect((await encoder.encode(owned, 'zstd', true)).equals(expected)).toBe(true);
      expect(owned.length).toBe(0); // detached: moved to the thread, not copied
      const big = Buffer.from(text);
      const view = big.subarray(10);
      await encoder.encode(view, 'zstd', true);
      expect(view.toString()).toBe(text.slice(10)); // part of a larger buffer: copied
    } finally {
      await encoder.close();
    }
  });

  it('keeps a process alive while a chunk is being compressed, and lets it exit when idle', async () => {
    const dist = (m: string) => new URL(`../../dist/${m}`, import.meta.url).href;
    const script = `
      const pool = await import(${JSON.stringify(dist('repo/compress-pool.js'))});
      const encoder = pool.createEncoder(1);
      const stored = await encoder.encode(Buffer.from('a\\tb\\n'.repeat(100000)));
      process.stdout.write(String(stored.length > 0));`;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-pool-'));
    try {
      await writeFile(path.join(dir, 'encode.mjs'), script);
      const t = performance.now();
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [path.join(dir, 'encode.mjs')],
        {
          timeout: 20000,
        },
      );
      // Unreferenced while working, the process would exit at the await and print nothing.
      expect(stdout).toBe('true');
      // Referenced while idle, it would never exit (the timeout would kill it).
      expect(performance.now() - t).toBeLessThan(10000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
