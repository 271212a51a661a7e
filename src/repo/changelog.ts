/**
 * The change log: `changes/<scope>/` holds a target's captured changes as a
 * sequence of segments, plus `capture.json` describing the slot they come
 * from. docs/REPOSITORY.md ("Change log") is the specification.
 *
 * A segment is an object `changes/<scope>/<seq>-<committed>.seg`:
 * - `<seq>`: 12 decimal digits, 1, 2, 3, …: the order of segments;
 * - `<committed>`: 16 hex digits, where the log is complete up to: the end
 *   LSN of the last commit stored in this or an earlier segment, or a later
 *   position the server reported with no transaction open (a heartbeat's, a
 *   keepalive's): capture resumes there after a restart, it is the furthest
 *   the slot is ever acknowledged, and a reader that needs changes up to
 *   LSN X reads segments until it passes X.
 * Its content (compressed like chunks: codec header + zstd) is the
 * pgoutput messages as received, framed (changelog-format.ts), which readers
 * see as records (ChangeRecord). Transactions are in commit
 * order and never interleave; a large transaction may span segments (memory
 * stays bounded while capturing it). A transaction counts only once its
 * commit record is read: a Begin while another transaction is open means the
 * open one was cut off by a crash (it comes again, whole, later).
 *
 * Every segment starts self-describing: before a table's first change in a
 * segment, its relation record (columns, key) is repeated.
 */
import { DamagedError, RepositoryError } from '../errors.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import { isoToPgTimestamp, pgTimestampToIso } from '../util/pg-time.js';
import { ownedCopy, ownsMemory, ThreadPool, threadAvailable } from '../util/thread.js';
import {
  type ChangeColumn,
  type ChangeRecord,
  type ChangeValue,
  decodeSegment,
  decodeStored,
  encodeRecords,
  FIRST_FRAME,
  findBegin,
  frameBody,
  frameEnd,
  lsnValue,
  SegmentFormatError,
  type StoredRecord,
  storedRecords,
} from './changelog-format.js';
import { ChunkFormatError, decodeChunk, encodeChunk } from './codec.js';
import { HeldFile, OBJECT } from './held-file.js';
import type { SegmentReply } from './segment-worker.js';

/** Segments read ahead of the one being used (ChangeLog.contents). */
const READ_AHEAD = 4;
/**
 * Stored bytes below which segments are decompressed inline, not on a
 * thread: starting one costs about 0.08 s (0.27 s under tsx), the time to
 * decompress some 30 MB here. An undo of one transaction among many small
 * segments (heartbeats) spent longer starting the thread than reading.
 */
const THREAD_BYTES = 16 * 1024 * 1024;
const SEGMENT_WORKER = new URL('./segment-worker.js', import.meta.url);

export type { ChangeColumn, ChangeRecord, ChangeValue } from './changelog-format.js';
export { HEARTBEAT_PREFIX, lsnText, lsnValue } from './changelog-format.js';

/** `changes/<scope>/capture.json`: where the log begins. */
export interface CaptureInfo {
  readonly format: 'flashback-capture';
  /** 1 as capture writes it; 2 once `prune` has removed the log's oldest segments. */
  readonly version: 1 | 2;
  readonly target: string;
  readonly slot: string;
  readonly publication: string;
  readonly systemIdentifier: string;
  readonly database: string;
  /**
   * The slot's consistent point: every transaction committing at or after it
   * is in the log. A snapshot whose LSN is at or after this joins the log
   * without a gap. Pruning moves it forward (to the oldest snapshot kept).
   */
  readonly startLsn: string;
  readonly created: string;
  /** Version 2: the first segment kept; those before it were pruned (any still listed are leftovers of an interrupted prune). */
  readonly firstSegment?: number;
  /** Version 2: the slot's consistent point, where the log began before pruning (capture resumes from what the slot has). */
  readonly originLsn?: string;
  /** Version 2: when the log was last pruned. */
  readonly prunedAt?: string;
  /**
   * Which of the target's logs this is (ChangeLog.number); absent in the
   * first. A later log is begun by `capture --new-log` when the one before
   * cannot continue (its slot is gone, say after a failover).
   */
  readonly log?: number;
  /**
   * In a later log: where the log before it ends (the `<committed>` of its
   * last segment when this one began). Moments after it and before this
   * log's start are in no log.
   */
  readonly previousEnd?: string;
}

/** `capture.json` cannot be read as a change log's description. */
function damagedInfo(
  log: { readonly label: string; readonly dir: string },
  why: string,
): DamagedError {
  return new DamagedError(
    'changelog.info-damaged',
    `the change log of ${log.label} cannot be used: ${log.dir}capture.json is damaged (${why}); without it no moment of the log can be placed`,
    {
      hint: 'copy capture.json back from a copy of the repository; `flashback check` lists what else is damaged',
    },
  );
}

/** A segment as listed. */
export interface SegmentInfo {
  readonly key: string;
  readonly seq: number;
  /**
   * The log is complete up to here once this segment is read: every
   * transaction committing before it is in this or an earlier segment. The
   * end LSN of the last commit stored, or a later heartbeat's or keepalive's
   * position when no transaction was open (16-hex form sorts).
   */
  readonly committed: bigint;
  readonly size: number;
}

const PREFIX = 'changes/';
const SEGMENT = /^(\d{12})-([0-9a-f]{16})\.seg$/;
const SCHEMA_RECORD = /^schemas\/([0-9a-f]{16})\.json$/;

/**
 * `changes/<scope>/schemas/<end LSN>.json`: the schema right after a
 * transaction that changed it (src/capture/schema-events.ts), or the fact
 * that it could not be read at that moment. Written before the segment
 * holding the transaction's commit, so every stored schema change has one.
 * `Model` and `Shape` are the pg layer's (opaque here).
 */
export interface SchemaRecord<Model = unknown, Shape = unknown> {
  readonly format: 'flashback-schema';
  readonly version: 1;
  /** The source's schema-change counter after this transaction. */
  readonly generation: number;
  readonly xid: number;
  readonly commitLsn: string;
  readonly endLsn: string;
  readonly commitTime: string;
  /** When capture read it. */
  readonly readAt: string;
  /** The schema after the transaction; null when another change committed before it could be read. */
  readonly model: Model | null;
  /** Table shapes (OID, attnums) keyed `schema.name`, read with the model; null with it. */
  readonly shapes: Record<string, Shape> | null;
}

/**
 * `changes/<scope>/slot-pending.json`: written just before capture creates
 * its replication slot, removed once `capture.json` records it. Found with
 * the slot and without `capture.json`, it says the slot is this
 * repository's, from a start that died in between (it holds nothing of the
 * log yet).
 */
export interface PendingSlot {
  readonly slot: string;
  readonly systemIdentifier: string;
  readonly database: string;
  readonly at: string;
}

/**
 * `changes/<scope>/acknowledged.json`: since which slot position capture
 * acknowledges only what is stored, i.e. never a position past the newest
 * segment's `<committed>`. Written once, when a log is started or when a
 * capture of this version first resumes a log (earlier versions acknowledged
 * keepalive positions without storing them: `since` is the slot's confirmed
 * position then). A slot confirmed past both `since` and the newest
 * segment's `<committed>` means stored segments were lost.
 */
export interface AckRecord {
  readonly format: 'flashback-acks';
  readonly version: 1;
  readonly since: string;
  readonly at: string;
}

/**
 * `changes/<scope>/idle.json`: what `backup --from-log` last found when it
 * made nothing: no transaction committed between snapshot `snapshot`'s LSN
 * and `upTo` (the log was complete up to there). The next run after the
 * same snapshot reads the log only from `upTo`: a source idle for a week
 * stores a heartbeat segment every few seconds, and each run read them all
 * again. Overwritten by each such run; a record of another snapshot or of
 * another log (`logStart`) is ignored. Only an optimisation: without it the
 * log is read from the snapshot.
 */
export interface IdleRecord {
  readonly format: 'flashback-idle';
  readonly version: 1;
  readonly snapshot: string;
  readonly logStart: string;
  readonly upTo: string;
  readonly at: string;
}

/** A schema record as listed: its end LSN (from the name) and a reader. */
export interface SchemaRecordRef {
  readonly key: string;
  readonly endLsn: bigint;
}

/** A change log's directory name: `<scope>` for a target's first log, `<scope>.<n>` for its n-th. */
const LOG_DIR = /^([A-Za-z0-9][A-Za-z0-9_-]*)(?:\.([1-9][0-9]*))?$/;

/**
 * One change log of a target (its scope, as for run records). A target has
 * one log per replication slot it was captured from: the first in
 * `changes/<scope>/`, a later one (begun by `capture --new-log` once the one
 * before could not continue) in `changes/<scope>.<n>/`. `.` is not in any
 * scope (runScope), so the names cannot clash.
 */
export class ChangeLog {
  /** Stored bytes of segments from which `contents` decompresses them on a thread. */
  threadBytes = THREAD_BYTES;

  constructor(
    readonly storage: Storage,
    readonly scope: string,
    /** 1 for the target's first log, n for its n-th. */
    readonly number = 1,
  ) {}

  /** The log in `changes/<name>/`, or undefined when the name is not a log's directory. */
  static inDirectory(storage: Storage, name: string): ChangeLog | undefined {
    const m = LOG_DIR.exec(name);
    if (m === null || m[2] === '1') return undefined;
    return new ChangeLog(storage, m[1]!, m[2] === undefined ? 1 : Number(m[2]));
  }

  /** Its directory in the repository, `changes/<scope>[.<n>]/`. */
  get dir(): string {
    return `${PREFIX}${this.scope}${this.number === 1 ? '' : `.${this.number}`}/`;
  }

  /** How messages name it: `"prod"`, or `"prod" (log 2)`. */
  get label(): string {
    return this.number === 1 ? `"${this.scope}"` : `"${this.scope}" (log ${this.number})`;
  }

  /** A JSON file of the log's directory, or undefined when there is none. */
  private async readJson<T>(name: string): Promise<T | undefined> {
    try {
      return JSON.parse((await this.storage.read(`${this.dir}${name}`)).toString('utf8')) as T;
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return undefined;
      throw err;
    }
  }

  /** The capture description, or undefined before the first capture. */
  async info(): Promise<CaptureInfo | undefined> {
    let info: CaptureInfo | undefined;
    try {
      info = await this.readJson<CaptureInfo>('capture.json');
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      throw damagedInfo(this, `it is not JSON (${err.message})`);
    }
    if (info === undefined) return undefined;
    // Read by status, restores to a moment, history and capture: a torn or
    // edited file is damage they report, not a crash of each of them.
    const o = info as unknown as Record<string, unknown>;
    if (o === null || typeof o !== 'object' || o.format !== 'flashback-capture') {
      throw damagedInfo(this, 'it is not a change log description (format "flashback-capture")');
    }
    if (typeof o.version !== 'number' || !Number.isInteger(o.version) || o.version < 1) {
      throw damagedInfo(this, `its version is ${JSON.stringify(o.version)}`);
    }
    if (info.version > 2) {
      throw new RepositoryError(
        'version',
        `the change log of ${this.label} has format version ${info.version}; this Flashback reads up to 2`,
        { hint: 'upgrade Flashback to read it' },
      );
    }
    const lsn = (x: unknown) => typeof x === 'string' && /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i.test(x);
    const missing = [
      ...['target', 'slot', 'publication', 'systemIdentifier', 'database', 'created'].filter(
        (k) => typeof o[k] !== 'string',
      ),
      ...(lsn(o.startLsn) ? [] : ['startLsn']),
      ...(o.originLsn === undefined || lsn(o.originLsn) ? [] : ['originLsn']),
      ...(o.previousEnd === undefined || lsn(o.previousEnd) ? [] : ['previousEnd']),
      ...(o.firstSegment === undefined ||
      (typeof o.firstSegment === 'number' &&
        Number.isInteger(o.firstSegment) &&
        o.firstSegment >= 1)
        ? []
        : ['firstSegment']),
    ];
    if (missing.length > 0) {
      throw damagedInfo(this, `${missing.join(', ')} missing or not valid`);
    }
    return info;
  }

  /** Writes the capture description (when the slot is created). */
  async writeInfo(info: CaptureInfo): Promise<void> {
    await this.storage.write(
      `${this.dir}capture.json`,
      Buffer.from(`${JSON.stringify(info, null, 2)}\n`),
    );
  }

  /** Since when capture acknowledges only stored positions (AckRecord); undefined for a log no capture of this version resumed. */
  async ackRecord(): Promise<AckRecord | undefined> {
    const r = await this.readJson<AckRecord>('acknowledged.json');
    if (r === undefined) return undefined;
    if (r.format !== 'flashback-acks' || typeof r.since !== 'string') {
      throw new RepositoryError(
        'changelog.acks',
        `${this.dir}acknowledged.json is not a record of flashback's acknowledgements`,
        { hint: 'run `flashback check`; restore the file from a copy of the repository' },
      );
    }
    if (r.version > 1) {
      throw new RepositoryError(
        'version',
        `${this.dir}acknowledged.json has version ${r.version}, newer than this flashback reads (1)`,
        { hint: 'upgrade flashback' },
      );
    }
    return r;
  }

  /** The IdleRecord, or undefined (none, or not one this version reads). */
  async idleRecord(): Promise<IdleRecord | undefined> {
    const r = await this.readJson<IdleRecord>('idle.json').catch((err: unknown) => {
      if (err instanceof SyntaxError) return undefined; // a torn write: only an optimisation
      throw err;
    });
    const lsn = (x: unknown) => typeof x === 'string' && /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i.test(x);
    return r?.format === 'flashback-idle' &&
      r.version === 1 &&
      typeof r.snapshot === 'string' &&
      typeof r.logStart === 'string' &&
      lsn(r.upTo)
      ? r
      : undefined;
  }

  /** Writes (over) the IdleRecord. */
  async writeIdleRecord(r: Omit<IdleRecord, 'format' | 'version' | 'at'>): Promise<void> {
    const record: IdleRecord = {
      format: 'flashback-idle',
      version: 1,
      ...r,
      at: new Date().toISOString(),
    };
    await this.storage.write(`${this.dir}idle.json`, Buffer.from(`${JSON.stringify(record)}\n`));
  }

  /** Writes the AckRecord unless one exists (the first one stays). */
  async writeAckRecord(since: string): Promise<void> {
    const r: AckRecord = {
      format: 'flashback-acks',
      version: 1,
      since,
      at: new Date().toISOString(),
    };
    await this.storage.writeIfAbsent(
      `${this.dir}acknowledged.json`,
      Buffer.from(`${JSON.stringify(r, null, 2)}\n`),
    );
  }

  /** The record of a slot being created (PendingSlot), if there is one. */
  async pendingSlot(): Promise<PendingSlot | undefined> {
    try {
      return JSON.parse(
        (await this.storage.read(`${this.dir}slot-pending.json`)).toString('utf8'),
      ) as PendingSlot;
    } catch (err) {
      if (err instanceof ObjectNotFoundError || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  /** Records, or (undefined) forgets, a slot being created. */
  async setPendingSlot(pending: PendingSlot | undefined): Promise<void> {
    const key = `${this.dir}slot-pending.json`;
    if (pending === undefined) await this.storage.delete(key);
    else await this.storage.write(key, Buffer.from(`${JSON.stringify(pending, null, 2)}\n`));
  }

  /**
   * What pruning the log to `fromLsn` removes: the leading segments that hold
   * only transactions committed before it (`skippable`), any leftovers of an
   * earlier interrupted prune, and the schema records no window starting at
   * or after it reads. Nothing is deleted here.
   */
  async prunable(
    info: CaptureInfo,
    fromLsn: bigint,
  ): Promise<{ segments: SegmentInfo[]; schemas: SchemaRecordRef[]; firstSegment: number }> {
    const all = await this.segments();
    const kept = all.filter((s) => s.seq >= (info.firstSegment ?? 1));
    const skip = skippable(kept, fromLsn);
    const firstSegment = kept[skip]?.seq ?? info.firstSegment ?? 1;
    return {
      segments: all.filter((s) => s.seq < firstSegment),
      // (A window from a snapshot at LSN x reads the records after x.)
      schemas: (await this.schemaRecords()).filter((r) => r.endLsn <= fromLsn),
      firstSegment,
    };
  }

  /** Deletes a segment or schema record that `prunable` named. */
  async remove(key: string): Promise<void> {
    if (!key.startsWith(this.dir)) throw new Error(`${key} is not part of this change log`);
    await this.storage.delete(key);
  }

  /** Every segment, in order. */
  async segments(): Promise<SegmentInfo[]> {
    const out: SegmentInfo[] = [];
    for await (const o of this.storage.list(this.dir)) {
      const m = SEGMENT.exec(o.key.slice(this.dir.length));
      if (m === null) continue;
      out.push({ key: o.key, seq: Number(m[1]), committed: BigInt(`0x${m[2]}`), size: o.size });
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  /**
   * Stores a segment. Fails if its sequence number is taken: two captures of
   * one target never both write (the slot admits one reader; this is the
   * repository-side guard).
   */
  async writeSegment(
    seq: number,
    committed: bigint,
    /** Records, or format-2 content as capture builds it (changelog-format.ts). */
    content: readonly ChangeRecord[] | Buffer,
  ): Promise<string> {
    const key = `${this.dir}${String(seq).padStart(12, '0')}-${committed.toString(16).padStart(16, '0')}.seg`;
    const stored = await encodeChunk(Buffer.isBuffer(content) ? content : encodeRecords(content));
    if (!(await this.storage.writeIfAbsent(key, stored))) {
      throw new RepositoryError(
        'changelog.conflict',
        `change-log segment ${key} already exists: another capture of ${this.label} is writing`,
        { hint: 'run one capture per target' },
      );
    }
    return key;
  }

  /** Stores the schema record of a transaction (replacing one of the same position: capture may see it again after a restart). */
  async writeSchema(record: SchemaRecord): Promise<string> {
    const key = schemaRecordKey(this.dir, lsnValue(record.endLsn));
    if (record.model === null) {
      // Seen again after a restart, when a later change has made it unreadable:
      // what was recorded the first time stays.
      const had = await this.readSchema({ key, endLsn: lsnValue(record.endLsn) }).catch(
        () => undefined,
      );
      if (had !== undefined && had.model !== null) return key;
    }
    await this.storage.write(key, await encodeChunk(Buffer.from(JSON.stringify(record))));
    return key;
  }

  /** The schema records, in log order. */
  async schemaRecords(): Promise<SchemaRecordRef[]> {
    const out: SchemaRecordRef[] = [];
    for await (const o of this.storage.list(`${this.dir}schemas/`)) {
      const m = SCHEMA_RECORD.exec(o.key.slice(this.dir.length));
      if (m !== null) out.push({ key: o.key, endLsn: BigInt(`0x${m[1]}`) });
    }
    return out.sort((a, b) => (a.endLsn < b.endLsn ? -1 : a.endLsn > b.endLsn ? 1 : 0));
  }

  /** Reads one schema record; DamagedError when it is missing or cannot be decoded. */
  async readSchema<Model, Shape>(ref: SchemaRecordRef): Promise<SchemaRecord<Model, Shape>> {
    try {
      const { content } = await decodeChunk(await this.storage.read(ref.key));
      const r = JSON.parse(content.toString('utf8')) as SchemaRecord<Model, Shape>;
      if (r.format !== 'flashback-schema') throw new SegmentFormatError('not a schema record');
      if (r.version > 1) {
        throw new RepositoryError(
          'version',
          `schema record ${ref.key} has format version ${r.version}; this Flashback reads up to 1`,
          { hint: 'upgrade Flashback to read it' },
        );
      }
      return r;
    } catch (err) {
      throw damagedObject(ref.key, err);
    }
  }

  /** Reads one segment's records. */
  readSegment(seg: SegmentInfo): Promise<ChangeRecord[]> {
    return this.decode(seg, decodeSegment);
  }

  /** A segment's content through `decode`; DamagedError when it cannot be read or decoded. */
  async decode<T>(seg: SegmentInfo, decode: (content: Buffer) => T): Promise<T> {
    const content = await this.readContent(seg);
    try {
      return decode(content);
    } catch (err) {
      throw damaged(seg, err);
    }
  }

  /**
   * The contents of `segments` in order, read ahead: while the caller uses
   * one, the next few are read and decompressed, on a worker thread when
   * one can be started and they are worth one (`threadBytes`), with the
   * checksum of a format-2 content verified there (`verified`). Reading a long window, decompressing and hashing
   * on the thread that folds the changes in cost it a tenth of its time.
   * A segment that cannot be read is its DamagedError, in its turn.
   */
  async *contents(
    segments: readonly SegmentInfo[],
  ): AsyncGenerator<{ seg: SegmentInfo; content: Buffer; verified: boolean }> {
    const pool =
      segments.length >= READ_AHEAD &&
      segments.reduce((a, s) => a + s.size, 0) >= this.threadBytes &&
      threadAvailable(SEGMENT_WORKER)
        ? new ThreadPool<SegmentReply>(SEGMENT_WORKER, 1)
        : undefined;
    const load = async (seg: SegmentInfo) => {
      if (pool === undefined || pool.broken) {
        return { seg, content: await this.readContent(seg), verified: false };
      }
      let stored: Buffer;
      try {
        stored = await this.storage.read(seg.key);
      } catch (err) {
        throw damaged(seg, err);
      }
      const whole = ownsMemory(stored) ? stored : ownedCopy(stored);
      let m: SegmentReply;
      try {
        m = await pool.run({ stored: whole }, [whole.buffer as ArrayBuffer]);
      } catch {
        // The thread died: this segment (its bytes moved to it) and the rest inline.
        return { seg, content: await this.readContent(seg), verified: false };
      }
      if (m.content === undefined) {
        const cause = m.segmentFormat
          ? new SegmentFormatError(m.error ?? '')
          : new ChunkFormatError(m.error ?? '');
        throw damaged(seg, cause);
      }
      const content = Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength);
      return { seg, content, verified: true };
    };
    const ahead: Array<Promise<{ seg: SegmentInfo; content: Buffer; verified: boolean }>> = [];
    let next = 0;
    try {
      while (next < segments.length || ahead.length > 0) {
        while (ahead.length < READ_AHEAD && next < segments.length) {
          const p = load(segments[next++]!);
          p.catch(() => {}); // (awaited in its turn; a reader that stops early never will)
          ahead.push(p);
        }
        yield await ahead.shift()!;
      }
    } finally {
      await pool?.close();
    }
  }

  /**
   * A segment's stored bytes (compressed), in memory of their own (to be
   * transferred to a thread); DamagedError when it is missing.
   */
  async stored(seg: SegmentInfo): Promise<Buffer> {
    let stored: Buffer;
    try {
      stored = await this.storage.read(seg.key);
    } catch (err) {
      throw damaged(seg, err);
    }
    return ownsMemory(stored) ? stored : Buffer.from(ownedCopy(stored).buffer);
  }

  /** A segment's decompressed content; DamagedError when it is missing or cannot be decoded. */
  private async readContent(seg: SegmentInfo): Promise<Buffer> {
    try {
      return (await decodeChunk(await this.storage.read(seg.key))).content;
    } catch (err) {
      throw damaged(seg, err);
    }
  }
}

/** The error for a segment that cannot be read or decoded; anything else passes unchanged. */
function damaged(seg: SegmentInfo, err: unknown): unknown {
  return damagedObject(seg.key, err);
}

/** The error for a change-log object that cannot be read or decoded; anything else passes unchanged. */
/** The key of the schema record of the transaction ending at `endLsn`, in the log at `dir`. */
export function schemaRecordKey(dir: string, endLsn: bigint): string {
  return `${dir}schemas/${endLsn.toString(16).padStart(16, '0')}.json`;
}

/**
 * A transaction that changed the schema, in a log without its schema
 * record (deleted, or lost with a copy of the repository): the tables of
 * every moment after it are not known. Damage, not "nothing changed": a
 * reader taking an older record instead would rebuild the wrong tables.
 */
export function missingSchemaRecord(
  dir: string,
  tx: { readonly xid: number; readonly commitTime: string; readonly endLsn: bigint },
): DamagedError {
  const key = schemaRecordKey(dir, tx.endLsn);
  return new DamagedError(
    'changelog.schema-missing',
    `change-log object ${key} is missing: transaction ${tx.xid} (committed ${tx.commitTime}) changed the schema, and the tables after it are not known`,
    {
      hint: 'restore the object from a copy of the repository; moments before that transaction can still be rebuilt',
    },
  );
}

function damagedObject(key: string, err: unknown): unknown {
  if (
    !(err instanceof ChunkFormatError) &&
    !(err instanceof SegmentFormatError) &&
    !(err instanceof ObjectNotFoundError) &&
    !(err instanceof SyntaxError)
  )
    return err;
  return new DamagedError(
    'changelog.damaged',
    `change-log ${key.endsWith('.seg') ? 'segment' : 'object'} ${key} is ${err instanceof ObjectNotFoundError ? 'missing' : `damaged (${err.message})`}: ${key.endsWith('.seg') ? 'changes stored in it' : 'the schema it records'} cannot be read`,
    {
      hint: 'restore the object from a copy of the repository; moments after it cannot be rebuilt from this log',
      cause: err,
    },
  );
}

/** A committed transaction as readers see it. */
export interface Transaction {
  readonly xid: number;
  readonly commitLsn: bigint;
  readonly endLsn: bigint;
  readonly commitTime: string;
  /** The commit time as PostgreSQL's int64 (microseconds since 2000-01-01 UTC): comparing it makes no string. */
  readonly commitMicros: bigint;
  /** Its changes, decoded as they are iterated (see HeldChanges). */
  readonly changes: TransactionChanges;
  /** Schema events (src/capture/schema-events.ts) in this transaction; `at`: how many of its changes came before. */
  readonly schema?: readonly SchemaEventRef[] | undefined;
}

/** A schema event's place in its transaction, and its content (JSON). */
export interface SchemaEventRef {
  readonly at: number;
  readonly lsn: bigint;
  readonly event: string;
}

/** A transaction's changes in order: iterable (again), with their number. */
export interface TransactionChanges extends Iterable<Change> {
  readonly length: number;
  /**
   * Visits the changes in order, those held as stored messages without
   * decoding them: `stored` gets the message's place in its segment's
   * content and its relation (read it with layoutOf or storedChange), the
   * others go to `decoded`. A SegmentFormatError thrown by `stored` comes
   * out as the segment's DamagedError.
   */
  forEachStored(stored: StoredVisitor, decoded: (c: Change) => void): void;
}

/** Receives a change held as its stored message [start, end) of `content`. */
export type StoredVisitor = (
  content: Buffer,
  start: number,
  end: number,
  relation: StoredRelation,
) => void;

/** A change with its table resolved. */
export interface Change {
  readonly op: 'insert' | 'update' | 'delete' | 'truncate';
  /** The relation's OID on the source (the table's, unless a publication sends partitions as their root). */
  readonly relid?: number;
  readonly schema: string;
  readonly table: string;
  readonly columns: readonly ChangeColumn[];
  readonly key: readonly ChangeValue[] | null;
  readonly old: readonly ChangeValue[] | null;
  readonly row: readonly ChangeValue[] | null;
  /** For truncate: every table truncated together. */
  readonly tables?: ReadonlyArray<{ schema: string; table: string }> | undefined;
}

/** Where reading stops, and what it reports besides transactions. */
export interface ReadOptions {
  /** Only transactions whose commit LSN is at or after this. */
  readonly fromLsn?: bigint | undefined;
  /** Stop after the last transaction whose commit LSN is before this. */
  readonly untilLsn?: bigint | undefined;
  /** Stop before the first transaction committed after this time (ISO). */
  readonly untilTime?: string | undefined;
  readonly onHeartbeat?: ((lsn: bigint, at: string) => void) | undefined;
  /**
   * Called with a segment's `<committed>` once it is read to its end: the
   * log is complete up to there, which may be past its last commit or
   * heartbeat (a keepalive position stored with the segment, no message).
   */
  readonly onCompleteUpTo?: ((lsn: bigint) => void) | undefined;
  /**
   * Called when reading stops at the first transaction past `untilLsn` or
   * `untilTime`, with its commit LSN and time: proof that the log reaches
   * beyond the limit.
   */
  readonly onPastLimit?: ((commitLsn: bigint, commitTime: string, xid: number) => void) | undefined;
  /** How many changes of a transaction are decoded as read before the rest are held (HeldChanges; tests make it small). */
  readonly decodedChanges?: number | undefined;
  /** Bytes of segment contents a transaction's held changes keep in memory before going to a file (Held; tests make it small). */
  readonly heldBytes?: number | undefined;
}

/**
 * The committed transactions of a log, in commit order, one at a time.
 * Memory: the transactions that commit in one segment at a time, each with
 * its changes (those of a large one mostly held undecoded: HeldChanges;
 * past 64 MB of segments, in a temporary file). Cut-off transactions (a
 * Begin while one is open) and duplicates (a commit not after the last one
 * read: at-least-once delivery) are skipped. A transaction's changes can be
 * read until the next transaction is asked for: then a file holding them is
 * freed, and reading them throws.
 */
export async function* readTransactions(
  log: ChangeLog,
  options: ReadOptions = {},
): AsyncGenerator<Transaction> {
  const scanner = new Scanner(log.scope, options);
  const release = (tx: Transaction) => (tx.changes as HeldChanges).release();
  let ready: Transaction[] = [];
  let given = 0;
  try {
    for await (const { seg, content, verified } of log.contents(await scanner.segments(log))) {
      ready = [];
      given = 0;
      const more = scanner.scan(seg, content, verified, (tx) => {
        ready.push(tx.persist(options.decodedChanges));
        return undefined;
      });
      while (given < ready.length) {
        yield ready[given]!;
        // The next is asked for: a file holding this one's changes is freed.
        release(ready[given++]!);
      }
      if (!more) return;
    }
    // (Read to a missing segment: what follows it is lost.)
    if (scanner.gap !== undefined) throw scanner.gap;
  } finally {
    for (const tx of ready.slice(given)) release(tx);
    scanner.close();
  }
}

/**
 * readTransactions for a reader that uses each transaction at once: `visit`
 * gets each as it commits, and no object is made per transaction or per
 * change (a million transactions of pgbench read in half the time). The
 * transaction given is reused: it and its changes are valid only during
 * the call. `visit` returning false stops the reading.
 */
export async function scanTransactions(
  log: ChangeLog,
  options: Omit<ReadOptions, 'decodedChanges'>,
  visit: (tx: Transaction) => boolean | undefined,
  /** Read only these segments (windowSegments' list, or a part of it), with `part`'s bounds. */
  part?: { readonly segments: readonly SegmentInfo[] } & ScanBoundary,
): Promise<void> {
  const scanner = new Scanner(log.scope, options, part);
  try {
    const segments = part?.segments ?? (await scanner.segments(log));
    for await (const { seg, content, verified } of log.contents(segments)) {
      if (!scanner.scan(seg, content, verified, visit)) return;
    }
    // (Read to a missing segment: what follows it is lost.)
    if (scanner.gap !== undefined) throw scanner.gap;
  } finally {
    scanner.close();
  }
}

/**
 * scanTransactions over contents read by the caller (a thread given the
 * segments' bytes: state.ts reads a long window in two parts at once).
 */
export async function scanContents(
  scope: string,
  options: Omit<ReadOptions, 'decodedChanges'>,
  contents: AsyncIterable<{ seg: SegmentInfo; content: Buffer; verified: boolean }>,
  visit: (tx: Transaction) => boolean | undefined,
  boundary?: ScanBoundary,
): Promise<void> {
  const scanner = new Scanner(scope, options, boundary);
  try {
    for await (const { seg, content, verified } of contents) {
      if (!scanner.scan(seg, content, verified, visit)) return;
    }
  } finally {
    scanner.close();
  }
}

/**
 * The segments a window from `fromLsn` reads (those holding only earlier
 * transactions skipped), up to a segment missing among them, which is
 * `gap`: a reader that reaches the end of the list without reaching its
 * point must fail with it.
 */
export async function windowSegments(
  log: ChangeLog,
  fromLsn: bigint | undefined,
  /** The log's segments as the caller listed them just now (a long log takes many LIST calls). */
  listed?: readonly SegmentInfo[],
): Promise<{ segments: SegmentInfo[]; gap: DamagedError | undefined }> {
  const scanner = new Scanner(log.scope, { fromLsn });
  const segments = await scanner.segments(log, listed);
  return { segments, gap: scanner.gap };
}

/**
 * One part of a window read in parts (each part the transactions that
 * begin in its segments, so that the parts read together are the window).
 */
export interface ScanBoundary {
  /**
   * The end LSN of the last commit stored before the part's first segment
   * (SegmentInfo.committed): a commit at or below it was read by the part
   * before (delivered again after a restart), and is skipped.
   */
  readonly after?: bigint | undefined;
  /**
   * The first segment of the next part: from it on, only the transaction
   * still open is read, to its commit; reading stops there, or at the next
   * Begin (which drops the open one as cut off, as reading on would).
   */
  readonly finishFrom?: number | undefined;
}

/** Gets each transaction as it commits; false stops the reading. */
type Visit = (tx: OpenTransaction) => boolean | undefined;

/** Reading a log segment after segment: relations described, the open transaction, where reading is. */
class Scanner {
  private readonly relations = new Map<number, StoredRelation>();
  private readonly tx: OpenTransaction;
  private open = false;
  /** The end LSN of the last transaction read (a commit not after it is a duplicate). */
  private last = -1n;
  /** options.untilTime as microseconds (a million commit times are compared with it, not formatted). */
  private readonly untilMicros: bigint | undefined;
  /** Past the part's segments (ScanBoundary.finishFrom): only the open transaction is read. */
  private finishing = false;
  private readonly finishFrom: number | undefined;

  constructor(
    private readonly scope: string,
    private readonly options: ReadOptions,
    boundary?: ScanBoundary,
  ) {
    this.untilMicros =
      options.untilTime === undefined ? undefined : isoToPgTimestamp(options.untilTime);
    if (boundary?.after !== undefined) this.last = boundary.after;
    this.finishFrom = boundary?.finishFrom;
    this.tx = new OpenTransaction(options.heldBytes);
  }

  /** Done reading: a file holding the open transaction's changes is freed. */
  close(): void {
    this.tx.changes.clear();
  }

  /**
   * A segment missing among those to read (segments), met when reading
   * goes past the last one before it: lost changes, refused, not read past.
   */
  gap: DamagedError | undefined;

  /**
   * The segments to read: those holding only transactions before `fromLsn`
   * are skipped. A segment missing among them (its number not listed
   * between two that are) ends the list before it, and is `gap`: a reading
   * that stops before it (a moment before the lost changes) needs nothing
   * of it; one that reaches it must fail with `gap` (readTransactions and
   * scanTransactions do; a caller given the list does it itself).
   */
  async segments(log: ChangeLog, listed?: readonly SegmentInfo[]): Promise<SegmentInfo[]> {
    const all = listed ?? (await log.segments());
    // Relation records are repeated in every segment: none is missed.
    const read = all.slice(skippable(all, this.options.fromLsn));
    // Below the first segment kept, what is listed is an interrupted prune's leftovers.
    const first = (await log.info())?.firstSegment ?? 1;
    for (let i = 1; i < read.length; i++) {
      const after = read[i - 1]!.seq;
      if (read[i]!.seq !== after + 1 && read[i]!.seq > first) {
        const missing = Math.max(after + 1, first);
        this.gap = new DamagedError(
          'changelog.damaged',
          `change-log segment ${missing} of "${this.scope}" is missing (segments ${after} and ${read[i]!.seq} are stored): changes stored in it cannot be read`,
          {
            hint: 'restore the segment from a copy of the repository; moments after it cannot be rebuilt from this log, moments before it can (`flashback check` lists every gap)',
          },
        );
        return read.slice(0, i);
      }
    }
    return read;
  }

  /**
   * Reads one segment's content (`verified`: its checksum was checked
   * already); false when reading stops (past a limit, or `visit` said so).
   */
  scan(seg: SegmentInfo, content: Buffer, verified: boolean, visit: Visit): boolean {
    if (this.finishFrom !== undefined && seg.seq >= this.finishFrom) {
      // The next part's segments: only to finish the open transaction.
      if (!this.open) return false;
      this.finishing = true;
    }
    try {
      const body = frameBody(content, verified);
      if (body === undefined) {
        for (const r of storedRecords(content)) if (!this.record(r, visit)) return false;
        this.readToEnd(seg);
        return true;
      }
      // Format 2, frame by frame (no object per frame). Changes are held as
      // places in the content; Begin and Commit are read in place.
      let pos = FIRST_FRAME;
      while (pos < body) {
        const start = pos + 4;
        const end = frameEnd(content, pos, body);
        const len = end - start;
        pos = end;
        const kind = content[start];
        if ((kind === 0x49 || kind === 0x55 || kind === 0x44) && len >= 5) {
          // Insert, Update, Delete: the relation id follows the kind byte.
          if (this.open)
            this.tx.hold(seg, content, start, end, this.rel(content.readUInt32BE(start + 1)));
        } else if (kind === 0x42 && len === 21) {
          // Begin: final LSN, commit time, xid.
          if (
            !this.begin(
              content.readUInt32BE(start + 17),
              content.readBigUInt64BE(start + 1),
              content.readBigInt64BE(start + 9),
            )
          )
            return false;
        } else if (kind === 0x43 && len === 26) {
          // Commit: flags, commit LSN, end LSN, commit time.
          if (!this.commit(content.readBigUInt64BE(start + 10), visit)) return false;
        } else {
          const r = decodeStored(content, start, end);
          if (r !== undefined && !this.record(r, visit)) return false;
        }
      }
      this.readToEnd(seg);
      return true;
    } catch (err) {
      throw damaged(seg, err);
    }
  }

  /** A segment read to its end (not one of the next part's, read only to finish a transaction). */
  private readToEnd(seg: SegmentInfo): void {
    if (!this.finishing) this.options.onCompleteUpTo?.(seg.committed);
  }

  /** One decoded record; false when reading stops. */
  private record(r: StoredRecord, visit: Visit): boolean {
    switch (r[0]) {
      case 'R':
        this.relations.set(r[1], { id: r[1], schema: r[2], name: r[3], columns: r[5] });
        break;
      case 'H':
        this.options.onHeartbeat?.(r[1], r[2]);
        break;
      case 'S':
        if (this.open) this.tx.addSchema(r[1], r[2]);
        break;
      case 'B':
        return this.begin(r[1], r[2], isoToPgTimestamp(r[3]), r[3]);
      case 'C':
        return this.commit(r[2], visit);
      case 'I':
      case 'U':
      case 'D':
        if (this.open) this.tx.add(changeOf(r, this.rel(r[1])));
        break;
      case 'T': {
        if (!this.open) break;
        const tables = r[1]
          .map((id) => this.rel(id))
          .map((t) => ({ schema: t.schema, table: t.name }));
        for (const id of r[1]) {
          const t = this.rel(id);
          this.tx.add({
            op: 'truncate',
            relid: id,
            schema: t.schema,
            table: t.name,
            columns: t.columns,
            key: null,
            old: null,
            row: null,
            tables,
          });
        }
        break;
      }
    }
    return true;
  }

  /** A transaction begins (a cut-off one open is dropped); false when it is past the limit. */
  private begin(xid: number, commitLsn: bigint, micros: bigint, commitTime?: string): boolean {
    // The next part's first transaction (the open one, cut off, is dropped).
    if (this.finishing) return false;
    const o = this.options;
    if (
      (this.untilMicros !== undefined && micros > this.untilMicros) ||
      (o.untilLsn !== undefined && commitLsn >= o.untilLsn)
    ) {
      o.onPastLimit?.(commitLsn, commitTime ?? pgTimestampToIso(micros), xid);
      return false;
    }
    this.tx.begin(xid, commitLsn, micros, commitTime);
    this.open = true;
    return true;
  }

  /** The open transaction commits: visited unless a duplicate or before the start. */
  private commit(endLsn: bigint, visit: Visit): boolean {
    if (!this.open) return true;
    this.open = false;
    // Past the part's segments, this was the transaction to finish: the part ends.
    const more = !this.finishing;
    if (endLsn <= this.last) return more; // delivered again after a restart
    this.last = endLsn;
    if (this.options.fromLsn !== undefined && this.tx.commitLsn < this.options.fromLsn) return more;
    this.tx.endLsn = endLsn;
    return visit(this.tx) !== false && more;
  }

  private rel(id: number): StoredRelation {
    const r = this.relations.get(id);
    if (r === undefined) {
      throw new RepositoryError(
        'changelog.corrupt',
        `change log of "${this.scope}" refers to relation ${id} before describing it`,
      );
    }
    return r;
  }
}

/** The transaction being read (one object, reused): valid until the next is read. */
class OpenTransaction implements Transaction {
  xid = 0;
  commitLsn = 0n;
  endLsn = 0n;
  commitMicros = 0n;
  /** commitMicros as text, made when first asked for (most readers of a long log never do). */
  private time: string | undefined;
  schema: SchemaEventRef[] | undefined;
  readonly changes: Held;

  constructor(heldBytes?: number) {
    this.changes = new Held(heldBytes);
  }

  get commitTime(): string {
    this.time ??= pgTimestampToIso(this.commitMicros);
    return this.time;
  }

  begin(xid: number, commitLsn: bigint, micros: bigint, commitTime?: string): void {
    this.xid = xid;
    this.commitLsn = commitLsn;
    this.endLsn = 0n;
    this.commitMicros = micros;
    this.time = commitTime;
    this.schema = undefined;
    this.changes.clear();
  }

  hold(seg: SegmentInfo, content: Buffer, start: number, end: number, r: StoredRelation): void {
    this.changes.hold(seg, content, start, end, r);
  }

  add(change: Change): void {
    this.changes.add(change);
  }

  addSchema(lsn: bigint, event: string): void {
    this.schema ??= [];
    this.schema.push({ at: this.changes.length, lsn, event });
  }

  /** A copy that outlives the scan's reuse of this object (see HeldChanges; changes in a file last until `release`). */
  persist(decodedChanges?: number): Transaction {
    return {
      xid: this.xid,
      commitLsn: this.commitLsn,
      endLsn: this.endLsn,
      commitTime: this.commitTime,
      commitMicros: this.commitMicros,
      changes: this.changes.persist(decodedChanges),
      schema: this.schema,
    };
  }
}

/** A relation as the log describes it (its latest description wins). */
export interface StoredRelation {
  /** The relation's OID on the source (its Relation message's id). */
  readonly id?: number;
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly ChangeColumn[];
}

/** The change stored as the message [start, end) of `content` (a place forEachStored gave). */
export function storedChange(
  content: Buffer,
  start: number,
  end: number,
  relation: StoredRelation,
): Change {
  const r = decodeStored(content, start, end);
  if (r === undefined || (r[0] !== 'I' && r[0] !== 'U' && r[0] !== 'D')) {
    throw new SegmentFormatError(`no change message at ${start}`);
  }
  return changeOf(r, relation);
}

/** The Change of an insert, update or delete record, its table resolved. */
function changeOf(r: Extract<StoredRecord, { 0: 'I' | 'U' | 'D' }>, t: StoredRelation): Change {
  // Plain literals (no spread): this runs once per change of a long log.
  const { schema, name: table, columns } = t;
  if (r[0] === 'I')
    return { op: 'insert', relid: r[1], schema, table, columns, key: null, old: null, row: r[2] };
  if (r[0] === 'U')
    return { op: 'update', relid: r[1], schema, table, columns, key: r[2], old: r[3], row: r[4] };
  return { op: 'delete', relid: r[1], schema, table, columns, key: r[2], old: r[3], row: null };
}

/**
 * Changes of a transaction decoded while it is read; past this many, the
 * rest are held undecoded (HeldChanges).
 */
const DECODED_CHANGES = 10_000;

/**
 * A transaction's changes, until it commits and while it is used. All of
 * them are kept until the commit is read (a transaction cut off by a crash
 * is dropped then). The first DECODED_CHANGES are decoded as read, as
 * objects (most transactions are small: this keeps their reading as fast as
 * it was); the rest are held as places in their segments' content (three
 * numbers and the relation, about 30 bytes a change) and decoded each time
 * they are iterated. Held as objects (about 175 bytes each), the 2,000,000
 * changes of one DELETE took 350 MB. Changes given as objects (format 1,
 * truncates) stay objects.
 */
class HeldChanges implements TransactionChanges {
  private readonly decoded: Change[] = [];
  private held: Held | undefined;

  constructor(
    private readonly limit = DECODED_CHANGES,
    private readonly budget?: number,
  ) {}

  /** The changes of `held`, none decoded. */
  static of(held: Held): HeldChanges {
    const out = new HeldChanges(0);
    out.held = held;
    return out;
  }

  /** Done with: a file holding the changes is freed (reading them after throws). */
  release(): void {
    this.held?.closeFile();
  }

  get length(): number {
    return this.decoded.length + (this.held?.length ?? 0);
  }

  /** Whether the next change should be held undecoded. */
  get holding(): boolean {
    return this.held !== undefined || this.decoded.length >= this.limit;
  }

  add(change: Change): void {
    if (this.held === undefined) this.decoded.push(change);
    else this.held.add(change);
  }

  hold(seg: SegmentInfo, content: Buffer, start: number, end: number, r: StoredRelation): void {
    this.held ??= new Held(this.budget);
    this.held.hold(seg, content, start, end, r);
  }

  forEachStored(stored: StoredVisitor, decoded: (c: Change) => void): void {
    for (const c of this.decoded) decoded(c);
    this.held?.forEachStored(stored, decoded);
  }

  [Symbol.iterator](): Iterator<Change> {
    if (this.held === undefined) return this.decoded[Symbol.iterator]();
    const held = this.held;
    const decoded = this.decoded;
    return (function* () {
      yield* decoded;
      yield* held;
    })();
  }
}

/** Changes of one transaction beyond which Held gives its room back when emptied. */
const HELD_KEPT = 65_536;

/**
 * Bytes of segment contents one transaction's held changes may keep in
 * memory; past them, its changes go to a temporary file (HeldFile).
 * Capture cuts segments at 8 MB of messages: only a transaction spanning
 * several segments goes there.
 */
const HELD_BYTES = 64 * 1024 * 1024;

/**
 * Changes held as places in segment contents (and the odd object), in
 * order; past `budget` bytes of contents, all of them in a HeldFile.
 */
class Held implements TransactionChanges {
  // The reader reuses one Held for every transaction: arrays are written by
  // index and never shortened (setting an array's length to 0 gave its
  // memory back, to be grown again by the next transaction's pushes).
  private readonly contents: Array<Buffer | undefined> = [];
  private readonly segs: Array<SegmentInfo | undefined> = [];
  private nContents = 0;
  /** Per change: index in contents (-1: an object, the next number its index in objects), start, end. */
  private places = new Float64Array(3 * 64);
  /** Per change: its relation as described before it (undefined for an object). */
  private readonly relations: Array<StoredRelation | undefined> = [];
  private readonly objects: Array<Change | undefined> = [];
  private nObjects = 0;
  /** Bytes of the contents held. */
  private contentBytes = 0;
  /** Past the budget: every change of the transaction, in this file instead. */
  private file: HeldFile | undefined;
  length = 0;

  constructor(private readonly budget = HELD_BYTES) {}

  hold(seg: SegmentInfo, content: Buffer, start: number, end: number, r: StoredRelation): void {
    if (this.file !== undefined) {
      this.file.append(seg, content, start, end, r);
      this.length++;
      return;
    }
    let c = this.nContents - 1;
    if (c < 0 || this.contents[c] !== content) {
      c = this.nContents++;
      this.contents[c] = content;
      this.segs[c] = seg;
      this.contentBytes += content.length;
    }
    this.place(c, start, end, r);
    if (this.contentBytes > this.budget) this.spill();
  }

  add(change: Change): void {
    if (this.file !== undefined) {
      this.file.appendObject(change);
      this.length++;
      return;
    }
    this.objects[this.nObjects] = change;
    this.place(-1, this.nObjects++, 0, undefined);
  }

  /** The changes held so far go to a file, and the rest will: the contents are let go. */
  private spill(): void {
    const file = new HeldFile();
    try {
      for (let i = 0; i < this.length; i++) {
        const c = this.places[i * 3]!;
        const start = this.places[i * 3 + 1]!;
        if (c < 0) file.appendObject(this.objects[start]!);
        else
          file.append(
            this.segs[c]!,
            this.contents[c]!,
            start,
            this.places[i * 3 + 2]!,
            this.relations[i]!,
          );
      }
    } catch (err) {
      file.close(); // (a full disk: the reading fails, the file goes now)
      throw err;
    }
    const length = this.length;
    this.clear();
    this.file = file;
    this.length = length;
  }

  private place(c: number, start: number, end: number, r: StoredRelation | undefined): void {
    const i = this.length++;
    if (3 * i + 3 > this.places.length) {
      const bigger = new Float64Array(2 * this.places.length);
      bigger.set(this.places);
      this.places = bigger;
    }
    this.places[3 * i] = c;
    this.places[3 * i + 1] = start;
    this.places[3 * i + 2] = end;
    this.relations[i] = r;
  }

  /** Frees the file holding the changes, if any: reading them after throws. */
  closeFile(): void {
    this.file?.close();
  }

  /** Empty again (segment contents, objects and any file let go; the rest kept for the next transaction). */
  clear(): void {
    this.file?.close();
    this.file = undefined;
    this.contentBytes = 0;
    for (let c = 0; c < this.nContents; c++) {
      this.contents[c] = undefined;
      this.segs[c] = undefined;
    }
    for (let o = 0; o < this.nObjects; o++) this.objects[o] = undefined;
    this.nContents = 0;
    this.nObjects = 0;
    // The room a very large transaction took is given back, not kept for the rest of the read.
    if (this.length > HELD_KEPT) {
      this.places = new Float64Array(3 * 64);
      this.relations.length = 0;
    }
    this.length = 0;
  }

  /**
   * The same changes, as a HeldChanges of their own: the first
   * `decodedChanges` decoded now. Changes in a file move with it (none
   * decoded): the HeldChanges must be released (`release`) when done with.
   */
  persist(decodedChanges?: number): HeldChanges {
    if (this.file !== undefined) {
      const moved = new Held(this.budget);
      moved.file = this.file;
      moved.length = this.length;
      this.file = undefined;
      this.clear();
      return HeldChanges.of(moved);
    }
    const out = new HeldChanges(decodedChanges, this.budget);
    for (let i = 0; i < this.length; i++) {
      const c = this.places[i * 3]!;
      const start = this.places[i * 3 + 1]!;
      if (c < 0) {
        out.add(this.objects[start]!);
        continue;
      }
      const content = this.contents[c]!;
      const end = this.places[i * 3 + 2]!;
      const r = this.relations[i]!;
      if (out.holding) {
        out.hold(this.segs[c]!, content, start, end, r);
        continue;
      }
      try {
        out.add(storedChange(content, start, end, r));
      } catch (err) {
        throw damaged(this.segs[c]!, err);
      }
    }
    return out;
  }

  forEachStored(stored: StoredVisitor, decoded: (c: Change) => void): void {
    const file = this.file;
    if (file !== undefined) {
      for (const r of file.records()) {
        if (r.relation === OBJECT) {
          decoded(file.objects[r.segment]!);
          continue;
        }
        try {
          stored(r.content, r.start, r.end, file.relations[r.relation]!);
        } catch (err) {
          throw damaged(file.segments[r.segment]!, err);
        }
      }
      return;
    }
    for (let i = 0; i < this.length; i++) {
      const c = this.places[i * 3]!;
      const start = this.places[i * 3 + 1]!;
      if (c < 0) {
        decoded(this.objects[start]!);
        continue;
      }
      try {
        stored(this.contents[c]!, start, this.places[i * 3 + 2]!, this.relations[i]!);
      } catch (err) {
        throw damaged(this.segs[c]!, err);
      }
    }
  }

  *[Symbol.iterator](): Iterator<Change> {
    const file = this.file;
    if (file !== undefined) {
      for (const r of file.records()) {
        if (r.relation === OBJECT) {
          yield file.objects[r.segment]!;
          continue;
        }
        let change: Change;
        try {
          change = storedChange(r.content, r.start, r.end, file.relations[r.relation]!);
        } catch (err) {
          throw damaged(file.segments[r.segment]!, err);
        }
        yield change;
      }
      return;
    }
    for (let i = 0; i < this.length; i++) {
      const c = this.places[i * 3]!;
      const start = this.places[i * 3 + 1]!;
      if (c < 0) {
        yield this.objects[start]!;
        continue;
      }
      let change: Change;
      try {
        change = storedChange(
          this.contents[c]!,
          start,
          this.places[i * 3 + 2]!,
          this.relations[i]!,
        );
      } catch (err) {
        throw damaged(this.segs[c]!, err);
      }
      yield change;
    }
  }
}

/**
 * How many leading segments hold only transactions committed before
 * `fromLsn`. Not simply those whose `committed` is below it: a segment can
 * end inside a transaction that commits later (a large one, or one cut by a
 * flush), whose Begin must not be skipped. With c the largest `committed`
 * below `fromLsn`, the segments before the first one whose `committed` is c
 * are safe: a transaction open at the end of one of them commits, in commit
 * order, no later than the commits of that first segment, so at or before c.
 */
export function skippable(segments: readonly SegmentInfo[], fromLsn: bigint | undefined): number {
  if (fromLsn === undefined) return 0;
  let c = -1n;
  for (const s of segments) if (s.committed < fromLsn && s.committed > c) c = s.committed;
  if (c < 0n) return 0;
  const first = segments.findIndex((s) => s.committed === c);
  return Math.max(first, 0);
}

/**
 * The source time of the newest heartbeat or commit in the log: the newest
 * segment that has either decides (a segment can hold only the middle of a
 * large transaction; then the one before it is read, and so on).
 */
export async function newestStoredTime(
  log: ChangeLog,
  segments: readonly SegmentInfo[],
): Promise<string | undefined> {
  for (let i = segments.length - 1; i >= 0; i--) {
    let newest: string | undefined;
    for (const r of await log.readSegment(segments[i]!)) {
      const at = r[0] === 'H' ? r[2] : r[0] === 'C' ? r[3] : undefined;
      if (at !== undefined && (newest === undefined || Date.parse(at) > Date.parse(newest))) {
        newest = at;
      }
    }
    if (newest !== undefined) return newest;
  }
  return undefined;
}

/**
 * The commit LSN of a transaction, found by reading only the log's Begin
 * records (a change is never decoded): the fast way to place a
 * transaction id before reading a window.
 *
 * Searched from the newest segment back: the transaction to undo or restore
 * before is nearly always recent, and a week of log is hundreds of
 * thousands of segments, each decompressed to be searched. So a recent one
 * is found without reading (or being stopped by damage in) old segments,
 * and an id the log holds twice (xids wrap around after 2^32) names the
 * newer transaction. Only an id not in the log reads every segment.
 */
export async function findCommitLsn(log: ChangeLog, xid: number): Promise<bigint | undefined> {
  // Below the first segment kept, what is listed is an interrupted prune's leftovers.
  const first = (await log.info())?.firstSegment ?? 1;
  const segments = await log.segments();
  for (let i = segments.length - 1; i >= 0 && segments[i]!.seq >= first; i--) {
    const lsn = await log.decode(segments[i]!, (content) => findBegin(content, xid));
    if (lsn !== undefined) return lsn;
  }
  return undefined;
}
