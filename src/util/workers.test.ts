import { describe, expect, it } from 'vitest';
import { runWorkers } from './workers.js';

describe('runWorkers', () => {
  it('stops the other workers on the first failure and returns only when all have stopped', async () => {
    const events: string[] = [];
    const run = runWorkers(3, async (i, signal) => {
      if (i === 0) {
        await new Promise((r) => setTimeout(r, 5));
        throw new Error('boom');
      }
      while (!signal.aborted) await new Promise((r) => setTimeout(r, 1));
      await new Promise((r) => setTimeout(r, 10)); // cleanup takes a while
      events.push(`worker ${i} cleaned up`);
      throw new Error(`aborted ${i}`);
    });
    await expect(run).rejects.toThrow('boom');
    expect(events.sort()).toEqual(['worker 1 cleaned up', 'worker 2 cleaned up']);
  });

  it('passes an outer abort to every worker', async () => {
    const outer = new AbortController();
    const seen: boolean[] = [];
    const run = runWorkers(
      2,
      async (_i, signal) => {
        while (!signal.aborted) await new Promise((r) => setTimeout(r, 1));
        seen.push(true);
      },
      outer.signal,
    );
    outer.abort();
    await run;
    expect(seen).toEqual([true, true]);
  });
});
