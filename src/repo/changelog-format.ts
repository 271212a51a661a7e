/**
 * What a change-log segment holds, once decompressed (docs/REPOSITORY.md,
 * "Change log"). Two formats, told apart by their first bytes:
 *
 * - format 2: the 4 bytes `FBL2`, then frames, each a 4-byte big-endian
 *   length and a pgoutput protocol-1 message exactly as the server sent it
 *   (PostgreSQL docs, "Logical Replication Message Formats"): Relation `R`,
 *   Begin `B`, Insert `I`, Update `U`, Delete `D`, Truncate `T`, Commit `C`,
 *   and Message `M` for heartbeats (prefix `flashback.heartbeat`); last, a
 *   checksum frame: type byte 0, then the SHA-256 of every byte before the
 *   frame. Capture stores what it receives without decoding it (that keeps
 *   its cost off the source's machine); readers decode here.
 * - format 1: one JSON array (a ChangeRecord) per line. Still read.
 *
 * Readers see both as ChangeRecords (below): one row is one array of
 * text-or-null in either, values exactly as the server printed them.
 */
import { createHash } from 'node:crypto';
import { isoToPgTimestamp, pgTimestampToIso } from '../util/pg-time.js';

/** A value in a change: text form, null, or 0 for "unchanged TOASTed value, not sent". */
export type ChangeValue = string | null | 0;

/** One column of a relation record: name, type OID, type modifier, part of the key. */
export type ChangeColumn = readonly [
  name: string,
  typeOid: number,
  typeMod: number,
  isKey: boolean,
];

/** A segment's records, in the order stored. */
export type ChangeRecord =
  /** A table's description, before its changes: relation id, schema, name, replica identity, columns. */
  | readonly [
      'R',
      relationId: number,
      schema: string,
      name: string,
      replicaIdentity: string,
      columns: readonly ChangeColumn[],
    ]
  /** A transaction begins: xid, commit LSN, commit time (ISO, microseconds). */
  | readonly ['B', xid: number, commitLsn: string, commitTime: string]
  | readonly ['I', relationId: number, row: readonly ChangeValue[]]
  /** key: the old key when it changed (non-key columns null); old: the old row under REPLICA IDENTITY FULL. */
  | readonly [
      'U',
      relationId: number,
      key: readonly ChangeValue[] | null,
      old: readonly ChangeValue[] | null,
      row: readonly ChangeValue[],
    ]
  | readonly [
      'D',
      relationId: number,
      key: readonly ChangeValue[] | null,
      old: readonly ChangeValue[] | null,
    ]
  | readonly ['T', relationIds: readonly number[], cascade: boolean, restartIdentity: boolean]
  /** The transaction commits: commit LSN, end LSN, commit time. */
  | readonly ['C', commitLsn: string, endLsn: string, commitTime: string]
  /** A heartbeat: its LSN and the source's clock when it was emitted. */
  | readonly ['H', lsn: string, at: string]
  /**
   * A schema change inside a transaction, from Flashback's event triggers
   * on the source (src/capture/schema-events.ts): its LSN and the event as
   * JSON text (parsed by its readers, not here).
   */
  | readonly ['S', lsn: string, event: string];

/**
 * A record as readers of the log use it: LSNs as numbers (converting them
 * to text and back cost more than decoding the change).
 */
export type StoredRecord =
  | Exclude<ChangeRecord, { 0: 'B' | 'C' | 'H' | 'S' }>
  | readonly ['B', xid: number, commitLsn: bigint, commitTime: string]
  | readonly ['C', commitLsn: bigint, endLsn: bigint, commitTime: string]
  | readonly ['H', lsn: bigint, at: string]
  | readonly ['S', lsn: bigint, event: string];

/** The prefix of Flashback's heartbeat messages on the source (pg_logical_emit_message). */
export const HEARTBEAT_PREFIX = 'flashback.heartbeat';

/** The prefix of the (transactional) messages Flashback's event triggers emit for schema changes. */
export const SCHEMA_EVENT_PREFIX = 'flashback.ddl';

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** LSN text (`X/Y`) to its 64-bit value. */
export function lsnValue(text: string): bigint {
  const m = LSN_TEXT.exec(text);
  if (m === null) throw new RangeError(`not an LSN: "${text}"`);
  // (Number halves: parsing two BigInts from strings cost more than the rest of a change.)
  return (BigInt(Number.parseInt(m[1]!, 16)) << 32n) | BigInt(Number.parseInt(m[2]!, 16));
}

/** A 64-bit LSN value as `X/Y`. */
export function lsnText(value: bigint): string {
  const high = Number(value >> 32n);
  const low = Number(value & 0xffff_ffffn);
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** A segment's content that is not what the format says (bytes damaged, or not a segment). */
export class SegmentFormatError extends Error {}

const MAGIC = Buffer.from('FBL2', 'latin1');
/** The checksum frame: length 33, type 0, SHA-256. */
const TRAILER = 4 + 1 + 32;

/**
 * Format-2 content being filled: messages appended as frames into one
 * growing buffer (no object per message). Each message is copied, so the
 * caller may reuse its buffer.
 */
export class SegmentBuilder {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private used = 0;
  private count = 0;

  constructor() {
    MAGIC.copy(this.buf, 0);
    this.used = MAGIC.length;
  }

  /** Appends one pgoutput message. */
  append(message: Buffer): void {
    const need = this.used + 4 + message.length;
    if (need > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < need) size *= 2;
      const bigger = Buffer.allocUnsafe(size);
      this.buf.copy(bigger, 0, 0, this.used);
      this.buf = bigger;
    }
    this.buf.writeUInt32BE(message.length, this.used);
    message.copy(this.buf, this.used + 4);
    this.used = need;
    this.count++;
  }

  /** Messages appended. */
  get messages(): number {
    return this.count;
  }

  /** Content bytes so far (header and frames, without the checksum). */
  get bytes(): number {
    return this.used;
  }

  /** The content, checksum frame included: a view of the builder's buffer, valid until the next append. */
  content(): Buffer {
    if (this.used + TRAILER > this.buf.length) {
      const bigger = Buffer.allocUnsafe(this.used + TRAILER);
      this.buf.copy(bigger, 0, 0, this.used);
      this.buf = bigger;
    }
    // Written past `used`, which stays: appending more later overwrites it.
    this.buf.writeUInt32BE(TRAILER - 4, this.used);
    this.buf[this.used + 4] = 0;
    createHash('sha256')
      .update(this.buf.subarray(0, this.used))
      .digest()
      .copy(this.buf, this.used + 5);
    return this.buf.subarray(0, this.used + TRAILER);
  }
}

/** Format-2 content holding `records`, each encoded as the pgoutput message capture would have stored. */
export function encodeRecords(records: readonly ChangeRecord[]): Buffer {
  const b = new SegmentBuilder();
  for (const r of records) b.append(encodeRecord(r));
  return Buffer.from(b.content());
}

/** Decodes a segment's content (either format) into its records. Throws SegmentFormatError. */
export function decodeSegment(content: Buffer): ChangeRecord[] {
  return [...storedRecords(content)].map((r) => {
    switch (r[0]) {
      case 'B':
        return ['B', r[1], lsnText(r[2]), r[3]];
      case 'C':
        return ['C', lsnText(r[1]), lsnText(r[2]), r[3]];
      case 'H':
        return ['H', lsnText(r[1]), r[2]];
      case 'S':
        return ['S', lsnText(r[1]), r[2]];
      default:
        return r;
    }
  });
}

/**
 * The message at [start, end) of a format-2 content (a frame's, between
 * frameBody's bounds: see frameEnd) as a record; undefined for a logical message that is not Flashback's.
 * Throws SegmentFormatError.
 */
export function decodeStored(
  content: Buffer,
  start: number,
  end: number,
): StoredRecord | undefined {
  return decodeMessage(content, start, end);
}

/**
 * The records of a segment's content one at a time, LSNs as numbers: a
 * reader that stops early (at the end of a window) decodes no more of it.
 * A format-2 content's checksum is verified before the first record.
 * Throws SegmentFormatError while iterating.
 */
export function* storedRecords(content: Buffer): Generator<StoredRecord> {
  if (content.length === 0) return;
  if (content.subarray(0, 4).equals(MAGIC)) {
    for (const [start, end] of frames(content)) {
      const r = decodeMessage(content, start, end);
      if (r !== undefined) yield r;
    }
    return;
  }
  if (content[0] !== 0x5b /* [ */) {
    throw new SegmentFormatError('neither a format-2 segment (FBL2) nor JSON lines');
  }
  for (const line of content.toString('utf8').split('\n')) {
    if (line === '') continue;
    let r: StoredRecord;
    try {
      const j = JSON.parse(line) as ChangeRecord;
      if (j[0] === 'B') r = ['B', j[1], lsnValue(j[2]), j[3]];
      else if (j[0] === 'C') r = ['C', lsnValue(j[1]), lsnValue(j[2]), j[3]];
      else if (j[0] === 'H') r = ['H', lsnValue(j[1]), j[2]];
      else if (j[0] === 'S') r = ['S', lsnValue(j[1]), j[2]];
      else r = j;
    } catch (err) {
      throw new SegmentFormatError((err as Error).message);
    }
    yield r;
  }
}

/**
 * The commit LSN of transaction `xid` if its Begin is in this content;
 * reads only Begin messages (format 2) or Begin lines (format 1).
 */
export function findBegin(content: Buffer, xid: number): bigint | undefined {
  if (content.subarray(0, 4).equals(MAGIC)) {
    for (const [start, end] of frames(content)) {
      if (content[start] === 0x42 && end - start === 21 && content.readUInt32BE(start + 17) === xid)
        return content.readBigUInt64BE(start + 1);
    }
    return undefined;
  }
  const text = content.toString('utf8');
  const prefix = `["B",${xid},`;
  try {
    for (let at = text.indexOf(prefix); at >= 0; at = text.indexOf(prefix, at + 1)) {
      if (at > 0 && text[at - 1] !== '\n') continue; // inside a value, not a record
      const r = JSON.parse(text.slice(at, text.indexOf('\n', at))) as ChangeRecord;
      if (r[0] === 'B') return lsnValue(r[2]);
    }
  } catch (err) {
    throw new SegmentFormatError((err as Error).message);
  }
  return undefined;
}

/**
 * The commit time (microseconds since 2000-01-01, as pgoutput's Begin
 * carries it) of the last transaction that begins in this content;
 * undefined when none does. Reads only Begin messages (format 2; the
 * checksum verified) or records (format 1).
 */
export function lastBeginMicros(content: Buffer): bigint | undefined {
  let last: bigint | undefined;
  if (content.subarray(0, 4).equals(MAGIC)) {
    for (const [start, end] of frames(content)) {
      if (content[start] === 0x42 && end - start === 21) last = content.readBigInt64BE(start + 9);
    }
    return last;
  }
  for (const r of storedRecords(content)) if (r[0] === 'B') last = isoToPgTimestamp(r[3]);
  return last;
}

/**
 * For a format-2 content: where its frames end (the checksum frame), once
 * the checksum proved the content whole (`verified`: it was proved already,
 * on another thread); undefined for a format-1 (JSON lines) or empty
 * content. Frames start at FIRST_FRAME, each a 4-byte
 * length and that many bytes, none empty. Throws SegmentFormatError.
 */
export function frameBody(content: Buffer, verified = false): number | undefined {
  if (content.length === 0 || !content.subarray(0, 4).equals(MAGIC)) return undefined;
  const body = content.length - TRAILER;
  if (
    body < MAGIC.length ||
    content.readUInt32BE(body) !== TRAILER - 4 ||
    content[body + 4] !== 0 ||
    (!verified &&
      !createHash('sha256')
        .update(content.subarray(0, body))
        .digest()
        .equals(content.subarray(body + 5)))
  ) {
    throw new SegmentFormatError('checksum mismatch (the content was changed or cut short)');
  }
  return body;
}

/** Where the first frame of a format-2 content starts (after the magic). */
export const FIRST_FRAME = MAGIC.length;

/** Start and end offsets of each frame's message, once the checksum frame proved the content whole. */
function* frames(content: Buffer): Generator<[number, number]> {
  const body = frameBody(content)!;
  let pos = MAGIC.length;
  while (pos < body) {
    const end = frameEnd(content, pos, body);
    yield [pos + 4, end];
    pos = end;
  }
}

/**
 * The end of the frame at `pos` (its message runs from pos + 4 to there),
 * checked against the frames' end `body`. Throws SegmentFormatError.
 */
export function frameEnd(content: Buffer, pos: number, body: number): number {
  if (pos + 4 > body) throw new SegmentFormatError(`frame header cut off at ${pos}`);
  const len = content.readUInt32BE(pos);
  const end = pos + 4 + len;
  if (len === 0 || end > body) {
    throw new SegmentFormatError(`frame at ${pos} of ${len} bytes runs past the end`);
  }
  return end;
}

// --- stored changes in place: for readers that keep rows as bytes ---------

/**
 * Where the parts of a stored Insert, Update or Delete message are. A reader
 * that keeps row versions as bytes (history/keyed-rows.ts) reads a message
 * through this instead of decoding it into values: most changes of a long
 * log are replaced by later ones and never need their values as text.
 */
export interface ChangeLayout {
  /** 0x49 Insert, 0x55 Update, 0x44 Delete. */
  kind: number;
  relid: number;
  /** 0x4b: the old key is sent; 0x4f: the old row (REPLICA IDENTITY FULL); 0: neither. */
  oldKind: number;
  /** The old key's or row's TupleData [oldStart, oldEnd); -1 when none. */
  oldStart: number;
  oldEnd: number;
  /** The new row's TupleData [newStart, newEnd); -1 for a delete. */
  newStart: number;
  newEnd: number;
  /** The new row has a column marked unchanged (a TOASTed value not sent). */
  newUnchanged: boolean;
}

/** A ChangeLayout to fill (callers keep one and reuse it). */
export function emptyLayout(): ChangeLayout {
  return {
    kind: 0,
    relid: 0,
    oldKind: 0,
    oldStart: -1,
    oldEnd: -1,
    newStart: -1,
    newEnd: -1,
    newUnchanged: false,
  };
}

/**
 * Fills `out` with the layout of the Insert, Update or Delete message at
 * [start, end). Every length is checked against the message's end, as
 * decoding does. Throws SegmentFormatError.
 */
export function layoutOf(b: Buffer, start: number, end: number, out: ChangeLayout): void {
  const kind = b[start]!;
  if (end - start < 6) throw new SegmentFormatError(`change message at ${start} cut short`);
  out.kind = kind;
  out.relid = b.readUInt32BE(start + 1);
  out.oldKind = 0;
  out.oldStart = -1;
  out.oldEnd = -1;
  out.newStart = -1;
  out.newEnd = -1;
  out.newUnchanged = false;
  let pos = start + 5;
  let sub = b[pos++]!;
  if (kind === 0x55 || kind === 0x44) {
    if (sub === 0x4b || sub === 0x4f) {
      out.oldKind = sub;
      out.oldStart = pos;
      pos = tupleEnd(b, pos, end, undefined);
      out.oldEnd = pos;
      if (kind === 0x44) {
        if (pos !== end) throw new SegmentFormatError(`${end - pos} unexpected bytes at ${pos}`);
        return;
      }
      if (pos >= end) throw new SegmentFormatError(`Update without a new row at ${pos}`);
      sub = b[pos++]!;
    } else if (kind === 0x44) {
      throw new SegmentFormatError(`Delete without a key or old row (0x${sub.toString(16)})`);
    }
  } else if (kind !== 0x49) {
    throw new SegmentFormatError(`not a change message (0x${kind.toString(16)}) at ${start}`);
  }
  if (sub !== 0x4e) {
    throw new SegmentFormatError(`expected a new row (0x4e), got 0x${sub.toString(16)}`);
  }
  out.newStart = pos;
  pos = tupleEnd(b, pos, end, out);
  out.newEnd = pos;
  if (pos !== end) throw new SegmentFormatError(`${end - pos} unexpected bytes at ${pos}`);
}

/** The end of the TupleData at `pos`; notes an unchanged column in `mark`. */
function tupleEnd(b: Buffer, pos: number, end: number, mark: ChangeLayout | undefined): number {
  if (pos + 2 > end) throw new SegmentFormatError(`message ends early at ${pos}`);
  // (Lengths read by hand: readInt16BE/readInt32BE per column were a tenth of reading a long log.)
  const n = ((b[pos]! << 24) | (b[pos + 1]! << 16)) >> 16;
  if (n < 0) throw new SegmentFormatError(`negative column count ${n} at ${pos}`);
  pos += 2;
  for (let i = 0; i < n; i++) {
    if (pos >= end) throw new SegmentFormatError(`message ends early at ${pos}`);
    const kind = b[pos++]!;
    if (kind === 0x74) {
      if (pos + 4 > end) throw new SegmentFormatError(`message ends early at ${pos}`);
      const len = (b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!;
      pos += 4 + len;
      if (len < 0 || pos > end)
        throw new SegmentFormatError(`value of ${len} bytes runs past the end`);
    } else if (kind === 0x75) {
      if (mark !== undefined) mark.newUnchanged = true;
    } else if (kind !== 0x6e) {
      throw new SegmentFormatError(`unknown column kind 0x${kind.toString(16)}`);
    }
  }
  return pos;
}

/** The values of the TupleData at [start, end) (a place layoutOf gave). Throws SegmentFormatError. */
export function decodeTuple(b: Buffer, start: number, end: number): ChangeValue[] {
  const c = new Cursor(b, start, end);
  const values = c.tuple();
  c.done();
  return values;
}

/**
 * The first value of the TupleData at `start` (a place layoutOf gave) when
 * it is an integer as PostgreSQL prints it, of at most 15 digits (no
 * leading zero, no "-0"); otherwise undefined. A row's key, read without
 * making a string of it.
 */
export function tupleInteger(b: Buffer, start: number): number | undefined {
  if (b.readInt16BE(start) < 1 || b[start + 2] !== 0x74) return undefined;
  const len = b.readInt32BE(start + 3);
  let i = start + 7;
  const end = i + len;
  const negative = b[i] === 0x2d;
  if (negative) i++;
  const digits = end - i;
  if (digits < 1 || digits > 15 || (b[i] === 0x30 && (digits > 1 || negative))) return undefined;
  let n = 0;
  for (; i < end; i++) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return negative ? -n : n;
}

/** Room for tupleLine's bytes, grown as needed. */
let lineBytes = Buffer.allocUnsafe(4096);

/**
 * The TupleData at [start, end) (a place layoutOf gave) as a COPY text line
 * (values tab-separated, NULL as \N), made from the bytes as they are;
 * undefined when a value needs an escape in COPY text (a backslash or a
 * control character COPY escapes) or was not sent: the caller decodes it.
 */
export function tupleLine(b: Buffer, start: number, end: number): string | undefined {
  if (lineBytes.length < lineRoom(start, end))
    lineBytes = Buffer.allocUnsafe(2 * lineRoom(start, end));
  const at = tupleLineInto(b, start, end, lineBytes, 0);
  return at < 0 ? undefined : lineBytes.toString('utf8', 0, at);
}

/** The most bytes tupleLineInto writes for the TupleData at [start, end): a NULL takes two for the tuple's one. */
export function lineRoom(start: number, end: number): number {
  return 2 * (end - start);
}

/**
 * tupleLine into `out` at `at` (which has lineRoom bytes free): the end of
 * what it wrote, or -1 when the row needs decoding (what it wrote is then
 * to be ignored).
 */
export function tupleLineInto(
  b: Buffer,
  start: number,
  end: number,
  out: Buffer,
  at: number,
): number {
  const n = b.readInt16BE(start);
  let pos = start + 2;
  for (let i = 0; i < n; i++) {
    if (i > 0) out[at++] = 0x09;
    const kind = b[pos++];
    if (kind === 0x6e) {
      out[at++] = 0x5c;
      out[at++] = 0x4e;
      continue;
    }
    if (kind !== 0x74) return -1;
    const stop = pos + 4 + b.readInt32BE(pos);
    if (stop > end) return -1; // (layoutOf checked the lengths; this keeps a bad place harmless)
    for (pos += 4; pos < stop; pos++) {
      const c = b[pos]!;
      // Backslash, and \b \t \n \v \f \r: what encodeField escapes.
      if (c === 0x5c || (c >= 0x08 && c <= 0x0d)) return -1;
      out[at++] = c;
    }
  }
  return at;
}

/**
 * The first `n` values of the TupleData at `start` (a place layoutOf gave,
 * so already bounds-checked): a row's key, without decoding the rest.
 */
export function tupleHead(b: Buffer, start: number, n: number): ChangeValue[] {
  if (b.readInt16BE(start) < n) throw new SegmentFormatError(`a row of fewer than ${n} columns`);
  const values: ChangeValue[] = new Array(n);
  let pos = start + 2;
  for (let i = 0; i < n; i++) {
    const kind = b[pos++];
    if (kind === 0x74) {
      const len = b.readInt32BE(pos);
      values[i] = b.toString('utf8', pos + 4, pos + 4 + len);
      pos += 4 + len;
    } else values[i] = kind === 0x75 ? 0 : null;
  }
  return values;
}

// --- decoding: one message into a record ----------------------------------

/** A cursor over one message; every read is bounds-checked against the message's end. */
class Cursor {
  constructor(
    private readonly b: Buffer,
    public pos: number,
    private readonly end: number,
  ) {}

  private need(n: number): void {
    if (n < 0) throw new SegmentFormatError(`negative length ${n} at ${this.pos}`);
    if (this.pos + n > this.end)
      throw new SegmentFormatError(`message ends early at ${this.pos} (needs ${n} bytes)`);
  }

  u8(): number {
    this.need(1);
    return this.b[this.pos++]!;
  }

  i16(): number {
    this.need(2);
    this.pos += 2;
    return this.b.readInt16BE(this.pos - 2);
  }

  u32(): number {
    this.need(4);
    this.pos += 4;
    return this.b.readUInt32BE(this.pos - 4);
  }

  i32(): number {
    this.need(4);
    this.pos += 4;
    return this.b.readInt32BE(this.pos - 4);
  }

  u64(): bigint {
    this.need(8);
    this.pos += 8;
    return this.b.readBigUInt64BE(this.pos - 8);
  }

  i64(): bigint {
    this.need(8);
    this.pos += 8;
    return this.b.readBigInt64BE(this.pos - 8);
  }

  cstring(): string {
    const z = this.b.indexOf(0, this.pos);
    if (z < 0 || z >= this.end) throw new SegmentFormatError(`unterminated string at ${this.pos}`);
    const s = this.b.toString('utf8', this.pos, z);
    this.pos = z + 1;
    return s;
  }

  text(n: number): string {
    this.need(n);
    this.pos += n;
    return this.b.toString('utf8', this.pos - n, this.pos);
  }

  tuple(): ChangeValue[] {
    const n = this.i16();
    if (n < 0) throw new SegmentFormatError(`negative column count ${n} at ${this.pos}`);
    const values: ChangeValue[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      if (kind === 0x74) values[i] = this.text(this.i32());
      else if (kind === 0x6e) values[i] = null;
      else if (kind === 0x75) values[i] = 0;
      else throw new SegmentFormatError(`unknown column kind 0x${kind.toString(16)}`);
    }
    return values;
  }

  done(): void {
    if (this.pos !== this.end)
      throw new SegmentFormatError(`${this.end - this.pos} unexpected bytes at ${this.pos}`);
  }
}

/** One stored message as a record; undefined for a logical message that is not a heartbeat. */
function decodeMessage(b: Buffer, start: number, end: number): StoredRecord | undefined {
  const c = new Cursor(b, start + 1, end);
  let r: StoredRecord | undefined;
  switch (b[start]) {
    case 0x42: {
      const lsn = c.u64();
      const at = c.i64();
      r = ['B', c.u32(), lsn, pgTimestampToIso(at)];
      break;
    }
    case 0x43: {
      c.u8(); // flags, unused
      const commitLsn = c.u64();
      const endLsn = c.u64();
      r = ['C', commitLsn, endLsn, pgTimestampToIso(c.i64())];
      break;
    }
    case 0x49: {
      const id = c.u32();
      expect(c, 0x4e, 'Insert');
      r = ['I', id, c.tuple()];
      break;
    }
    case 0x55: {
      const id = c.u32();
      let kind = c.u8();
      let key: ChangeValue[] | null = null;
      let old: ChangeValue[] | null = null;
      if (kind === 0x4b) key = c.tuple();
      else if (kind === 0x4f) old = c.tuple();
      if (kind !== 0x4e) kind = c.u8();
      if (kind !== 0x4e)
        throw new SegmentFormatError(`Update without a new row (0x${kind.toString(16)})`);
      r = ['U', id, key, old, c.tuple()];
      break;
    }
    case 0x44: {
      const id = c.u32();
      const kind = c.u8();
      if (kind === 0x4b) r = ['D', id, c.tuple(), null];
      else if (kind === 0x4f) r = ['D', id, null, c.tuple()];
      else throw new SegmentFormatError(`Delete without a key or old row (0x${kind.toString(16)})`);
      break;
    }
    case 0x54: {
      const n = c.i32();
      const options = c.u8();
      const ids: number[] = [];
      for (let i = 0; i < n; i++) ids.push(c.u32());
      r = ['T', ids, (options & 1) !== 0, (options & 2) !== 0];
      break;
    }
    case 0x52: {
      const id = c.u32();
      const schema = c.cstring();
      const name = c.cstring();
      const identity = String.fromCharCode(c.u8());
      const n = c.i16();
      const columns: ChangeColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = c.u8();
        columns.push([c.cstring(), c.u32(), c.i32(), (flags & 1) !== 0]);
      }
      r = ['R', id, schema, name, identity, columns];
      break;
    }
    case 0x4d: {
      c.u8(); // flags: heartbeats are non-transactional, schema events transactional
      const lsn = c.u64();
      const prefix = c.cstring();
      const content = c.text(c.i32());
      r =
        prefix === HEARTBEAT_PREFIX
          ? ['H', lsn, content]
          : prefix === SCHEMA_EVENT_PREFIX
            ? ['S', lsn, content]
            : undefined;
      break;
    }
    default:
      throw new SegmentFormatError(
        `unknown message type 0x${(b[start] ?? 0).toString(16)} at ${start}`,
      );
  }
  c.done();
  return r;
}

function expect(c: Cursor, want: number, what: string): void {
  const got = c.u8();
  if (got !== want)
    throw new SegmentFormatError(
      `${what}: expected 0x${want.toString(16)}, got 0x${got.toString(16)}`,
    );
}

// --- encoding: a record as the pgoutput message it came from ---------------

/** Builds one message from parts. */
class Writer {
  private parts: Buffer[] = [];

  u8(v: number): this {
    this.parts.push(Buffer.from([v]));
    return this;
  }

  private fixed(n: number, f: (b: Buffer) => void): this {
    const b = Buffer.allocUnsafe(n);
    f(b);
    this.parts.push(b);
    return this;
  }

  i16(v: number): this {
    return this.fixed(2, (b) => b.writeInt16BE(v));
  }

  u32(v: number): this {
    return this.fixed(4, (b) => b.writeUInt32BE(v));
  }

  i32(v: number): this {
    return this.fixed(4, (b) => b.writeInt32BE(v));
  }

  u64(v: bigint): this {
    return this.fixed(8, (b) => b.writeBigUInt64BE(v));
  }

  i64(v: bigint): this {
    return this.fixed(8, (b) => b.writeBigInt64BE(v));
  }

  cstring(s: string): this {
    this.parts.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
    return this;
  }

  text(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.i32(b.length).bytes(b);
  }

  bytes(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  tuple(values: readonly ChangeValue[]): this {
    this.i16(values.length);
    for (const v of values) {
      if (v === null) this.u8(0x6e);
      else if (v === 0) this.u8(0x75);
      else this.u8(0x74).text(v);
    }
    return this;
  }

  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** A record as a pgoutput protocol-1 message. Throws RangeError for a record no server could send. */
export function encodeRecord(r: ChangeRecord): Buffer {
  const w = new Writer();
  switch (r[0]) {
    case 'R': {
      w.u8(0x52).u32(r[1]).cstring(r[2]).cstring(r[3]).u8(r[4].charCodeAt(0)).i16(r[5].length);
      for (const [name, oid, mod, isKey] of r[5])
        w.u8(isKey ? 1 : 0)
          .cstring(name)
          .u32(oid)
          .i32(mod);
      return w.done();
    }
    case 'B':
      return w.u8(0x42).u64(lsnValue(r[2])).i64(isoToPgTimestamp(r[3])).u32(r[1]).done();
    case 'C':
      return w
        .u8(0x43)
        .u8(0)
        .u64(lsnValue(r[1]))
        .u64(lsnValue(r[2]))
        .i64(isoToPgTimestamp(r[3]))
        .done();
    case 'I':
      return w.u8(0x49).u32(r[1]).u8(0x4e).tuple(r[2]).done();
    case 'U':
      if (r[2] !== null && r[3] !== null)
        throw new RangeError('an Update carries an old key or an old row, not both');
      w.u8(0x55).u32(r[1]);
      if (r[2] !== null) w.u8(0x4b).tuple(r[2]);
      if (r[3] !== null) w.u8(0x4f).tuple(r[3]);
      return w.u8(0x4e).tuple(r[4]).done();
    case 'D':
      if ((r[2] === null) === (r[3] === null))
        throw new RangeError('a Delete carries exactly one of an old key and an old row');
      w.u8(0x44).u32(r[1]);
      return (r[2] !== null ? w.u8(0x4b).tuple(r[2]) : w.u8(0x4f).tuple(r[3]!)).done();
    case 'T':
      w.u8(0x54)
        .i32(r[1].length)
        .u8((r[2] ? 1 : 0) | (r[3] ? 2 : 0));
      for (const id of r[1]) w.u32(id);
      return w.done();
    case 'H':
      return w.u8(0x4d).u8(0).u64(lsnValue(r[1])).cstring(HEARTBEAT_PREFIX).text(r[2]).done();
    case 'S':
      return w.u8(0x4d).u8(1).u64(lsnValue(r[1])).cstring(SCHEMA_EVENT_PREFIX).text(r[2]).done();
  }
}
