import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ChangeValue, encodeRecord } from '../repo/changelog-format.js';
import { residentBlocks, setArenaMemory } from './arena.js';
import { KeyedRows, LineBuffer } from './keyed-rows.js';

/** `values` as pgoutput sends a row: the TupleData of an Insert message (after 'I', relid, 'N'). */
function stored(values: ChangeValue[]): [Buffer, number, number] {
  const m = encodeRecord(['I', 1, values]);
  return [m, 6, m.length];
}

// Integer keys are held in an IntIndex, text keys (a uuid, a composite key) in a TextIndex.
const keyOf = { integer: (k: number) => String(k), text: (k: number) => `u-${k}\t${k % 7}` };

describe('the net versions of changed keys', () => {
  it('gives back what was stored, as bytes or as values, in insertion order', () => {
    const rows = new KeyedRows();
    rows.setStored('1', ...stored(['1', 'one', null]));
    rows.set('2', ['2', 'two', 'x']);
    rows.set('3', null);
    rows.setStored('a\\tb', ...stored(['a\tb', 'tab', '']));
    expect(rows.size).toBe(4);
    expect([...rows]).toEqual([
      ['1', ['1', 'one', null]],
      ['2', ['2', 'two', 'x']],
      ['3', null],
      ['a\\tb', ['a\tb', 'tab', '']],
    ]);
    expect([...rows.keys()]).toEqual(['1', '2', '3', 'a\\tb']);
    expect(rows.get('1')).toEqual(['1', 'one', null]);
    expect(rows.get('3')).toBeNull();
    expect(rows.get('4')).toBeUndefined();
    expect(rows.has('3')).toBe(true);
    expect(rows.delete('1')).toBe(true);
    expect(rows.has('1')).toBe(false);
    // Only deletions: what an undo can put back in one statement (undo.ts).
    expect(rows.onlyDeletions).toBe(false);
    rows.delete('2');
    expect(rows.onlyDeletions).toBe(false);
    rows.delete('a\\tb');
    expect(rows.onlyDeletions).toBe(true);
    rows.clear();
    expect(rows.onlyDeletions).toBe(true);
  });

  it('takes an integer key as its number or its text, and keeps other text as text', () => {
    const rows = new KeyedRows();
    rows.setStored(42, ...stored(['42', 'a']));
    expect(rows.get('42')).toEqual(['42', 'a']);
    rows.set('42', ['42', 'b']);
    expect(rows.get(42)).toEqual(['42', 'b']);
    expect(rows.size).toBe(1);
    // Not as PostgreSQL prints an integer: a different key.
    for (const text of ['042', '-0', '+42', '42.0', '1234567890123456']) {
      rows.set(text, [text]);
      expect(rows.get(text)).toEqual([text]);
    }
    rows.set('-7', ['-7']);
    expect(rows.get(-7)).toEqual(['-7']);
    expect([...rows.keys()]).toEqual(['42', '042', '-0', '+42', '42.0', '1234567890123456', '-7']);
  });

  it.each(['integer', 'text'] as const)(
    'keeps the latest of many versions of growing size, through compactions (%s keys)',
    (kind) => {
      const rows = new KeyedRows();
      const expected = new Map<string, ChangeValue[] | null>();
      // 20 rounds over 3,000 keys, each version longer than the last: most
      // no longer fit their slot, so the arena fills with garbage and is compacted.
      for (let round = 0; round < 20; round++) {
        for (let k = 0; k < 3000; k++) {
          const key = keyOf[kind](k);
          if ((k + round) % 7 === 0) {
            rows.set(key, null);
            expected.set(key, null);
            continue;
          }
          const v: ChangeValue[] = [key, 'x'.repeat(round * 13 + (k % 50)), round % 2 ? null : 'é'];
          rows.setStored(key, ...stored(v));
          expected.set(key, v);
        }
      }
      expect(rows.size).toBe(3000);
      expect(rows.integerKeysOnly).toBe(kind === 'integer');
      for (const [key, v] of expected) expect(rows.get(key)).toEqual(v);
      expect([...rows.keys()]).toEqual([...expected.keys()]);
    },
  );

  it('keeps a version too large for the arena decoded', () => {
    const rows = new KeyedRows();
    const big: ChangeValue[] = ['1', 'y'.repeat(2 * 1024 * 1024)];
    rows.setStored('1', ...stored(big));
    rows.setStored('2', ...stored(['2', 'small']));
    expect(rows.get('1')).toEqual(big);
    expect(rows.get('2')).toEqual(['2', 'small']);
  });

  it('copies are independent of each other and of the original', () => {
    const rows = new KeyedRows();
    rows.setStored('1', ...stored(['1', 'a']));
    rows.setStored('2', ...stored(['2', 'b']));
    const copy = rows.copy();
    copy.delete('1');
    // Written after the copy, in the slot's room: must not show in the other.
    copy.setStored('2', ...stored(['2', 'c']));
    rows.setStored('2', ...stored(['2', 'd']));
    expect([...rows]).toEqual([
      ['1', ['1', 'a']],
      ['2', ['2', 'd']],
    ]);
    expect([...copy]).toEqual([['2', ['2', 'c']]]);
    rows.clear();
    expect(rows.size).toBe(0);
    expect(copy.get('2')).toEqual(['2', 'c']);
  });

  it('gives integer keys in key order, each found walking up or in any order', () => {
    const rows = new KeyedRows();
    for (const k of [30, 10, 20, 40]) rows.setStored(String(k), ...stored([String(k), `v${k}`]));
    rows.set('25', ['25', 0]);
    rows.set('10', null);
    rows.delete('40');
    const s = rows.sorted()!;
    expect([...s.keys]).toEqual([10, 20, 25, 30]);
    expect(s.deleted(0)).toBe(true);
    expect(s.get(1)).toEqual(['20', 'v20']);
    // A decoded version is not written from bytes: the caller decodes it.
    expect(s.writeLine(2, new LineBuffer(16))).toBe(false);
    expect(s.get(2)).toEqual(['25', 0]);
    const out = new LineBuffer(16);
    expect(s.writeLine(3, out)).toBe(true);
    expect(out.content().toString()).toBe('30\tv30\n');
    // Ascending: the cursor walks on; then out of order: still found.
    expect([5, 20, 26, 30, 31].map((n) => s.find(n))).toEqual([-1, 1, -1, 3, -1]);
    expect([10, 25, 9, 30].map((n) => s.find(n))).toEqual([0, 2, -1, 3]);
    // A text key: no sorted view.
    rows.set('x', ['x', 'y']);
    expect(rows.sorted()).toBeUndefined();
  });

  it('the copy buffer given may be reused by the caller', () => {
    const rows = new KeyedRows();
    const [buf, start, end] = stored(['1', 'kept']);
    rows.setStored('1', buf, start, end);
    buf.fill(0);
    expect(rows.get('1')).toEqual(['1', 'kept']);
  });
});

describe('versions past the memory budget', () => {
  // Two blocks of 1 MiB in memory per thread; the rest goes to a file.
  beforeEach(() => setArenaMemory(2));
  afterEach(() => setArenaMemory(undefined));

  /** A version of about 100 bytes that varies with `n`. */
  const version = (key: number, n: number, grow = 0): ChangeValue[] => [
    String(key),
    `${n}`.padStart(8, '0') + 'z'.repeat(80 + grow),
    n % 3 === 0 ? null : 'é',
  ];

  it('keeps every key right with most blocks on disk: rewritten in place, moved, deleted', () => {
    const before = residentBlocks();
    const rows = new KeyedRows();
    const expected = new Map<number, ChangeValue[] | null>();
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    // 60,000 keys of ~110 bytes: about 7 MiB of slots, 2 of them in memory.
    for (let k = 1; k <= 60_000; k++) {
      const v = version(k, k);
      rows.setStored(k, ...stored(v));
      expected.set(k, v);
    }
    expect(residentBlocks() - before).toBeLessThanOrEqual(2);
    // Random rewrites: same size (in the slot, on disk or not), larger (a new slot), deletions.
    for (let i = 0; i < 30_000; i++) {
      const k = (next() % 60_000) + 1;
      const r = next() % 10;
      if (r === 0) {
        rows.set(k, null);
        expected.set(k, null);
      } else {
        const v = version(k, next(), r === 1 ? 40 : 0);
        rows.setStored(k, ...stored(v));
        expected.set(k, v);
      }
    }
    expect(residentBlocks() - before).toBeLessThanOrEqual(2);
    expect(rows.spilled).toBe(true);
    for (const [k, v] of expected) expect(rows.get(k)).toEqual(v);
    // In key order, as a merge reads them: each line from its bytes.
    const s = rows.sorted()!;
    const out = new LineBuffer(1024);
    for (let i = 0; i < s.length; i++) {
      const want = expected.get(s.keys[i]!)!;
      if (want === null) {
        expect(s.deleted(i)).toBe(true);
        continue;
      }
      out.at = 0;
      expect(s.writeLine(i, out)).toBe(true);
      expect(out.content().toString()).toBe(
        `${want.map((x) => (x === null ? '\\N' : x)).join('\t')}\n`,
      );
    }
    rows.close();
    expect(residentBlocks()).toBe(before);
  });

  it('reads back versions larger than one read from disk, and small ones after them', () => {
    const rows = new KeyedRows();
    const expected = new Map<number, ChangeValue[]>();
    for (let k = 0; k < 1500; k++) {
      // 5,000 to 9,000 bytes: past the first read of a slot on disk.
      const v = version(k, k, k % 2 === 0 ? 4900 + (k % 4000) : 0);
      rows.setStored(k, ...stored(v));
      expected.set(k, v);
    }
    expect(rows.spilled).toBe(true);
    for (const [k, v] of expected) expect(rows.get(k)).toEqual(v);
    rows.close();
  });

  it('compacts an arena that is mostly on disk', () => {
    const rows = new KeyedRows();
    const expected = new Map<number, ChangeValue[]>();
    // Each round longer than the last: no version fits its slot; the arena fills with garbage.
    for (let round = 0; round < 8; round++) {
      for (let k = 0; k < 8000; k++) {
        const v = version(k, round, round * 16);
        rows.setStored(k, ...stored(v));
        expected.set(k, v);
      }
    }
    expect(rows.spilled).toBe(true);
    for (const [k, v] of expected) expect(rows.get(k)).toEqual(v);
    rows.close();
  });

  it.each(['integer', 'text'] as const)(
    'folds in a later part whose versions are on disk, and a copy reads them too (%s keys)',
    (kind) => {
      const a = new KeyedRows();
      const b = new KeyedRows();
      const expected = new Map<string, ChangeValue[] | null>();
      for (let k = 0; k < 30_000; k++) {
        const v = version(k, 1);
        a.setStored(keyOf[kind](k), ...stored(v));
        expected.set(keyOf[kind](k), v);
      }
      for (let k = 15_000; k < 45_000; k++) {
        if (k % 11 === 0) {
          b.set(keyOf[kind](k), null);
          expected.set(keyOf[kind](k), null);
          continue;
        }
        const v = version(k, 2, k % 5);
        b.setStored(keyOf[kind](k), ...stored(v));
        expected.set(keyOf[kind](k), v);
      }
      expect(b.spilled).toBe(true);
      const x = b.export();
      a.absorb(structuredClone(x));
      expect(a.size).toBe(45_000);
      for (const [k, v] of expected) expect(a.get(k)).toEqual(v);
      const copy = a.copy();
      for (const [k, v] of expected) expect(copy.get(k)).toEqual(v);
      a.close();
    },
  );
});
