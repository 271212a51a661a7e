import { describe, expect, it } from 'vitest';
import type { SchemaModel } from '../pg/schema/model.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';
import { keysByChunk } from './key-chunks.js';

const chunk = (first: string[], last: string[]): ChunkRef => ({
  id: `${first.join(',')}-${last.join(',')}`,
  rows: 1,
  size: 1,
  stored: 1,
  first,
  last,
});

/** A table keyed by `key`, its columns of `types`, cut into `chunks`. */
function table(
  types: Array<[name: string, type: string, collation?: string]>,
  key: string[],
  chunks: ChunkRef[],
): [SchemaModel, TableSnapshot] {
  const schema = {
    tables: [
      {
        schema: 'public',
        name: 't',
        columns: types.map(([name, type, collation]) =>
          collation === undefined ? { name, type } : { name, type, collation },
        ),
      },
    ],
  } as unknown as SchemaModel;
  const t = { schema: 'public', name: 't', key, chunks } as unknown as TableSnapshot;
  return [schema, t];
}

/** The keys each chunk can hold, by chunk position. */
function placed(schema: SchemaModel | undefined, t: TableSnapshot, keys: string[]): string[][] {
  const holds = keysByChunk(schema, t, new Set(keys));
  return t.chunks.map((c) => [...holds(t, c)]);
}

describe('which chunks can hold which keys', () => {
  it('places integer keys in the one chunk whose range holds them, in numeric order', () => {
    const [schema, t] = table(
      [['id', 'bigint']],
      ['id'],
      [chunk(['1'], ['99']), chunk(['100'], ['250']), chunk(['260'], ['900'])],
    );
    expect(placed(schema, t, ['900', '42', '100', '255', '5000', '9', '77'])).toEqual([
      ['9', '42', '77'],
      ['100'],
      ['900'],
    ]);
  });

  it('places integer keys past what a number holds exactly, and chunks bounded past it', () => {
    // A key past 1e15 takes the general path (sort values), not the one of plain numbers.
    const [schema, t] = table(
      [['id', 'bigint']],
      ['id'],
      [
        chunk(['-5'], ['9']),
        chunk(['10'], ['9007199254740992']),
        chunk(['9007199254740993'], ['9223372036854775807']),
      ],
    );
    expect(placed(schema, t, ['9007199254740993', '10', '-3', '9007199254740992'])).toEqual([
      ['-3'],
      ['10', '9007199254740992'],
      ['9007199254740993'],
    ]);
    // Plain numbers, with a chunk whose last key is past 2^53: that chunk can hold any of them.
    expect(placed(schema, t, ['12', '-1'])).toEqual([['-1'], ['-1', '12'], ['-1', '12']]);
  });

  it('narrows by the leading columns it can order when a later one it cannot', () => {
    // (integer, text under a linguistic collation): only the integer orders.
    const [schema, t] = table(
      [
        ['tenant', 'integer'],
        ['name', 'text'],
      ],
      ['tenant', 'name'],
      [chunk(['1', 'a'], ['2', 'm']), chunk(['2', 'n'], ['2', 'z']), chunk(['3', 'a'], ['4', 'a'])],
    );
    expect(placed(schema, t, ['2\tq', '4\tb', '5\ta'])).toEqual([['2\tq'], ['2\tq'], ['4\tb']]);
  });

  it('orders text under COLLATE "C" by its bytes', () => {
    const [schema, t] = table(
      [['code', 'text', '"C"']],
      ['code'],
      [chunk(['A'], ['Z']), chunk(['a'], ['m']), chunk(['n'], ['z'])],
    );
    // Byte order: every capital before every small letter.
    expect(placed(schema, t, ['b', 'B', 'x'])).toEqual([['B'], ['b'], ['x']]);
  });

  it('lets every chunk hold every key when the first key column cannot be ordered or the model is missing', () => {
    const chunks = [chunk(['a'], ['m']), chunk(['n'], ['z'])];
    const [schema, t] = table([['name', 'text']], ['name'], chunks);
    expect(placed(schema, t, ['b', 'x'])).toEqual([
      ['b', 'x'],
      ['b', 'x'],
    ]);
    expect(placed(undefined, t, ['b'])).toEqual([['b'], ['b']]);
    // A chunk without key bounds (a keyless table) can hold anything.
    const [s2, t2] = table([['id', 'bigint']], ['id'], [chunk(['1'], ['5'])]);
    (t2.chunks as ChunkRef[]).push({ ...chunk([], []), first: null, last: null });
    expect(placed(s2, t2, ['3', '8'])).toEqual([['3'], ['3', '8']]);
  });
});
