import { describe, expect, it } from 'vitest';
import { parseSchemaEvent } from '../capture/schema-events.js';
import { fillAbsent, reshapeBlock, reshapeLine } from './schema-changes.js';

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
