import { describe, expect, it } from 'vitest';
import { decodeField, endOfFields, fieldAt } from '../pg/copy-text.js';
import { Chunker, type ChunkerOptions, chooseBoundaryBits, type RawChunk } from './chunker.js';

/** COPY text of rows (id, payload) with ids 1..n, optionally modified. */
function table(
  ids: number[],
  payload: (id: number) => string = (id) => `row ${id} payload`,
): Buffer {
  return Buffer.from(ids.map((id) => `${id}\t${payload(id)}\n`).join(''));
}

function chunk(
  data: Buffer,
  opts: ChunkerOptions = { keyColumns: 1, boundaryBits: 4, maxBytes: 1 << 20 },
  splitEvery?: number,
): RawChunk[] {
  const c = new Chunker(opts);
  const out: RawChunk[] = [];
  if (splitEvery === undefined) out.push(...c.push(data));
  else
    for (let i = 0; i < data.length; i += splitEvery)
      out.push(...c.push(data.subarray(i, i + splitEvery)));
  out.push(...c.end());
  return out;
}

const ids = Array.from({ length: 2000 }, (_, i) => i + 1);
const hex = (cs: RawChunk[]) => cs.map((c) => c.content.toString('hex'));

describe('key-defined chunking', () => {
  it('keeps every byte, whole rows per chunk, and the same chunks however the stream is split', () => {
    const data = table(ids);
    const whole = chunk(data);
    expect(Buffer.concat(whole.map((c) => c.content)).equals(data)).toBe(true);
    expect(whole.reduce((n, c) => n + c.rows, 0)).toBe(2000);
    for (const c of whole) expect(c.content[c.content.length - 1]).toBe(0x0a);
    // With ownMemory, the same chunks, each owning its memory whole (the
    // chunk store may transfer it to a thread).
    const owned = chunk(
      data,
      { keyColumns: 1, boundaryBits: 4, maxBytes: 1 << 20, ownMemory: true },
      100,
    );
    expect(hex(owned)).toEqual(hex(whole));
    for (const c of owned) {
      expect([c.content.byteOffset, c.content.buffer.byteLength]).toEqual([0, c.content.length]);
    }
    expect(whole.length).toBeGreaterThan(60); // mean 16 rows per chunk
    for (const split of [1, 7, 100, 4096])
      expect(hex(chunk(data, undefined, split))).toEqual(hex(whole));
  });

  it('changes only the chunk holding an updated row', () => {
    const before = chunk(table(ids));
    const after = chunk(
      table(ids, (id) => (id === 1000 ? 'changed, and longer than before' : `row ${id} payload`)),
    );
    const b = new Set(hex(before));
    expect(after.length).toBe(before.length);
    expect(hex(after).filter((h) => !b.has(h))).toHaveLength(1);
  });

  it('changes only the chunks around inserted and deleted rows', () => {
    const before = chunk(table(ids));
    const edited = [...ids.filter((id) => id !== 500), 1000.5, 2001].sort((a, b) => a - b);
    const after = chunk(table(edited));
    const b = new Set(hex(before));
    // One chunk lost a row, one gained a row, the last gained a row (or a new chunk began).
    expect(hex(after).filter((h) => !b.has(h)).length).toBeLessThanOrEqual(4);
  });

  it('records the first and last key of each chunk, decoded', () => {
    const data = Buffer.from('a\\tb\tx\n\\N\ty\n');
    const [c] = chunk(data, { keyColumns: 1, boundaryBits: 20, maxBytes: 1 << 20 });
    expect(c).toMatchObject({ rows: 2, first: ['a\tb'], last: [null] });
  });

  it('hashes the whole row when there is no key, and records no keys', () => {
    const cs = chunk(table(ids), { keyColumns: 0, boundaryBits: 4, maxBytes: 1 << 20 });
    expect(cs.length).toBeGreaterThan(60);
    expect(cs[0]?.first).toBeNull();
  });

  it('cuts at maxBytes even without a boundary, bounding memory', () => {
    const cs = chunk(table(ids), { keyColumns: 1, boundaryBits: 30, maxBytes: 4096 });
    for (const c of cs.slice(0, -1)) {
      expect(c.content.length).toBeGreaterThanOrEqual(4096);
      expect(c.content.length).toBeLessThan(4096 + 64);
    }
  });

  it('refuses a stream that ends mid-row', () => {
    const c = new Chunker({ keyColumns: 1, boundaryBits: 4, maxBytes: 1 << 20 });
    c.push(Buffer.from('1\tx\n2\ty'));
    expect(() => c.end()).toThrow(/middle of a row/);
  });

  it('chooses boundary bits for about 1 MiB chunks', () => {
    expect(chooseBoundaryBits(128)).toBe(13);
    expect(chooseBoundaryBits(1 << 20)).toBe(0);
    expect(chooseBoundaryBits(1)).toBe(17);
  });
});

describe('COPY text fields', () => {
  it('reads one field of a line, still escaped, without the others', () => {
    const b = Buffer.from('x\n1\ta\\tb\t\\N\t\ny\n');
    // The line "1<TAB>a\tb<TAB>\N<TAB>" at [2, 13), between two others.
    const [start, end] = [2, b.indexOf(0x0a, 2)];
    expect([0, 1, 2, 3].map((i) => fieldAt(b, start, end, i).toString())).toEqual([
      '1',
      'a\\tb',
      '\\N',
      '',
    ]);
    expect(decodeField(fieldAt(b, start, end, 1))).toBe('a\tb');
    expect(() => fieldAt(b, start, end, 4)).toThrow(/has 4 field\(s\), not 5/);
  });

  it('finds the end of the first n fields within the line only', () => {
    const b = Buffer.from('12\tab\tc\n7\n8\tx\n');
    expect(endOfFields(b, 0, 8, 1)).toBe(2);
    expect(endOfFields(b, 0, 8, 2)).toBe(5);
    expect(endOfFields(b, 0, 8, 3)).toBe(8); // no third tab: the line's end
    // A one-column line: the tab of the next line does not count.
    expect(endOfFields(b, 9, 10, 1)).toBe(10);
  });

  it('decodes NULL, escapes, octal and hex', () => {
    expect(decodeField(Buffer.from('\\N'))).toBeNull();
    expect(decodeField(Buffer.from('plain é'))).toBe('plain é');
    expect(decodeField(Buffer.from('a\\\\b\\tc\\nd\\re'))).toBe('a\\b\tc\nd\re');
    expect(decodeField(Buffer.from('\\101\\x42\\N!'))).toBe('ABN!');
  });
});
