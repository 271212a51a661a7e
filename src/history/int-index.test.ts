import { describe, expect, it } from 'vitest';
import { IntIndex } from './int-index.js';

/** A deterministic sequence of unsigned 32-bit numbers (a linear congruential generator). */
function numbers(seed: number): () => number {
  return () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
}

describe('the index of integer keys', () => {
  it('agrees with a Map through sets, deletes, re-sets and growth, in insertion order', () => {
    const index = new IntIndex();
    const map = new Map<number, number>();
    // A deterministic mix: consecutive keys, keys far apart (past 2^32, negative), deletions, keys set again.
    const next = numbers(7);
    for (let i = 0; i < 200_000; i++) {
      const r = next() % 10;
      const key =
        r < 5 ? next() % 50_000 : r < 7 ? (next() % 1000) * 2 ** 33 + i : -(next() % 20_000);
      if (r === 9) {
        expect(index.delete(key)).toBe(map.delete(key));
      } else {
        const value = next() % 1_000_000;
        expect(index.swap(key, value)).toBe(map.get(key));
        map.set(key, value);
      }
    }
    expect(index.size).toBe(map.size);
    expect([...index.entries()]).toEqual([...map.entries()]);
    for (const key of [...map.keys()].slice(0, 5000)) expect(index.get(key)).toBe(map.get(key));
    expect(index.has(123_456_789)).toBe(false);
    expect(index.get(123_456_789)).toBeUndefined();
  });

  it('copies independently, and clears', () => {
    const index = new IntIndex();
    for (let k = 0; k < 100; k++) index.set(k, k * 2);
    const copy = index.copy();
    copy.delete(5);
    copy.set(1000, 1);
    index.set(5, 55);
    expect(index.get(5)).toBe(55);
    expect(copy.has(5)).toBe(false);
    expect(index.has(1000)).toBe(false);
    expect(copy.size).toBe(100);
    index.clear();
    expect(index.size).toBe(0);
    expect([...index.keys()]).toEqual([]);
    expect(copy.get(99)).toBe(198);
    // A key deleted and set again goes last, as in a Map.
    copy.delete(0);
    copy.set(0, 7);
    expect([...copy.keys()].at(-1)).toBe(0);
  });

  it('gives its live entries in key order, or nothing when the keys are too far apart', () => {
    const index = new IntIndex();
    const map = new Map<number, number>();
    const next = numbers(11);
    for (let i = 0; i < 50_000; i++) {
      const key = (next() % 200_000) - 100_000;
      if (next() % 5 === 0) {
        index.delete(key);
        map.delete(key);
      } else {
        index.set(key, i);
        map.set(key, i);
      }
    }
    const sorted = index.sorted()!;
    const want = [...map.entries()].sort((a, b) => a[0] - b[0]);
    expect([...sorted.keys]).toEqual(want.map((e) => e[0]));
    expect([...sorted.values]).toEqual(want.map((e) => e[1]));
    // Keys 2^52 apart with more than one entry cannot be packed with their place.
    const wide = new IntIndex();
    wide.set(-(2 ** 51), 1);
    wide.set(2 ** 51, 2);
    expect(wide.sorted()).toBeUndefined();
    expect(new IntIndex().sorted()!.keys.length).toBe(0);
  });

  it('keeps 0 and -0 as one key', () => {
    const index = new IntIndex();
    index.set(0, 1);
    index.set(-0, 2);
    expect(index.size).toBe(1);
    expect(index.get(0)).toBe(2);
  });
});
