/** pgoutput decoding over hand-built messages, byte by byte as the format documents them. */
import { describe, expect, it } from 'vitest';
import {
  decodePgoutput,
  Lsn,
  PgoutputDecodeError,
  PgoutputDecoder,
  pgTimestampNow,
  pgTimestampToIso,
  UNCHANGED_TOAST,
} from './pgoutput.js';

/** Builds a message the way the server's pq_send* functions do. */
class Msg {
  private readonly parts: Buffer[] = [];

  constructor(type: string) {
    this.byte(type);
  }

  byte(v: number | string): this {
    this.parts.push(Buffer.from([typeof v === 'string' ? v.charCodeAt(0) : v]));
    return this;
  }

  i16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(v);
    this.parts.push(b);
    return this;
  }

  i32(v: number): this {
    const b = Buffer.alloc(4);
    if (v < 0) b.writeInt32BE(v);
    else b.writeUInt32BE(v);
    this.parts.push(b);
    return this;
  }

  i64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(v);
    this.parts.push(b);
    return this;
  }

  str(s: string): this {
    this.parts.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
    return this;
  }

  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  /** TupleData: values as text ('t'), null ('n') or unchanged TOAST ('u'). */
  tuple(values: ReadonlyArray<string | null | typeof UNCHANGED_TOAST>): this {
    this.i16(values.length);
    for (const v of values) {
      if (v === null) this.byte('n');
      else if (v === UNCHANGED_TOAST) this.byte('u');
      else {
        const b = Buffer.from(v, 'utf8');
        this.byte('t').i32(b.length).raw(b);
      }
    }
    return this;
  }

  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

// 2024-02-29 23:59:59.123456 UTC, as microseconds since 2000-01-01.
const TS = 762_566_399_123_456n;
const TS_ISO = '2024-02-29T23:59:59.123456Z';
const LSN_A = 0x1_6b37_4d48n;
const LSN_B = 0x1_6b37_4d90n;

describe('Lsn', () => {
  it('parses and prints the X/Y form and orders by value', () => {
    const a = Lsn.parse('16/B374D848');
    expect(a.value).toBe(0x16_b374_d848n);
    expect(a.text).toBe('16/B374D848');
    expect(Lsn.parse('0/0').value).toBe(0n);
    expect(Lsn.parse('1/0000ab').text).toBe('1/AB'); // PostgreSQL 18 pads; we print unpadded
    expect(new Lsn(0xffff_ffff_ffff_ffffn).text).toBe('FFFFFFFF/FFFFFFFF');
    expect(`${new Lsn(LSN_A)}`).toBe('1/6B374D48');
    expect(JSON.stringify({ l: new Lsn(LSN_A) })).toBe('{"l":"1/6B374D48"}');
    expect(Lsn.from('1/6B374D48').value).toBe(LSN_A);
    for (const bad of ['', '1', '1/', '/1', 'x/1', '123456789/0', '1/2/3', ' 1/2']) {
      expect(() => Lsn.parse(bad), bad).toThrow(RangeError);
    }
    expect(() => new Lsn(-1n)).toThrow(RangeError);
  });
});

describe('timestamps', () => {
  it('keeps all six fractional digits', () => {
    expect(pgTimestampToIso(TS)).toBe(TS_ISO);
    expect(pgTimestampToIso(0n)).toBe('2000-01-01T00:00:00.000000Z');
    expect(pgTimestampToIso(1n)).toBe('2000-01-01T00:00:00.000001Z');
    expect(pgTimestampToIso(-1n)).toBe('1999-12-31T23:59:59.999999Z');
    expect(pgTimestampToIso(-946_684_800_000_000n)).toBe('1970-01-01T00:00:00.000000Z');
    expect(pgTimestampToIso(-946_684_800_000_001n)).toBe('1969-12-31T23:59:59.999999Z');
  });

  it('gives now in the protocol epoch', () => {
    const now = pgTimestampNow();
    const iso = pgTimestampToIso(now);
    expect(Math.abs(Date.parse(iso) - Date.now())).toBeLessThan(5000);
  });
});

describe('decodePgoutput', () => {
  it('Begin', () => {
    const m = new Msg('B').i64(LSN_A).i64(TS).i32(0xfffffffe).build();
    expect(decodePgoutput(m)).toEqual({
      tag: 'begin',
      finalLsn: new Lsn(LSN_A),
      commitTime: TS_ISO,
      commitTimeMicros: TS,
      xid: 0xfffffffe,
    });
  });

  it('Commit', () => {
    const m = new Msg('C').byte(0).i64(LSN_A).i64(LSN_B).i64(TS).build();
    const d = decodePgoutput(m);
    expect(d).toEqual({
      tag: 'commit',
      flags: 0,
      commitLsn: new Lsn(LSN_A),
      endLsn: new Lsn(LSN_B),
      commitTime: TS_ISO,
      commitTimeMicros: TS,
    });
  });

  it('Origin', () => {
    const m = new Msg('O').i64(LSN_A).str('node_a').build();
    expect(decodePgoutput(m)).toEqual({ tag: 'origin', lsn: new Lsn(LSN_A), name: 'node_a' });
  });

  it('Relation with key flags, type modifiers and every replica identity', () => {
    for (const ident of ['d', 'n', 'f', 'i'] as const) {
      const m = new Msg('R')
        .i32(16_385)
        .str('sales')
        .str('Orders é')
        .byte(ident)
        .i16(3)
        .byte(1)
        .str('id')
        .i32(23)
        .i32(-1)
        .byte(0)
        .str('code')
        .i32(1043)
        .i32(14)
        .byte(0)
        .str('mood')
        .i32(4_000_000_000)
        .i32(-1)
        .build();
      expect(decodePgoutput(m)).toEqual({
        tag: 'relation',
        relationId: 16_385,
        schema: 'sales',
        name: 'Orders é',
        replicaIdentity: ident,
        columns: [
          { name: 'id', typeOid: 23, typeMod: -1, isKey: true },
          { name: 'code', typeOid: 1043, typeMod: 14, isKey: false },
          { name: 'mood', typeOid: 4_000_000_000, typeMod: -1, isKey: false },
        ],
      });
    }
    const bad = new Msg('R').i32(1).str('s').str('t').byte('x').i16(0).build();
    expect(() => decodePgoutput(bad)).toThrow(/replica identity/);
  });

  it('Type', () => {
    const m = new Msg('Y').i32(16_400).str('public').str('mood').build();
    expect(decodePgoutput(m)).toEqual({
      tag: 'type',
      typeOid: 16_400,
      schema: 'public',
      name: 'mood',
    });
  });

  it('Insert keeps every value exactly as sent, nulls as null', () => {
    const values = [
      '1',
      '2024-02-29 23:59:59.123456+00',
      'NaN',
      '0.000000000000000000000000000001',
      '\\x00ff5c',
      'tab\there\nnew line \\ backslash é 😀',
      '{1,NULL,3}',
      '{"a b",NULL,"c\\"d"}',
      '{"a": [1, 2.50, null]}',
      '',
      null,
    ];
    const m = new Msg('I').i32(16_385).byte('N').tuple(values).build();
    expect(decodePgoutput(m)).toEqual({ tag: 'insert', relationId: 16_385, newTuple: values });
  });

  it('Update: plain, with old key, with old tuple, with unchanged TOAST', () => {
    const plain = new Msg('U').i32(7).byte('N').tuple(['1', 'x', UNCHANGED_TOAST]).build();
    const d = decodePgoutput(plain);
    expect(d).toEqual({ tag: 'update', relationId: 7, newTuple: ['1', 'x', UNCHANGED_TOAST] });
    expect('oldKey' in d).toBe(false);
    expect('oldTuple' in d).toBe(false);

    const key = new Msg('U')
      .i32(7)
      .byte('K')
      .tuple(['1', null, null])
      .byte('N')
      .tuple(['2', 'x', 'y'])
      .build();
    expect(decodePgoutput(key)).toEqual({
      tag: 'update',
      relationId: 7,
      oldKey: ['1', null, null],
      newTuple: ['2', 'x', 'y'],
    });

    const full = new Msg('U')
      .i32(7)
      .byte('O')
      .tuple(['1', 'a', null])
      .byte('N')
      .tuple(['1', 'b', null])
      .build();
    expect(decodePgoutput(full)).toEqual({
      tag: 'update',
      relationId: 7,
      oldTuple: ['1', 'a', null],
      newTuple: ['1', 'b', null],
    });

    const badNew = new Msg('U').i32(7).byte('K').tuple(['1']).byte('X').tuple(['2']).build();
    expect(() => decodePgoutput(badNew)).toThrow(PgoutputDecodeError);
    const badKind = new Msg('U').i32(7).byte('Z').tuple(['1']).build();
    expect(() => decodePgoutput(badKind)).toThrow(/unexpected tuple marker/);
  });

  it('Delete with old key or old tuple', () => {
    const k = new Msg('D').i32(9).byte('K').tuple(['5', null]).build();
    expect(decodePgoutput(k)).toEqual({ tag: 'delete', relationId: 9, oldKey: ['5', null] });
    const o = new Msg('D').i32(9).byte('O').tuple(['5', 'v']).build();
    expect(decodePgoutput(o)).toEqual({ tag: 'delete', relationId: 9, oldTuple: ['5', 'v'] });
    const n = new Msg('D').i32(9).byte('N').tuple(['5']).build();
    expect(() => decodePgoutput(n)).toThrow(PgoutputDecodeError);
  });

  it('Truncate with its option bits', () => {
    const cases: Array<[number, boolean, boolean]> = [
      [0, false, false],
      [1, true, false],
      [2, false, true],
      [3, true, true],
    ];
    for (const [bits, cascade, restartIdentity] of cases) {
      const m = new Msg('T').i32(2).byte(bits).i32(100).i32(200).build();
      expect(decodePgoutput(m)).toEqual({
        tag: 'truncate',
        relationIds: [100, 200],
        cascade,
        restartIdentity,
      });
    }
  });

  it('Message, transactional or not, with binary content copied out', () => {
    const content = Buffer.from([0, 1, 2, 0xff]);
    const buf = new Msg('M').byte(1).i64(LSN_A).str('flashback').i32(4).raw(content).build();
    const d = decodePgoutput(buf);
    expect(d).toEqual({
      tag: 'message',
      transactional: true,
      lsn: new Lsn(LSN_A),
      prefix: 'flashback',
      content,
    });
    // The content must not alias the input (the connection reuses its buffers).
    buf.fill(0);
    expect(d.tag === 'message' && d.content.equals(content)).toBe(true);

    const nt = new Msg('M')
      .byte(0)
      .i64(LSN_B)
      .str('flashback')
      .i32(2)
      .raw(Buffer.from('hb'))
      .build();
    expect(decodePgoutput(nt)).toMatchObject({ transactional: false, content: Buffer.from('hb') });
  });

  it('protocol 2 streaming messages, and the xid prefix inside a stream block', () => {
    expect(decodePgoutput(new Msg('S').i32(900).byte(1).build())).toEqual({
      tag: 'stream-start',
      xid: 900,
      firstSegment: true,
    });
    expect(decodePgoutput(new Msg('S').i32(900).byte(0).build())).toMatchObject({
      firstSegment: false,
    });
    expect(decodePgoutput(new Msg('E').build())).toEqual({ tag: 'stream-stop' });
    expect(
      decodePgoutput(new Msg('c').i32(900).byte(0).i64(LSN_A).i64(LSN_B).i64(TS).build()),
    ).toEqual({
      tag: 'stream-commit',
      xid: 900,
      flags: 0,
      commitLsn: new Lsn(LSN_A),
      endLsn: new Lsn(LSN_B),
      commitTime: TS_ISO,
      commitTimeMicros: TS,
    });
    expect(decodePgoutput(new Msg('A').i32(900).i32(901).build())).toEqual({
      tag: 'stream-abort',
      xid: 900,
      subXid: 901,
    });
    // Protocol 4 with parallel streaming appends the abort position and time.
    expect(decodePgoutput(new Msg('A').i32(900).i32(900).i64(LSN_A).i64(TS).build())).toEqual({
      tag: 'stream-abort',
      xid: 900,
      subXid: 900,
      abortLsn: new Lsn(LSN_A),
      abortTime: TS_ISO,
    });

    const insert = new Msg('I').i32(900).i32(16_385).byte('N').tuple(['1']).build();
    expect(decodePgoutput(insert, true)).toEqual({
      tag: 'insert',
      xid: 900,
      relationId: 16_385,
      newTuple: ['1'],
    });
    const rel = new Msg('R').i32(900).i32(16_385).str('public').str('t').byte('d').i16(0).build();
    expect(decodePgoutput(rel, true)).toMatchObject({
      tag: 'relation',
      xid: 900,
      relationId: 16_385,
    });
    const type = new Msg('Y').i32(900).i32(16_400).str('public').str('mood').build();
    expect(decodePgoutput(type, true)).toMatchObject({ tag: 'type', xid: 900, typeOid: 16_400 });
    const upd = new Msg('U').i32(900).i32(7).byte('N').tuple(['1']).build();
    expect(decodePgoutput(upd, true)).toMatchObject({ tag: 'update', xid: 900 });
    const del = new Msg('D').i32(900).i32(7).byte('K').tuple(['1']).build();
    expect(decodePgoutput(del, true)).toMatchObject({ tag: 'delete', xid: 900 });
    const tr = new Msg('T').i32(900).i32(1).byte(0).i32(7).build();
    expect(decodePgoutput(tr, true)).toMatchObject({ tag: 'truncate', xid: 900, relationIds: [7] });
    const msg = new Msg('M').i32(900).byte(1).i64(LSN_A).str('p').i32(0).build();
    expect(decodePgoutput(msg, true)).toMatchObject({ tag: 'message', xid: 900, prefix: 'p' });
  });

  it('PgoutputDecoder reads the xid prefix only between Stream Start and Stop', () => {
    const d = new PgoutputDecoder();
    const plain = new Msg('I').i32(16_385).byte('N').tuple(['1']).build();
    const streamed = new Msg('I').i32(900).i32(16_385).byte('N').tuple(['2']).build();
    expect(d.decode(plain)).toEqual({ tag: 'insert', relationId: 16_385, newTuple: ['1'] });
    d.decode(new Msg('S').i32(900).byte(1).build());
    expect(d.decode(streamed)).toEqual({
      tag: 'insert',
      xid: 900,
      relationId: 16_385,
      newTuple: ['2'],
    });
    d.decode(new Msg('E').build());
    expect(d.decode(plain)).toEqual({ tag: 'insert', relationId: 16_385, newTuple: ['1'] });
  });

  it('rejects malformed messages with a typed error', () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.alloc(0), /empty message/],
      [Buffer.from('Z'), /unknown message type 0x5a/],
      [new Msg('B').i64(LSN_A).build(), /Begin message ends early/],
      [new Msg('B').i64(LSN_A).i64(TS).i32(1).byte(0).build(), /1 unexpected trailing bytes/],
      [new Msg('O').i64(LSN_A).raw(Buffer.from('no-nul')).build(), /unterminated string/],
      [
        new Msg('I').i32(1).byte('N').i16(1).byte('t').i32(10).raw(Buffer.from('short')).build(),
        /ends early/,
      ],
      [
        new Msg('I').i32(1).byte('N').i16(1).byte('b').i32(1).raw(Buffer.from('x')).build(),
        /binary form/,
      ],
      [new Msg('I').i32(1).byte('N').i16(1).byte('q').build(), /unknown column kind/],
      [new Msg('M').byte(0).i64(LSN_A).str('p').i32(-1).build(), /negative content length/],
    ];
    for (const [buf, re] of cases) {
      let caught: unknown;
      try {
        decodePgoutput(buf);
      } catch (err) {
        caught = err;
      }
      expect(caught, re.source).toBeInstanceOf(PgoutputDecodeError);
      expect((caught as Error).message).toMatch(re);
      expect((caught as PgoutputDecodeError).code).toBe('replication.protocol');
    }
  });
});
