/**
 * `backup --from-log`: a new snapshot from the previous one plus the change
 * log, without reading the source's tables.
 *
 * Each table's rows are the previous snapshot's, with the log's net effect
 * (src/history/state.ts) merged in key order, then cut by the same chunker
 * with the same parameters as a direct backup. Unchanged key ranges give the
 * same chunks (stored once); so a snapshot from the log at LSN X has the same
 * chunks, byte for byte, as a direct backup whose consistent point is X.
 *
 * Key order must be PostgreSQL's `ORDER BY key`. It is reproduced for keys of
 * integer types, uuid, boolean, and text types under the "C"/"POSIX"
 * collation (bytewise); a changed table with another key type is refused,
 * by name, before anything is written. Tables without a key keep the
 * snapshot's row order, with removed rows taken out and added rows appended
 * (same rows as the source; a direct backup's physical order can differ).
 *
 * Sequences: their changes are not in the log. Each sequence that owns a
 * column (serial, identity) is advanced to at least the largest value in
 * its column, so a restore can insert; its exact value is the base
 * snapshot's or that, whichever is larger.
 */
import { InterruptedError, UsageError } from '../errors.js';
import { LineBuffer } from '../history/keyed-rows.js';
import { fillAbsent, type Reshape, reshapeBlock } from '../history/schema-changes.js';
import {
  closeOverlay,
  describePoint,
  emptyTableOverlay,
  lineOf,
  type Overlay,
  type PointInTime,
  planPointInTime,
  rebuildPlan,
  resolveAgainst,
  spoolSource,
  type TableOverlay,
} from '../history/state.js';
import { decodeField, endOfFields, splitFields } from '../pg/copy-text.js';
import {
  type ColumnOrder,
  columnOrder,
  compareSortKeys,
  integerColumn,
  sortKey,
} from '../pg/key-order.js';
import type { ColumnModel, SchemaModel } from '../pg/schema/model.js';
import {
  ChangeLog,
  type ChangeValue,
  lsnText,
  lsnValue,
  scanTransactions,
  windowSegments,
} from '../repo/changelog.js';
import { snapshotsOfLog, targetLogs } from '../repo/changelogs.js';
import { ChunkStore } from '../repo/chunks.js';
import { createEncoder } from '../repo/compress-pool.js';
import { chunkReuseRule } from '../repo/damage.js';
import { RepositoryLock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';
import {
  type ChunkRef,
  newSnapshotId,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { integerField } from '../restore/pick.js';
import { Chunker, MAX_CHUNK_BYTES, type RawChunk } from './chunker.js';

/** What to build. */
export interface FromLogOptions {
  readonly repo: Repository;
  readonly target: string;
  /** Up to where; default: everything the log has stored. */
  readonly point?: PointInTime | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** The committed snapshot and what it was made of. */
export interface FromLogResult {
  readonly manifest: SnapshotManifest<SchemaModel>;
  readonly base: string;
  readonly transactions: number;
  readonly changes: number;
  readonly seconds: number;
}

/** A snapshot from the log that was not made: the newest snapshot, and why. */
export interface NothingNew {
  readonly newest: string;
  readonly reason: string;
}

/** Run-record details that mark a backup run as `--from-log` (status tells scheduled jobs apart by it). */
export const FROM_LOG = { mode: 'from-log' } as const;

/**
 * The unlogged tables of a snapshot made from the log: never published, so
 * not in the change log, and their rows are the base snapshot's (none for a
 * table created since), not the moment's. Empty for a direct snapshot.
 */
export function staleUnlogged(m: SnapshotManifest<SchemaModel>): string[] {
  if (m.fromLog === undefined) return [];
  return m.schema.tables.filter((t) => t.unlogged).map((t) => `${t.schema}.${t.name}`);
}

/** What to tell of staleUnlogged's tables, wherever the snapshot is written, shown or restored. */
export function staleUnloggedText(tables: readonly string[], base: string): string {
  return `unlogged table(s) ${tables.join(', ')} are not in the change log: in this snapshot from the log their rows are those of snapshot ${base} (none for a table created since), not the moment's; a direct backup reads them`;
}

/**
 * Why a snapshot from the log up to its end would add nothing, or undefined
 * when it would. Nothing new: the target's newest snapshot already reaches
 * the end of the stored log (an idle log: it would be a copy; or a direct
 * backup taken after it: a log that ends before it means capture is behind,
 * and a snapshot from it would hold older data than the newest one while
 * looking newer).
 */
export async function nothingNewInLog(
  repo: Repository,
  target: string,
): Promise<NothingNew | undefined> {
  // The newest log (a target has several after `capture --new-log`), and the
  // newest snapshot taken under it.
  const logs = await targetLogs(repo.storage, runScope(target));
  const all = await SnapshotStore.of(repo).all(target);
  const newest = snapshotsOfLog(logs, logs.length - 1, all).at(-1);
  if (newest === undefined) return undefined;
  const log = logs.at(-1)?.log ?? new ChangeLog(repo.storage, runScope(target));
  const segs = await log.segments();
  if ((segs.at(-1)?.committed ?? 0n) === 0n) {
    // Capture has started (the log exists) and stored nothing yet: nothing
    // to add to a snapshot the log joins. Without a log, or with a snapshot
    // before it, backupFromLog refuses and says why.
    const info = await log.info();
    if (info === undefined || lsnValue(newest.lsn) < lsnValue(info.startLsn)) return undefined;
    return {
      newest: newest.id,
      reason: `the change log of "${target}" has stored no transaction yet (it starts at ${info.startLsn}, before snapshot ${newest.id})`,
    };
  }
  const end = lsnText(segs.at(-1)!.committed);
  if (lsnValue(newest.lsn) >= lsnValue(end)) {
    return {
      newest: newest.id,
      reason: `snapshot ${newest.id} (LSN ${newest.lsn}) already holds everything the change log of "${target}" has stored (up to ${end})`,
    };
  }
  // The log's end moves on with heartbeats while the source is idle: new only
  // if a transaction committed since the snapshot (the first one ends the
  // reading). What an earlier run after the same snapshot found idle is not
  // read again (IdleRecord).
  const logStart = (await log.info())?.startLsn ?? '';
  const idle = await log.idleRecord();
  let from = lsnValue(newest.lsn);
  if (idle?.snapshot === newest.id && idle.logStart === logStart && lsnValue(idle.upTo) > from) {
    from = lsnValue(idle.upTo);
  }
  let found = false;
  // (The segments listed above: a log idle for a week is about 120,000 of them.)
  const { segments, gap } = await windowSegments(log, from, segs);
  await scanTransactions(
    log,
    { fromLsn: from },
    () => {
      found = true;
      return false;
    },
    { segments },
  );
  if (found) return undefined;
  // (Nothing before a missing segment: what it held is not known.)
  if (gap !== undefined) throw gap;
  // (Not recorded, on a repository that cannot be written: the next run reads it all again.)
  await log.writeIdleRecord({ snapshot: newest.id, logStart, upTo: end }).catch(() => {});
  return {
    newest: newest.id,
    reason: `no transaction of "${target}" committed after snapshot ${newest.id} (LSN ${newest.lsn}): the change log holds only heartbeats since (stored up to ${end})`,
  };
}

/**
 * Builds and commits a snapshot from the log; or, when no transaction of
 * the log lies between the snapshot it starts from and the point (an
 * `--lsn` at or just after a snapshot's), commits nothing and says why: the
 * snapshot would be a copy of that one under a newer name.
 */
export async function backupFromLog(options: FromLogOptions): Promise<FromLogResult | NothingNew> {
  const started = new Date();
  const { repo, target } = options;
  const lock = await RepositoryLock.acquire(repo.storage, {
    exclusive: false,
    command: `backup ${target} --from-log`,
    run: { kind: 'backup', target, fromLog: true },
  });
  const encoder = createEncoder();
  let opened: Overlay | undefined;
  try {
    const point = options.point ?? (await logEnd(repo, target));
    const plan = await planPointInTime(repo, target, point);
    // After schema changes in the window: the point's schema, the snapshot's rows laid out in it.
    const { manifest: base, overlay } = await rebuildPlan(plan);
    opened = overlay;
    if (overlay.transactions === 0) {
      return {
        newest: plan.manifest.id,
        reason: `no transaction of "${target}" committed between snapshot ${plan.manifest.id} (LSN ${plan.manifest.lsn}) and ${describePoint(point)}: a snapshot from the log would be a copy of it`,
      };
    }
    const changed = (t: TableSnapshot): boolean =>
      overlay.tables.has(`${t.schema}.${t.name}`) || overlay.reshape.has(`${t.schema}.${t.name}`);
    // Refuse before writing anything: every changed keyed table must have a key order we reproduce.
    for (const t of base.tables) {
      if (changed(t) && t.key.length > 0) keyOrderFor(base.schema, t);
    }
    const chunks = new ChunkStore(repo.storage, encoder);
    chunks.distrust = await chunkReuseRule(repo.storage, base.tables);
    const tables: TableSnapshot[] = [];
    let newChunks = 0;
    let newBytes = 0;
    for (const t of base.tables) {
      if (options.signal?.aborted === true)
        throw new InterruptedError('backup interrupted: no snapshot was committed');
      if (!changed(t)) {
        tables.push(t); // unchanged: the same chunks
        continue;
      }
      // (No overlay: the window changed the table's columns, not its rows.)
      const ov = overlay.tables.get(`${t.schema}.${t.name}`) ?? emptyTableOverlay();
      const rs = overlay.reshape.get(`${t.schema}.${t.name}`);
      const chunker = new Chunker({
        keyColumns: t.key.length,
        boundaryBits: t.boundaryBits,
        maxBytes: MAX_CHUNK_BYTES,
      });
      const refs: ChunkRef[] = [];
      const store = async (c: RawChunk): Promise<void> => {
        const r = await chunks.put(c.content);
        if (r.isNew) {
          newChunks++;
          newBytes += r.storedSize;
        }
        refs.push({
          id: r.id,
          rows: c.rows,
          size: c.content.length,
          stored: r.storedSize,
          first: c.first,
          last: c.last,
        });
      };
      for await (const lines of mergedLines(chunks, base, t, ov, rs)) {
        for (const c of chunker.push(lines)) await store(c);
      }
      for (const c of chunker.end()) await store(c);
      tables.push({
        ...t,
        rows: refs.reduce((a, r) => a + r.rows, 0),
        bytes: refs.reduce((a, r) => a + r.size, 0),
        storedBytes: refs.reduce((a, r) => a + r.stored, 0),
        chunks: refs,
      });
    }
    const manifest: SnapshotManifest<SchemaModel> = {
      ...base,
      id: newSnapshotId(started),
      lsn: overlay.last === undefined ? base.lsn : throughLsn(point, overlay),
      consistentAt: overlay.last?.commitTime ?? base.consistentAt,
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      schema: advanceSequences(base.schema, base.tables, tables),
      tables,
      totals: {
        tables: tables.length,
        rows: tables.reduce((a, t) => a + t.rows, 0),
        bytes: tables.reduce((a, t) => a + t.bytes, 0),
        storedBytes: tables.reduce((a, t) => a + t.storedBytes, 0),
        newChunks,
        newBytes,
      },
      fromLog: {
        base: base.id,
        transactions: overlay.transactions,
        changes: overlay.changes,
      },
    };
    await new SnapshotStore(repo.storage).commit(manifest);
    return {
      manifest,
      base: base.id,
      transactions: overlay.transactions,
      changes: overlay.changes,
      seconds: (Date.now() - started.getTime()) / 1000,
    };
  } finally {
    // (serve makes these on a schedule: a spool file per run must not pile up.)
    if (opened !== undefined) closeOverlay(opened);
    await encoder.close();
    await lock.release();
  }
}

/** The log's end: where the stored log is complete up to (the newest segment's `<committed>`). */
async function logEnd(repo: Repository, target: string): Promise<PointInTime> {
  const log = (await targetLogs(repo.storage, runScope(target))).at(-1)?.log;
  const segs = log === undefined ? [] : await log.segments();
  const last = segs[segs.length - 1];
  if (last === undefined || last.committed === 0n) {
    throw new UsageError(`the change log of "${target}" has no stored transaction yet`, {
      hint: `run \`flashback capture ${target}\`, or take a direct backup`,
    });
  }
  return { kind: 'lsn', lsn: lsnText(last.committed) };
}

/** The snapshot's LSN: the point for --lsn; else just past the last transaction applied. */
function throughLsn(point: PointInTime, overlay: Overlay): string {
  if (point.kind === 'lsn') return point.lsn;
  // Transactions committed at or after the commit LSN + 1 are not in it.
  const [hi, lo] = overlay.last!.commitLsn.split('/').map((x) => BigInt(`0x${x}`)) as [
    bigint,
    bigint,
  ];
  return lsnText(((hi << 32n) | lo) + 1n);
}

/**
 * The order of the table's key, one ColumnOrder per key column, reproducing
 * PostgreSQL's ORDER BY (src/pg/key-order.ts), or a UsageError naming the
 * column it cannot order.
 */
export function keyOrderFor(schema: SchemaModel, t: TableSnapshot): ColumnOrder[] {
  const model = schema.tables.find((m) => m.schema === t.schema && m.name === t.name);
  return t.key.map((k) => {
    const col = model?.columns.find((c) => c.name === k);
    const order = columnOrder(col);
    if (order !== undefined) return order;
    const type = col?.type ?? '?';
    throw new UsageError(
      `backup --from-log cannot order ${t.schema}.${t.name} by its key column ${k} (${type}${col?.collation === undefined ? '' : ` COLLATE ${col.collation}`}) exactly as PostgreSQL does`,
      {
        hint: 'keys of integer types, uuid, boolean and text with COLLATE "C" are supported; take a direct backup instead',
      },
    );
  });
}

/**
 * The table's rows with the overlay applied, in key order, as COPY text
 * blocks. Snapshot rows stream chunk by chunk; changed and new keys are
 * merged in from a sorted list (the overlay, which is in memory anyway).
 */
async function* mergedLines(
  chunks: ChunkStore,
  base: SnapshotManifest<SchemaModel>,
  t: TableSnapshot,
  ov: TableOverlay,
  /** The table's columns changed in the window: its snapshot rows in the point's layout. */
  rs: Reshape | undefined,
): AsyncGenerator<Buffer> {
  const k = t.key.length;
  const read = async (id: string): Promise<Buffer> => {
    const content = await chunks.get(id);
    return rs === undefined ? content : reshapeBlock(content, rs);
  };
  const toLine = (v: ChangeValue[]): string => lineOf(fillAbsent(v, rs));
  if (k === 0) {
    const removed = new Map(ov.removed);
    if (!ov.truncated) {
      for (const ref of t.chunks) {
        const content = await read(ref.id);
        const kept: string[] = [];
        for (const line of content.toString('utf8').split('\n')) {
          if (line === '') continue;
          const n = removed.get(line);
          if (n !== undefined) {
            if (n <= 1) removed.delete(line);
            else removed.set(line, n - 1);
            continue;
          }
          kept.push(line);
        }
        if (kept.length > 0) yield Buffer.from(`${kept.join('\n')}\n`, 'utf8');
      }
    }
    for await (const block of spoolSource(ov.added, rs).blocks(t)) yield block.content;
    return;
  }
  if (k === 1 && ov.byKey.integerKeysOnly && integerColumn(keyColumn(base.schema, t))) {
    yield* mergedByNumber(read, t, ov, rs);
    return;
  }
  const orders = keyOrderFor(base.schema, t);
  // Overlay entries with their keys' sort values, sorted.
  const entries = [...ov.byKey].map(([key, values]) => ({
    key,
    sorted: sortKey(orders, splitFields(Buffer.from(key, 'utf8')).map(decodeField)),
    values,
  }));
  entries.sort((a, b) => compareSortKeys(a.sorted, b.sorted));
  let e = 0;
  /** The overlay's rows (changed or new) as one block of lines. */
  const linesOf = (vs: string[]): Buffer => Buffer.from(`${vs.join('\n')}\n`, 'utf8');
  if (!ov.truncated) {
    for (const ref of t.chunks) {
      const content = await read(ref.id);
      // Unchanged rows are passed on as runs of the chunk's bytes (chunk
      // content ends with a newline); only the overlay's rows are made anew.
      const parts: Buffer[] = [];
      let run = 0;
      let pos = 0;
      while (pos < content.length && e < entries.length) {
        let nl = content.indexOf(0x0a, pos);
        if (nl < 0) nl = content.length;
        const keyEnd = endOfFields(content, pos, nl, k);
        const sorted = sortKey(orders, splitFields(content.subarray(pos, keyEnd)).map(decodeField));
        // Overlay keys before this row: new rows (or deletions of keys not in the snapshot).
        const before: string[] = [];
        while (e < entries.length && compareSortKeys(entries[e]!.sorted, sorted) < 0) {
          const v = entries[e++]!.values;
          if (v !== null) before.push(toLine(v));
        }
        const same =
          e < entries.length && entries[e]!.key === content.toString('utf8', pos, keyEnd);
        if (before.length > 0 || same) {
          parts.push(content.subarray(run, pos));
          if (before.length > 0) parts.push(linesOf(before));
          run = pos;
        }
        if (same) {
          const v = entries[e++]!.values;
          if (v !== null)
            parts.push(linesOf([lineOf(resolveAgainst(v, content.subarray(pos, nl)))]));
          run = nl + 1;
        }
        pos = nl + 1;
      }
      parts.push(content.subarray(run));
      const block = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      if (block.length > 0) yield block;
    }
  }
  const rest: string[] = [];
  while (e < entries.length) {
    const v = entries[e++]!.values;
    if (v !== null) rest.push(toLine(v));
  }
  if (rest.length > 0) yield linesOf(rest);
}

/** The model of a table's first key column. */
function keyColumn(schema: SchemaModel, t: TableSnapshot): ColumnModel | undefined {
  const model = schema.tables.find((m) => m.schema === t.schema && m.name === t.name);
  return model?.columns.find((c) => c.name === t.key[0]);
}

/**
 * mergedLines for the common case: one integer key column, every changed
 * key an integer of at most 15 digits (KeyedRows holds them as numbers).
 * Keys are compared as numbers read from each line's bytes, and changed
 * rows are written from their stored bytes: no string or array per row.
 */
async function* mergedByNumber(
  read: (id: string) => Promise<Buffer>,
  t: TableSnapshot,
  ov: TableOverlay,
  rs: Reshape | undefined,
): AsyncGenerator<Buffer> {
  const rows = ov.byKey;
  const keys = Float64Array.from(rows.heldKeys() as Iterable<number>).sort();
  let e = 0;
  /** Appends the key's version (nothing if deleted); `line`: the snapshot's row it replaces. */
  const put = (out: LineBuffer, key: number, line?: Buffer) => {
    if (rows.deleted(key) || (rs === undefined && rows.writeLine(key, out))) return;
    const v = rows.get(key)!;
    out.appendString(
      `${lineOf(line === undefined ? fillAbsent(v, rs) : resolveAgainst(v, line))}\n`,
    );
  };
  if (!ov.truncated) {
    for (const ref of t.chunks) {
      const content = await read(ref.id);
      let out: LineBuffer | undefined;
      let run = 0; // start of the chunk's bytes not yet copied
      let pos = 0;
      while (pos < content.length && e < keys.length) {
        let nl = content.indexOf(0x0a, pos);
        if (nl < 0) nl = content.length;
        // A key past 15 digits is beyond every changed key, on the side of its sign.
        const n = integerField(content, pos, nl) ?? (content[pos] === 0x2d ? -Infinity : Infinity);
        if (keys[e]! <= n) {
          out ??= new LineBuffer(content.length + 4096);
          out.append(content, run, pos);
          // Changed keys before this row: new rows (or deletions of keys the snapshot lacks).
          while (e < keys.length && keys[e]! < n) put(out, keys[e++]!);
          run = pos;
          if (e < keys.length && keys[e] === n) {
            put(out, keys[e++]!, content.subarray(pos, nl));
            run = nl + 1;
          }
        }
        pos = nl + 1;
      }
      if (out === undefined) {
        if (content.length > 0) yield content;
        continue;
      }
      out.append(content, run, content.length);
      if (out.at > 0) yield out.content();
    }
  }
  // Keys after the snapshot's last row, in blocks of about a megabyte.
  let out = new LineBuffer(1024 * 1024);
  while (e < keys.length) {
    put(out, keys[e++]!);
    if (out.at < 1024 * 1024) continue;
    yield out.content();
    out = new LineBuffer(1024 * 1024);
  }
  if (out.at > 0) yield out.content();
}

/**
 * Sequences owning a column advanced to at least the column's largest value
 * in the new snapshot (taken from the chunks' last keys when the column is
 * the key, which is the common case for serial and identity keys).
 */
function advanceSequences(
  schema: SchemaModel,
  before: readonly TableSnapshot[],
  after: readonly TableSnapshot[],
): SchemaModel {
  const changed = new Set(
    after.filter((t, i) => t !== before[i]).map((t) => `${t.schema}.${t.name}`),
  );
  const sequences = schema.sequences.map((s) => {
    const owner = s.identityOf ?? s.ownedBy;
    if (owner === undefined || !changed.has(`${owner.schema}.${owner.table}`)) return s;
    const t = after.find((x) => x.schema === owner.schema && x.name === owner.table);
    if (t === undefined || t.key.length !== 1 || t.key[0] !== owner.column) return s;
    const last = t.chunks[t.chunks.length - 1]?.last?.[0];
    if (last === undefined || last === null || !/^-?\d+$/.test(last)) return s;
    if (s.isCalled && BigInt(last) <= BigInt(s.lastValue)) return s;
    return { ...s, lastValue: last, isCalled: true };
  });
  return { ...schema, sequences };
}
