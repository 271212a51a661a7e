/** The compression thread pool, as built (dist/): output identical to inline encoding; shared buffers are never detached. */
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
});
