import { describe, expect, it } from 'vitest';
import { parseSchemaEvent } from '../capture/schema-events.js';
import type { Change } from '../repo/changelog.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import {
  fillAbsent,
  type PointTable,
  reshapeBlock,
  reshapeLine,
  ShapeTracker,
} from './schema-changes.js';

describe('snapshot lines in the layout of a later moment', () => {
  // Snapshot: id, name, score. Point: id, full_name (renamed name), tier (added), note (added, no default).
  const r = { from: [0, 1, -1, -1], fill: [undefined, undefined, 'tab\there \\ ok', null] };

  it('keeps columns by position, drops the dropped, fills the added in COPY text', () => {
    expect(reshapeLine(Buffer.from('7\tAda\\tL\t42'), r)).toBe(
      '7\tAda\\tL\ttab\\there \\\\ ok\t\\N',
    );
    expect(reshapeBlock(Buffer.from('1\ta\t1\n2\tb\t2\n'), r).toString()).toBe(
      '1\ta\ttab\\there \\\\ ok\t\\N\n2\tb\ttab\\there \\\\ ok\t\\N\n',
    );
  });

  it('fills absent values of added columns only, leaving an unsent TOASTed value of an old column', () => {
    expect(fillAbsent(['1', 0, 0, 0], r)).toEqual(['1', 0, 'tab\there \\ ok', null]);
    expect(fillAbsent(['1', 'x', 'y', 'z'], undefined)).toEqual(['1', 'x', 'y', 'z']);
  });

  it('reads the events the triggers emit, and refuses others', () => {
    expect(
      parseSchemaEvent(
        '{"kind": "ddl", "g": 3, "tags": ["ALTER TABLE"], "tables": [{"oid": 16394, "schema": "public", "name": "t", "columns": [[1, "id", "integer", false, null], [2, "........pg.dropped.2........", "-", true, null], [3, "b", "integer", false, "7"]]}]}',
      ),
    ).toEqual({
      kind: 'ddl',
      generation: 3,
      tags: ['ALTER TABLE'],
      tables: [
        {
          oid: 16394,
          schema: 'public',
          name: 't',
          columns: [
            [1, 'id', 'integer', false, null],
            [2, '........pg.dropped.2........', '-', true, null],
            [3, 'b', 'integer', false, '7'],
          ],
        },
      ],
    });
    expect(parseSchemaEvent('{"kind": "rewrite", "oid": "16394", "reason": 4}')).toEqual({
      kind: 'rewrite',
      oid: 16394,
      reason: 4,
    });
    expect(() => parseSchemaEvent('{"kind": "other"}')).toThrow(/unknown schema event kind/);
    expect(() => parseSchemaEvent('{"kind": "ddl"}')).toThrow(/malformed/);
  });
});

describe('following a table through the window', () => {
  const table: TableSnapshot = {
    schema: 'public',
    name: 't',
    columns: ['id', 'a', 'b'],
    key: ['id'],
    keyKind: 'primary',
    boundaryBits: 10,
    rows: 0,
    bytes: 0,
    storedBytes: 0,
    chunks: [],
    oid: 1,
    attnums: [1, 2, 3],
  };
  const point: PointTable = { t: table, attnums: [1, 2, 3], keyAttnums: [1], base: table };
  const tracker = (): ShapeTracker =>
    new ShapeTracker(
      new Map([[1, point]]),
      new Map([
        [
          1,
          new Map([
            ['id', 1],
            ['a', 2],
            ['b', 3],
          ]),
        ],
      ]),
      { id: 'snap', target: 'prod' } as SnapshotManifest,
    );
  const change = (relid: number, names: string[]): Change => ({
    op: 'insert',
    relid,
    schema: 'public',
    table: relid === 1 ? 't' : 'other',
    columns: names.map((n, i) => [n, 25, -1, i === 0] as const),
    key: null,
    old: null,
    row: names.map(() => 'x'),
  });

  it('maps a row by attnum, and refuses rows with more or fewer columns than recorded', () => {
    expect(tracker().resolve(change(1, ['id', 'b', 'a']), 'T')?.map).toEqual([0, 2, 1]);
    expect(() => tracker().resolve(change(1, ['id', 'a']), 'T')).toThrow(
      /lack columns the recorded schema has then \(attnum 3\)/,
    );
    expect(() => tracker().resolve(change(1, ['id', 'a', 'b', 'zzz']), 'T')).toThrow(
      /columns \(zzz\) that no recorded schema change explains/,
    );
  });

  it('passes over a table the point lacks only if the window dropped it', () => {
    const kept = tracker();
    expect(kept.resolve(change(2, ['id']), 'T')).toBeNull();
    expect(() => kept.reshapes()).toThrow(/changes of public\.other .* belong to no table/);
    const dropped = tracker();
    expect(dropped.resolve(change(2, ['id']), 'T')).toBeNull();
    dropped.apply(
      '{"kind": "drop", "g": 5, "tables": [{"oid": 2, "schema": "public", "name": "other"}]}',
      'T2',
    );
    expect(dropped.reshapes().size).toBe(0);
  });

  it('refuses a rewrite of a table of the point, naming the reason', () => {
    expect(() => tracker().apply('{"kind": "rewrite", "oid": 1, "reason": 4}', 'T')).toThrow(
      /public\.t was rewritten at T \(a column retyped\)/,
    );
    expect(() => tracker().apply('{"kind": "rewrite", "oid": 9, "reason": 4}', 'T')).not.toThrow();
  });
});
