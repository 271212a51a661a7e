import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type ChangeValue, encodeRecord } from '../repo/changelog-format.js';
import { RowSpool } from './row-spool.js';

const openFiles = (): number => readdirSync('/proc/self/fd').length;
const hasProc = (() => {
  try {
    readdirSync('/proc/self/fd');
    return true;
  } catch {
    return false;
  }
})();

async function lines(spool: RowSpool): Promise<string[]> {
  const out: string[] = [];
  for await (const b of spool.blocks()) {
    const got = b.content.toString('utf8').split('\n');
    expect(got.pop()).toBe(''); // every line ended
    expect(got).toHaveLength(b.rows);
    out.push(...got);
  }
  return out;
}

describe('the spool of rows added to a keyless table', () => {
  it('keeps rows in order past the budget, absent values marked, and cancels as in memory', async () => {
    const spool = new RowSpool(64);
    for (let i = 0; i < 50; i++) spool.push([String(i), i % 2 === 0 ? `even\t${i}` : null]);
    spool.push(['x', 0]);
    expect(spool.spilled).toBe(true);
    expect(spool.cancel('4\teven\\t4')).toBe(true); // deferred once spilled
    expect(spool.cancel('not added')).toBe(true);
    const unmatched = await spool.settle();
    expect([...unmatched]).toEqual([['not added', 1]]);
    const got = await lines(spool);
    expect(got).toHaveLength(50);
    expect(got[0]).toBe('0\teven\\t0');
    expect(got[1]).toBe('1\t\\N');
    expect(got).not.toContain('4\teven\\t4');
    expect(got.at(-1)).toBe('x\t\u0000');
    spool.close();
  });

  it('writes logged rows as bytes once spilled, and leaves rows that need escapes to the caller', async () => {
    const spool = new RowSpool(40);
    const tuple = (values: ChangeValue[]): [Buffer, number, number] => {
      const m = encodeRecord(['I', 1, values]);
      return [m, 6, m.length];
    };
    const want: string[] = [];
    for (let i = 0; i < 30; i++) {
      const values: ChangeValue[] = [String(i), i % 3 === 0 ? null : `é ${i}`];
      expect(spool.pushTuple(...tuple(values))).toBe(true);
      want.push(`${i}\t${i % 3 === 0 ? '\\N' : `é ${i}`}`);
    }
    expect(spool.spilled).toBe(true);
    // A tab in a value needs an escape: not written, for the caller to push decoded.
    expect(spool.pushTuple(...tuple(['t', 'a\tb']))).toBe(false);
    spool.push(['t', 'a\tb']);
    want.push('t\ta\\tb');
    expect(await lines(spool)).toEqual(want);
    spool.close();
  });

  it('holds rows as bytes in memory, as strings once one is taken back there, in order through a spill', async () => {
    const spool = new RowSpool(4 * 1024 * 1024);
    const tuple = (values: ChangeValue[]): [Buffer, number, number] => {
      const m = encodeRecord(['I', 1, values]);
      return [m, 6, m.length];
    };
    const want: string[] = [];
    // Past one block of a megabyte, in memory.
    for (let i = 0; i < 30_000; i++) {
      const v = `value ${i} ${'x'.repeat(40)}`;
      if (i % 2 === 0) expect(spool.pushTuple(...tuple([String(i), v]))).toBe(true);
      else spool.push([String(i), v]);
      want.push(`${i}\t${v}`);
    }
    expect(spool.spilled).toBe(false);
    expect(await lines(spool)).toEqual(want);
    // Taken back while in memory: answered at once, from the lines as strings.
    expect(spool.cancel(want[10]!)).toBe(true);
    expect(spool.cancel('not added')).toBe(false);
    want.splice(10, 1);
    for (let i = 30_000; i < 100_000; i++) {
      const v = `value ${i} ${'x'.repeat(40)}`;
      expect(spool.pushTuple(...tuple([String(i), v]))).toBe(true);
      want.push(`${i}\t${v}`);
    }
    expect(spool.spilled).toBe(true);
    expect(await lines(spool)).toEqual(want);
    spool.close();
  });

  it('takes back one of equal rows in memory, also when they then go to the file', async () => {
    const spool = new RowSpool(1000);
    for (const v of ['a', 'b', 'a', 'c', 'a']) spool.push([v]);
    expect(spool.cancel('a')).toBe(true);
    expect(spool.cancel('a')).toBe(true);
    expect(spool.cancel('b')).toBe(true);
    expect(spool.cancel('b')).toBe(false); // only one was added
    expect(await lines(spool)).toEqual(['c', 'a']);
    // Past the budget the rows taken back stay taken back.
    for (let i = 0; i < 200; i++) spool.push([`row ${i}`]);
    expect(spool.spilled).toBe(true);
    const all = await lines(spool);
    expect(all.slice(0, 2)).toEqual(['c', 'a']);
    expect(all).toHaveLength(202);
    spool.close();
  });

  it('reads back rows longer than its 4 MB read blocks, whole and in order', async () => {
    const spool = new RowSpool(8);
    const long = 'x'.repeat(9 * 1024 * 1024); // spans three blocks
    const rows = ['first', long, 'between', `${long}y`, 'last'];
    for (const r of rows) spool.push([r]);
    expect(spool.spilled).toBe(true);
    const got = await lines(spool);
    expect(got.map((l) => l.length)).toEqual(rows.map((r) => r.length));
    expect(got).toEqual(rows);
    spool.close();
  });

  it.skipIf(!hasProc)('frees its file when closed', () => {
    const before = openFiles();
    const spool = new RowSpool(8);
    for (let i = 0; i < 100; i++) spool.push([String(i)]);
    expect(openFiles()).toBe(before + 1);
    spool.close();
    expect(openFiles()).toBe(before);
  });
});
