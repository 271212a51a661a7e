import { describe, expect, it } from 'vitest';
import { decodePgoutput, UNCHANGED_TOAST } from '../pg/replication/pgoutput.js';
import {
  type ChangeRecord,
  type ChangeValue,
  decodeSegment,
  decodeTuple,
  emptyLayout,
  encodeRecord,
  encodeRecords,
  findBegin,
  layoutOf,
  lsnValue,
  SegmentBuilder,
  SegmentFormatError,
  tupleInteger,
  tupleLine,
} from './changelog-format.js';

const T = '2026-11-21T10:00:00.123456Z';
const RECORDS: ChangeRecord[] = [
  [
    'R',
    16_400,
    'public',
    'Mixed "name"',
    'd',
    [
      ['id', 20, -1, true],
      ['payload', 25, -1, false],
      ['n', 1700, 655_366, false],
    ],
  ],
  ['B', 4_000_000_123, '1/6B374D48', T],
  ['I', 16_400, ['1', 'tab\there\nnewline \\ ünïcødé', null]],
  ['U', 16_400, null, null, ['1', 'x', '1.50']],
  ['U', 16_400, ['2', null, null], null, ['3', 0, 'NaN']],
  ['U', 16_400, null, ['4', 'old', null], ['4', 'new', null]],
  ['D', 16_400, ['5', null, null], null],
  ['D', 16_400, null, ['6', '', '-Infinity']],
  ['T', [16_400, 16_401], true, false],
  ['C', '1/6B374D48', '1/6B374D90', T],
  ['H', '1/6B374DA0', '2026-11-21T10:00:05.000001Z'],
  ['S', '1/6B374DB0', '{"kind": "rewrite", "oid": 16400, "reason": 4}'],
];

describe('change-log segment format 2', () => {
  it('round-trips every record kind through the pgoutput messages it stores', () => {
    expect(decodeSegment(encodeRecords(RECORDS))).toEqual(RECORDS);
  });

  it('stores messages exactly as PostgreSQL sends them (the pg layer decodes them alike)', () => {
    const insert = decodePgoutput(encodeRecord(RECORDS[2]!));
    expect(insert).toEqual({ tag: 'insert', relationId: 16_400, newTuple: RECORDS[2]![2] });
    const update = decodePgoutput(encodeRecord(RECORDS[4]!));
    expect(update).toMatchObject({
      tag: 'update',
      oldKey: ['2', null, null],
      newTuple: ['3', UNCHANGED_TOAST, 'NaN'],
    });
    const begin = decodePgoutput(encodeRecord(RECORDS[1]!));
    expect(begin).toMatchObject({ tag: 'begin', xid: 4_000_000_123, commitTime: T });
    expect(begin.tag === 'begin' && begin.finalLsn.value).toBe(lsnValue('1/6B374D48'));
    const commit = decodePgoutput(encodeRecord(RECORDS[9]!));
    expect(commit.tag === 'commit' && commit.endLsn.value).toBe(lsnValue('1/6B374D90'));
    const rel = decodePgoutput(encodeRecord(RECORDS[0]!));
    expect(rel).toMatchObject({ tag: 'relation', name: 'Mixed "name"', replicaIdentity: 'd' });
    const beat = decodePgoutput(encodeRecord(RECORDS[10]!));
    expect(beat).toMatchObject({
      tag: 'message',
      transactional: false,
      prefix: 'flashback.heartbeat',
    });
  });

  it('stores schema events as the transactional messages the event triggers emit', () => {
    const ev = decodePgoutput(encodeRecord(RECORDS[11]!));
    expect(ev).toMatchObject({ tag: 'message', transactional: true, prefix: 'flashback.ddl' });
  });

  it('keeps only heartbeats and schema events among logical messages', () => {
    const other = Buffer.from(encodeRecord(['H', '0/10', 'x']));
    other.write('other.app.heartbeat', 10, 'utf8'); // as long as flashback.heartbeat
    const b = new SegmentBuilder();
    b.append(other);
    b.append(encodeRecord(['H', '0/20', 'y']));
    expect(decodeSegment(Buffer.from(b.content()))).toEqual([['H', '0/20', 'y']]);
  });

  it('grows past its first buffer and copies what it is given', () => {
    const b = new SegmentBuilder();
    const big: ChangeRecord = ['I', 1, ['x'.repeat(100_000)]];
    const m = encodeRecord(big);
    b.append(m);
    m.fill(0);
    b.append(encodeRecord(big));
    expect(b.messages).toBe(2);
    expect(decodeSegment(Buffer.from(b.content()))).toEqual([big, big]);
  });

  it('finds a transaction by xid reading only Begin messages', () => {
    const content = encodeRecords(RECORDS);
    expect(findBegin(content, 4_000_000_123)).toBe(lsnValue('1/6B374D48'));
    expect(findBegin(content, 16_400)).toBeUndefined();
  });

  it('refuses damaged content with a SegmentFormatError', () => {
    const content = encodeRecords(RECORDS);
    // Cut short, or any byte changed (also inside a value, which would still decode).
    expect(() => decodeSegment(content.subarray(0, content.length - 3))).toThrow(
      SegmentFormatError,
    );
    for (const at of [4, 60, content.length - 40, content.length - 1]) {
      const flipped = Buffer.from(content);
      flipped[at]! ^= 0x01;
      expect(() => decodeSegment(flipped)).toThrow(/checksum mismatch/);
      expect(() => findBegin(flipped, 1)).toThrow(/checksum mismatch/);
    }
    // Well-framed but not a message a server sends (checksums are of the bytes, not their sense).
    const odd = new SegmentBuilder();
    odd.append(Buffer.from([0x21, 1, 2]));
    expect(() => decodeSegment(Buffer.from(odd.content()))).toThrow(/unknown message type 0x21/);
    // A tuple value longer than its message.
    const insert = encodeRecord(['I', 1, ['abc']]);
    insert.writeInt32BE(50, 9);
    const b = new SegmentBuilder();
    b.append(insert);
    expect(() => decodeSegment(Buffer.from(b.content()))).toThrow(/ends early/);
    const negative = encodeRecord(['I', 1, ['abc']]);
    negative.writeInt32BE(-5, 9);
    const n = new SegmentBuilder();
    n.append(negative);
    expect(() => decodeSegment(Buffer.from(n.content()))).toThrow(/negative length/);
    expect(() => decodeSegment(Buffer.from('garbage'))).toThrow(/neither/);
  });

  it('refuses records no server could send', () => {
    expect(() => encodeRecord(['D', 1, null, null])).toThrow(RangeError);
    expect(() => encodeRecord(['U', 1, ['1'], ['1'], ['2']])).toThrow(RangeError);
  });
});

describe('change-log segment format 1 (JSON lines, written before format 2)', () => {
  it('is still read, and searched by xid', () => {
    const lines = `${RECORDS.map((r) => JSON.stringify(r)).join('\n')}\n`;
    const content = Buffer.from(lines, 'utf8');
    expect(decodeSegment(content)).toEqual(RECORDS);
    expect(findBegin(content, 4_000_000_123)).toBe(lsnValue('1/6B374D48'));
    expect(() => decodeSegment(Buffer.from('["B",1,\n'))).toThrow(SegmentFormatError);
  });
});

describe('stored changes read in place', () => {
  it('finds the parts of each change message, as decoding does', () => {
    const layout = emptyLayout();
    const at = (r: ChangeRecord) => {
      const m = encodeRecord(r);
      layoutOf(m, 0, m.length, layout);
      const part = (s: number, e: number) => (s < 0 ? null : decodeTuple(m, s, e));
      return [
        String.fromCharCode(layout.kind),
        layout.relid,
        layout.oldKind === 0 ? '' : String.fromCharCode(layout.oldKind),
        part(layout.oldStart, layout.oldEnd),
        part(layout.newStart, layout.newEnd),
        layout.newUnchanged,
      ];
    };
    expect(at(['I', 7, ['1', null, 'x']])).toEqual(['I', 7, '', null, ['1', null, 'x'], false]);
    expect(at(['U', 7, null, null, ['1', 0]])).toEqual(['U', 7, '', null, ['1', 0], true]);
    expect(at(['U', 7, ['1', null], null, ['2', 'b']])).toEqual([
      'U',
      7,
      'K',
      ['1', null],
      ['2', 'b'],
      false,
    ]);
    expect(at(['U', 7, null, ['1', 'a'], ['1', 'b']])).toEqual([
      'U',
      7,
      'O',
      ['1', 'a'],
      ['1', 'b'],
      false,
    ]);
    expect(at(['D', 7, ['1', null], null])).toEqual(['D', 7, 'K', ['1', null], null, false]);
    expect(at(['D', 7, null, ['1', 'a']])).toEqual(['D', 7, 'O', ['1', 'a'], null, false]);
    // Cut short, or a byte too many: refused, as decoding refuses them.
    const m = encodeRecord(['I', 7, ['1', 'x']]);
    expect(() => layoutOf(m, 0, m.length - 1, layout)).toThrow(SegmentFormatError);
    const longer = Buffer.concat([m, Buffer.from([0])]);
    expect(() => layoutOf(longer, 0, longer.length, layout)).toThrow(/unexpected bytes/);
  });

  it('reads an integer key only as PostgreSQL prints integers', () => {
    const first = (v: string | null) => {
      const m = encodeRecord(['I', 1, [v, 'rest']]);
      return tupleInteger(m, 6);
    };
    expect(first('0')).toBe(0);
    expect(first('-42')).toBe(-42);
    expect(first('999999999999999')).toBe(999_999_999_999_999);
    for (const v of ['1000000000000000', '007', '-0', '+1', '1.5', '', '-', '12a', null]) {
      expect(first(v)).toBeUndefined();
    }
  });

  it('makes a COPY line from the bytes, or leaves a row that needs escapes to decoding', () => {
    const line = (values: ChangeValue[]) => {
      const m = encodeRecord(['I', 1, values]);
      return tupleLine(m, 6, m.length);
    };
    expect(line(['1', null, '', 'é 😀'])).toBe('1\t\\N\t\té 😀');
    expect(line(['x'.repeat(10_000)])).toBe('x'.repeat(10_000));
    for (const c of ['\\', '\b', '\t', '\n', '\v', '\f', '\r']) {
      expect(line(['1', `a${c}b`])).toBeUndefined();
    }
    expect(line(['1', 0])).toBeUndefined();
  });
});
