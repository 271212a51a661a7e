import { describe, expect, it } from 'vitest';
import { TextIndex } from './text-index.js';

describe('the index of text keys', () => {
  it('agrees with a Map through sets, deletes, re-sets and growth, in insertion order', () => {
    const index = new TextIndex();
    const map = new Map<string | number, number>();
    // A deterministic sequence (a linear congruential generator).
    let seed = 11;
    const next = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    // uuid-like keys, composite keys, non-ASCII, empty, long, and integers among them.
    const keyOf = (i: number): string | number => {
      const r = next() % 8;
      const n = next() % 30_000;
      if (r < 3)
        return `${n.toString(16).padStart(8, '0')}-1f2e-4d3c-8b7a-${String(n).padStart(12, '0')}`;
      if (r < 5) return `${n % 97}\t${n}`;
      if (r === 5) return n % 5 === 0 ? '' : `é😀 ${n % 300}`;
      if (r === 6) return n % 50 === 0 ? 'x'.repeat(70_000 + (n % 3)) : -n;
      return i % 2 === 0 ? n : `k${n}`;
    };
    for (let i = 0; i < 120_000; i++) {
      const key = keyOf(i);
      if (next() % 10 === 9) {
        expect(index.delete(key)).toBe(map.delete(key));
      } else {
        const value = next() % 1_000_000;
        expect(index.swap(key, value)).toBe(map.get(key));
        map.set(key, value);
      }
    }
    expect(index.size).toBe(map.size);
    expect([...index.entries()]).toEqual([...map.entries()]);
    // Integers come back as numbers, text as text.
    expect([...index.keys()]).toEqual([...map.keys()]);
    for (const key of [...map.keys()].slice(0, 5000)) expect(index.get(key)).toBe(map.get(key));
    expect(index.has('absent')).toBe(false);
    expect(index.get(123_456_789)).toBeUndefined();
  });

  it('copies independently', () => {
    const index = new TextIndex();
    for (let k = 0; k < 100; k++) index.set(`key ${k}`, k * 2);
    const copy = index.copy();
    index.set('key 1', -5);
    index.delete('key 2');
    index.set('new', 1);
    expect(copy.get('key 1')).toBe(2);
    expect(copy.get('key 2')).toBe(4);
    expect(copy.has('new')).toBe(false);
    expect(copy.size).toBe(100);
    expect(index.size).toBe(100);
  });

  it('keeps a uuid key in about 60 bytes, none of them on the JavaScript heap', () => {
    const index = new TextIndex();
    const n = 200_000;
    for (let i = 0; i < n; i++) {
      index.set(
        `${i.toString(16).padStart(8, '0')}-0000-4000-8000-${String(i).padStart(12, '0')}`,
        i,
      );
    }
    // 36 bytes of key, five int32 arrays and the slots (half full or less), with growth room.
    expect(index.bytes / n).toBeLessThan(110);
    expect(index.get('00000010-0000-4000-8000-000000000016')).toBe(16);
  });
});
