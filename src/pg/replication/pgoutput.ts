/**
 * Decoding of pgoutput's binary messages (PostgreSQL docs, "Logical
 * Replication Message Formats"), protocol versions 1 and 2.
 *
 * Values stay exactly as the server printed them: pgoutput sends each column
 * in its type's text output form, and that text is the row format Flashback
 * keeps everywhere (COPY text in snapshots, the same text in the change log).
 * Nothing is parsed into JavaScript types, so microsecond timestamps,
 * numerics, bytea and arrays survive byte for byte.
 *
 * Everything here is a pure function of a Buffer, except the one piece of
 * state the format itself needs: whether a message lies inside a protocol-2
 * Stream Start/Stop block, where change messages carry an extra xid
 * (`PgoutputDecoder` tracks that).
 */
import { OperationError } from '../../errors.js';
import { pgTimestampToIso } from '../../util/pg-time.js';

/**
 * A WAL position. `value` orders and compares positions; `text` is the
 * `X/Y` form (upper-case hex, low half unpadded, as PostgreSQL 15-17 print
 * it; 18 pads the low half to 8 digits, and both forms are valid pg_lsn
 * input). Compare LSNs by `value`, never by `text`.
 */
export class Lsn {
  /** 0/0, PostgreSQL's InvalidXLogRecPtr: "no position". */
  static readonly ZERO = new Lsn(0n);

  // A #private field: invisible to deep-equality checks, so a printed and an unprinted Lsn compare equal.
  #text: string | undefined;

  constructor(readonly value: bigint) {
    if (value < 0n || value > 0xffff_ffff_ffff_ffffn)
      throw new RangeError(`LSN out of range: ${value}`);
  }

  /** Parses `X/Y` (either case, padded or not); throws RangeError on anything else. */
  static parse(text: string): Lsn {
    const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
    if (m === null) throw new RangeError(`not an LSN: "${text}"`);
    return new Lsn((BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`));
  }

  /** An Lsn from either form; strings are parsed. */
  static from(lsn: Lsn | string): Lsn {
    return typeof lsn === 'string' ? Lsn.parse(lsn) : lsn;
  }

  get text(): string {
    // Formatted on demand: most positions in a busy stream are never printed.
    this.#text ??= `${(this.value >> 32n).toString(16).toUpperCase()}/${(this.value & 0xffff_ffffn).toString(16).toUpperCase()}`;
    return this.#text;
  }

  toString(): string {
    return this.text;
  }

  toJSON(): string {
    return this.text;
  }
}

export { pgTimestampNow, pgTimestampToIso } from '../../util/pg-time.js';

/** Marks a column whose TOASTed value did not change in an update; the server did not send it. */
export const UNCHANGED_TOAST: unique symbol = Symbol('unchanged-toast');

/** One column's value: its text form, null, or UNCHANGED_TOAST. */
export type TupleValue = string | null | typeof UNCHANGED_TOAST;

/**
 * A row as sent: one value per published column, in the order of the
 * relation's `columns` (dropped and, by default, generated columns are not
 * sent at all). In an old-key tuple (`oldKey`) non-key columns are null.
 */
export type Tuple = readonly TupleValue[];

/** pg_class.relreplident: default (primary key), nothing, full, index. */
export type ReplicaIdentity = 'd' | 'n' | 'f' | 'i';

/** A column of a Relation message. */
export interface RelationColumn {
  readonly name: string;
  readonly typeOid: number;
  /** atttypmod, -1 when the type has no modifier. */
  readonly typeMod: number;
  /** Part of the replica identity (every column under REPLICA IDENTITY FULL). */
  readonly isKey: boolean;
}

/**
 * Set on messages inside a protocol-2 Stream Start/Stop block: the
 * (top-level) transaction the change belongs to. Absent everywhere else.
 */
interface InStream {
  readonly xid?: number;
}

/** 'B': a transaction begins; its changes follow, then Commit. */
export interface BeginMessage {
  readonly tag: 'begin';
  /** LSN of the transaction's commit record (equals the Commit's commitLsn). */
  readonly finalLsn: Lsn;
  /** Commit time, ISO 8601 with microseconds. */
  readonly commitTime: string;
  /** Commit time as sent: microseconds since 2000-01-01 UTC. */
  readonly commitTimeMicros: bigint;
  readonly xid: number;
}

/** 'C': the transaction begun by the last Begin committed. */
export interface CommitMessage {
  readonly tag: 'commit';
  /** Unused by the server so far (0). */
  readonly flags: number;
  /** LSN of the commit record. */
  readonly commitLsn: Lsn;
  /** End of the commit record: the position to acknowledge once the transaction is stored. */
  readonly endLsn: Lsn;
  readonly commitTime: string;
  readonly commitTimeMicros: bigint;
}

/** 'O': the transaction was replicated from another node (origin name and its LSN there). */
export interface OriginMessage {
  readonly tag: 'origin';
  readonly lsn: Lsn;
  readonly name: string;
}

/** 'R': a table's published shape; sent before its first change in a session and after each change to it. */
export interface RelationMessage extends InStream {
  readonly tag: 'relation';
  readonly relationId: number;
  /** Schema name; empty for pg_catalog. */
  readonly schema: string;
  readonly name: string;
  readonly replicaIdentity: ReplicaIdentity;
  readonly columns: readonly RelationColumn[];
}

/** 'Y': a non-built-in type used by a following Relation. */
export interface TypeMessage extends InStream {
  readonly tag: 'type';
  readonly typeOid: number;
  /** Schema name; empty for pg_catalog. */
  readonly schema: string;
  readonly name: string;
}

/** 'I': a row was inserted. */
export interface InsertMessage extends InStream {
  readonly tag: 'insert';
  readonly relationId: number;
  readonly newTuple: Tuple;
}

/**
 * 'U': a row was updated. `oldKey` is present when the replica-identity key
 * changed (identity DEFAULT or INDEX); `oldTuple` is the whole old row under
 * REPLICA IDENTITY FULL; neither otherwise. Never both.
 */
export interface UpdateMessage extends InStream {
  readonly tag: 'update';
  readonly relationId: number;
  readonly oldKey?: Tuple;
  readonly oldTuple?: Tuple;
  readonly newTuple: Tuple;
}

/**
 * 'D': a row was deleted. Exactly one of `oldKey` (the replica-identity key,
 * other columns null) or `oldTuple` (REPLICA IDENTITY FULL) is present.
 * (A table with REPLICA IDENTITY NOTHING and no key cannot publish deletes.)
 */
export interface DeleteMessage extends InStream {
  readonly tag: 'delete';
  readonly relationId: number;
  readonly oldKey?: Tuple;
  readonly oldTuple?: Tuple;
}

/** 'T': one TRUNCATE statement over one or more tables. */
export interface TruncateMessage extends InStream {
  readonly tag: 'truncate';
  readonly relationIds: readonly number[];
  readonly cascade: boolean;
  readonly restartIdentity: boolean;
}

/** 'M': a logical decoding message (pg_logical_emit_message), e.g. a heartbeat. */
export interface LogicalMessage extends InStream {
  readonly tag: 'message';
  /** Inside a transaction (between Begin and Commit) or decoded immediately. */
  readonly transactional: boolean;
  readonly lsn: Lsn;
  readonly prefix: string;
  /** The bytes as emitted (an own copy). */
  readonly content: Buffer;
}

/** 'S' (protocol 2, streaming on): a block of an in-progress transaction's changes follows. */
export interface StreamStartMessage {
  readonly tag: 'stream-start';
  readonly xid: number;
  /** The first block of this transaction. */
  readonly firstSegment: boolean;
}

/** 'E' (protocol 2): the current stream block ends. */
export interface StreamStopMessage {
  readonly tag: 'stream-stop';
}

/** 'c' (protocol 2): a streamed transaction committed. */
export interface StreamCommitMessage {
  readonly tag: 'stream-commit';
  readonly xid: number;
  readonly flags: number;
  readonly commitLsn: Lsn;
  readonly endLsn: Lsn;
  readonly commitTime: string;
  readonly commitTimeMicros: bigint;
}

/**
 * 'A' (protocol 2): a streamed transaction, or one of its subtransactions
 * (`subXid` differs from `xid`), aborted: drop the changes streamed for it.
 * The abort position and time are sent only under protocol 4 with parallel
 * streaming.
 */
export interface StreamAbortMessage {
  readonly tag: 'stream-abort';
  readonly xid: number;
  readonly subXid: number;
  readonly abortLsn?: Lsn;
  readonly abortTime?: string;
}

/** Any decoded pgoutput message. */
export type PgoutputMessage =
  | BeginMessage
  | CommitMessage
  | OriginMessage
  | RelationMessage
  | TypeMessage
  | InsertMessage
  | UpdateMessage
  | DeleteMessage
  | TruncateMessage
  | LogicalMessage
  | StreamStartMessage
  | StreamStopMessage
  | StreamCommitMessage
  | StreamAbortMessage;

/** A pgoutput message that does not follow the format: a bug on either side, never retried. */
export class PgoutputDecodeError extends OperationError {
  constructor(message: string) {
    super('replication.protocol', `cannot decode a pgoutput message: ${message}`, {
      hint: 'this is a protocol mismatch between Flashback and the server; report it with the server version',
    });
  }
}

/** A cursor over one message; every read is bounds-checked. */
class Reader {
  private pos = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new PgoutputDecodeError(
        `${this.what} message ends early (needs ${n} more bytes at offset ${this.pos} of ${this.buf.length})`,
      );
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  i16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  i64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  lsn(): Lsn {
    return new Lsn(this.u64());
  }

  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new PgoutputDecodeError(`${this.what} message: unterminated string`);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }

  text(n: number): string {
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** A copy: the caller's buffer may be reused by the connection's parser. */
  bytes(n: number): Buffer {
    this.need(n);
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  end(): void {
    if (this.pos !== this.buf.length) {
      throw new PgoutputDecodeError(
        `${this.what} message has ${this.buf.length - this.pos} unexpected trailing bytes`,
      );
    }
  }
}

const NAMES: Readonly<Record<number, string>> = {
  66: 'Begin',
  67: 'Commit',
  79: 'Origin',
  82: 'Relation',
  89: 'Type',
  73: 'Insert',
  85: 'Update',
  68: 'Delete',
  84: 'Truncate',
  77: 'Message',
  83: 'Stream Start',
  69: 'Stream Stop',
  99: 'Stream Commit',
  65: 'Stream Abort',
};

/**
 * Decodes one pgoutput message (the payload of an XLogData message).
 * `inStream`: the message lies between Stream Start and Stream Stop, so
 * change, relation, type and message records begin with the transaction's
 * xid. Throws PgoutputDecodeError on a malformed or unknown message.
 */
export function decodePgoutput(data: Buffer, inStream = false): PgoutputMessage {
  if (data.length === 0) throw new PgoutputDecodeError('empty message');
  const type = data[0]!;
  const name = NAMES[type];
  if (name === undefined) {
    throw new PgoutputDecodeError(
      `unknown message type 0x${type.toString(16)} ('${String.fromCharCode(type)}')`,
    );
  }
  const r = new Reader(data, name);
  r.u8();
  const msg = decodeBody(type, r, inStream);
  r.end();
  return msg;
}

function decodeBody(type: number, r: Reader, inStream: boolean): PgoutputMessage {
  switch (type) {
    case 0x42: {
      const finalLsn = r.lsn();
      const micros = r.i64();
      return {
        tag: 'begin',
        finalLsn,
        commitTime: pgTimestampToIso(micros),
        commitTimeMicros: micros,
        xid: r.u32(),
      };
    }
    case 0x43: {
      const flags = r.u8();
      const commitLsn = r.lsn();
      const endLsn = r.lsn();
      const micros = r.i64();
      return {
        tag: 'commit',
        flags,
        commitLsn,
        endLsn,
        commitTime: pgTimestampToIso(micros),
        commitTimeMicros: micros,
      };
    }
    case 0x4f: {
      const lsn = r.lsn();
      return { tag: 'origin', lsn, name: r.cstring() };
    }
    case 0x52: {
      const xid = streamXid(r, inStream);
      const relationId = r.u32();
      const schema = r.cstring();
      const name = r.cstring();
      const replicaIdentity = identity(r.u8());
      const n = r.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = r.u8();
        columns.push({
          name: r.cstring(),
          typeOid: r.u32(),
          typeMod: r.i32(),
          isKey: (flags & 1) !== 0,
        });
      }
      return { tag: 'relation', ...xid, relationId, schema, name, replicaIdentity, columns };
    }
    case 0x59: {
      const xid = streamXid(r, inStream);
      const typeOid = r.u32();
      const schema = r.cstring();
      return { tag: 'type', ...xid, typeOid, schema, name: r.cstring() };
    }
    case 0x49: {
      const xid = streamXid(r, inStream);
      const relationId = r.u32();
      expectByte(r, 0x4e, 'Insert');
      return { tag: 'insert', ...xid, relationId, newTuple: readTuple(r) };
    }
    case 0x55: {
      const xid = streamXid(r, inStream);
      const relationId = r.u32();
      const kind = r.u8();
      if (kind === 0x4e) return { tag: 'update', ...xid, relationId, newTuple: readTuple(r) };
      if (kind !== 0x4b && kind !== 0x4f) throw badSubmessage('Update', kind);
      const old = readTuple(r);
      expectByte(r, 0x4e, 'Update');
      const newTuple = readTuple(r);
      return kind === 0x4b
        ? { tag: 'update', ...xid, relationId, oldKey: old, newTuple }
        : { tag: 'update', ...xid, relationId, oldTuple: old, newTuple };
    }
    case 0x44: {
      const xid = streamXid(r, inStream);
      const relationId = r.u32();
      const kind = r.u8();
      if (kind === 0x4b) return { tag: 'delete', ...xid, relationId, oldKey: readTuple(r) };
      if (kind === 0x4f) return { tag: 'delete', ...xid, relationId, oldTuple: readTuple(r) };
      throw badSubmessage('Delete', kind);
    }
    case 0x54: {
      const xid = streamXid(r, inStream);
      const n = r.i32();
      const options = r.u8();
      const relationIds: number[] = [];
      for (let i = 0; i < n; i++) relationIds.push(r.u32());
      return {
        tag: 'truncate',
        ...xid,
        relationIds,
        cascade: (options & 1) !== 0,
        restartIdentity: (options & 2) !== 0,
      };
    }
    case 0x4d: {
      const xid = streamXid(r, inStream);
      const flags = r.u8();
      const lsn = r.lsn();
      const prefix = r.cstring();
      const length = r.i32();
      if (length < 0) throw new PgoutputDecodeError(`Message: negative content length ${length}`);
      return {
        tag: 'message',
        ...xid,
        transactional: (flags & 1) !== 0,
        lsn,
        prefix,
        content: r.bytes(length),
      };
    }
    case 0x53: {
      const xid = r.u32();
      return { tag: 'stream-start', xid, firstSegment: r.u8() === 1 };
    }
    case 0x45:
      return { tag: 'stream-stop' };
    case 0x63: {
      const xid = r.u32();
      const flags = r.u8();
      const commitLsn = r.lsn();
      const endLsn = r.lsn();
      const micros = r.i64();
      return {
        tag: 'stream-commit',
        xid,
        flags,
        commitLsn,
        endLsn,
        commitTime: pgTimestampToIso(micros),
        commitTimeMicros: micros,
      };
    }
    default: {
      // 0x41, Stream Abort; NAMES admits nothing else.
      const xid = r.u32();
      const subXid = r.u32();
      if (r.remaining === 0) return { tag: 'stream-abort', xid, subXid };
      const abortLsn = r.lsn();
      return { tag: 'stream-abort', xid, subXid, abortLsn, abortTime: pgTimestampToIso(r.i64()) };
    }
  }
}

/** Reads the xid that prefixes a message inside a stream block; `{}` outside one. */
function streamXid(r: Reader, inStream: boolean): { xid?: number } {
  return inStream ? { xid: r.u32() } : {};
}

function identity(code: number): ReplicaIdentity {
  switch (code) {
    case 0x64:
      return 'd';
    case 0x6e:
      return 'n';
    case 0x66:
      return 'f';
    case 0x69:
      return 'i';
    default:
      throw new PgoutputDecodeError(`Relation: unknown replica identity 0x${code.toString(16)}`);
  }
}

function expectByte(r: Reader, want: number, what: string): void {
  const got = r.u8();
  if (got !== want) throw badSubmessage(what, got);
}

function badSubmessage(what: string, got: number): PgoutputDecodeError {
  return new PgoutputDecodeError(
    `${what}: unexpected tuple marker 0x${got.toString(16)} ('${String.fromCharCode(got)}')`,
  );
}

function readTuple(r: Reader): Tuple {
  const n = r.i16();
  const values: TupleValue[] = [];
  for (let i = 0; i < n; i++) {
    const kind = r.u8();
    switch (kind) {
      case 0x74: // t: text
        values.push(r.text(r.i32()));
        break;
      case 0x6e: // n: null
        values.push(null);
        break;
      case 0x75: // u: unchanged TOASTed value
        values.push(UNCHANGED_TOAST);
        break;
      case 0x62: // b: binary, sent only with the `binary` option, which Flashback never sets
        throw new PgoutputDecodeError(
          'a column arrived in binary form; Flashback requests text form only (no `binary` option)',
        );
      default:
        throw new PgoutputDecodeError(`unknown column kind 0x${kind.toString(16)}`);
    }
  }
  return values;
}

/**
 * Decodes a session's messages in order, tracking Stream Start/Stop so the
 * xid prefix of streamed changes is read. One per replication session.
 */
export class PgoutputDecoder {
  private inStream = false;

  /** Decodes the next message of the session; throws PgoutputDecodeError. */
  decode(data: Buffer): PgoutputMessage {
    const msg = decodePgoutput(data, this.inStream);
    if (msg.tag === 'stream-start') this.inStream = true;
    else if (msg.tag === 'stream-stop') this.inStream = false;
    return msg;
  }
}
