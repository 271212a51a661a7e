/**
 * Impact reports: which values of a column (tenants, users) had rows
 * inserted, updated, deleted or truncated in a window of the change log,
 * counted per table. It answers "who was affected" after a bad query or
 * migration, and, with a snapshot as the window's start, "what did a restore
 * of that snapshot wipe out".
 *
 * Two reads of the repository, both bounded:
 * 1. The window's transactions, once, one at a time. Inserts and updates
 *    carry the column's new value; an update's old value and a deleted row's
 *    value are in the log only under REPLICA IDENTITY FULL (or when the
 *    column is part of the key). What the log does not carry is not guessed:
 *    the row's key is set aside, per table.
 * 2. Only if keys were set aside (or a table was truncated): the rows' state
 *    just before each such change, from history: the newest snapshot before
 *    the window (reading only the chunks that can hold those keys) and the
 *    log from that snapshot's LSN, following only those keys. A truncate
 *    affects every row the table had at that moment: counted per value from
 *    the same snapshot (every chunk of the table) and log.
 *
 * Memory: counters per value and table; the keys of rows updated in the
 * window (an updated row counts once however often it changed) and of rows
 * whose values must be looked up; for a truncated table, the keys the log
 * changed before the truncate. Never the rows themselves, never the log.
 *
 * Plain data in (a repository, names, times), plain data out (the report);
 * the CLI (src/cli/commands/impact.ts) only formats. docs/CAPTURE.md ("Impact
 * reports") describes the behaviour for users.
 */
import { DamagedError, UsageError } from '../errors.js';
import { normaliseTime, type SchemaView, schemaViews, selectLog } from '../history/history.js';
import { decodeField, encodeField, endOfFields, fieldAt } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { resolveTableName } from '../pg/schema/names.js';
import { partitionsEver } from '../pg/schema/partitions.js';
import {
  type Change,
  type ChangeColumn,
  type ChangeLog,
  type ChangeValue,
  lsnText,
  lsnValue,
  readTransactions,
  type StoredRelation,
  storedChange,
  type Transaction,
} from '../repo/changelog.js';
import { emptyLayout, layoutOf as storedLayout, tupleInteger } from '../repo/changelog-format.js';
import { gapBetween, logOfSnapshot, snapshotsOfLog, type TargetLog } from '../repo/changelogs.js';
import { ChunkError, ChunkStore } from '../repo/chunks.js';
import { whileShared } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import {
  inSnapshots,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { keysByChunk } from '../restore/key-chunks.js';
import {
  canonicalIntegerField,
  createPicker,
  integerKey,
  type KeyCollection,
  pickJobs,
} from '../restore/pick.js';

/** Where the window opens. */
export type ImpactSince =
  /** Transactions committed after this time (ISO 8601 UTC, six fractional digits). */
  | { readonly kind: 'time'; readonly at: string }
  /**
   * Transactions committed at or after a snapshot's consistent point (its
   * LSN): what a restore of that snapshot would undo. `ref` is an id, a
   * unique prefix, or `latest`.
   */
  | { readonly kind: 'snapshot'; readonly ref: string };

/** What `impactReport` needs. */
export interface ImpactOptions {
  readonly repo: Repository;
  /** Target name; by default the only target with a change log. */
  readonly target?: string | undefined;
  /** The column to group by: unquoted folds to lower case, "Quoted" keeps its case. */
  readonly column: string;
  /** Only these tables (`name` or `schema.name`); by default every table with the column. */
  readonly tables?: readonly string[] | undefined;
  readonly since: ImpactSince;
  /** The window's end, inclusive (ISO 8601 UTC, six fractional digits). */
  readonly until: string;
  /**
   * `until` is now because none was asked for: the report then ends where
   * the change log does when that is less than a minute short of now (what
   * capture's flush and heartbeat intervals leave), without a note.
   */
  readonly untilIsNow?: boolean | undefined;
}

/** How far short of now a log may end before `impact` says capture may not be running. */
const LOG_SLACK_MS = 60_000;

/** One value of the column in one table: the distinct rows changed. */
export interface ImpactRow {
  /** The column's value in PostgreSQL's text form; null for SQL NULL. */
  readonly value: string | null;
  /** `schema.name`. */
  readonly table: string;
  readonly inserted: number;
  /** Rows updated (each once, however often); a row whose value changed counts under both values. */
  readonly updated: number;
  readonly deleted: number;
  /** Rows removed by TRUNCATE: every row the table had at that moment. */
  readonly truncated: number;
  /** Commit time of the first and last change counted here (UTC, microseconds). */
  readonly first: string;
  readonly last: string;
}

/** A truncate in the window, with the rows it removed. */
export interface ImpactTruncate {
  readonly table: string;
  readonly time: string;
  readonly xid: number;
  readonly rows: number;
}

/** Changes whose value of the column could not be found, so they are counted nowhere else. */
export interface ImpactUnresolved {
  readonly table: string;
  /** Updates whose value before is unknown (counted under the new value only). */
  readonly updated: number;
  readonly deleted: number;
  readonly truncated: number;
}

/** The report. */
export interface ImpactReport {
  readonly target: string;
  readonly column: string;
  /** The window's start: the time given, or the snapshot's consistent time. */
  readonly since: string;
  /** Set when the window starts at a snapshot: its id and consistent point. */
  readonly sinceSnapshot: { readonly id: string; readonly lsn: string } | null;
  /** The window's end: as asked, or without --until the end of the change log when that is under a minute before now. */
  readonly until: string;
  /** Transactions committed in the window (every table). */
  readonly transactions: number;
  /** Row changes counted (tables with the column, and named with --table if given). */
  readonly changes: number;
  /** Sorted by value (integers numerically), then table. */
  readonly rows: readonly ImpactRow[];
  /** Tables changed in the window (or named) that have no such column, with their changes. */
  readonly withoutColumn: ReadonlyArray<{ readonly table: string; readonly changes: number }>;
  readonly truncates: readonly ImpactTruncate[];
  readonly unresolved: readonly ImpactUnresolved[];
  /**
   * How values the log lacks were looked up: the snapshot (null: none was
   * usable, only the log), chunks read, and keys looked up. Null when nothing
   * had to be looked up.
   */
  readonly lookup: {
    readonly snapshot: string | null;
    readonly chunksRead: number;
    readonly keys: number;
  } | null;
  /** The newest commit or heartbeat the log holds, up to the window's end. */
  readonly logReaches: string | null;
  /** Things the reader should know: gaps, truncates, guesses that were not made. */
  readonly notes: readonly string[];
  /**
   * Of `notes`, those that mean the counts may be short: changes in the
   * window the log does not hold, or whose value is unknown. The CLI exits 1
   * when there are any: a CSV sent to customers must not look complete.
   */
  readonly gaps: readonly string[];
}

// ---------------------------------------------------------------------------
// Output formats

/** The rows as CSV (RFC 4180: CRLF, quotes doubled); the first header is the column's name. NULL is an empty field, an empty string `""`. */
export function impactCsv(report: ImpactReport): string {
  const lines = [
    [report.column, 'table', 'inserted', 'updated', 'deleted', 'truncated', 'first', 'last']
      .map((h) => csvField(h))
      .join(','),
  ];
  for (const r of report.rows) {
    lines.push(
      [
        r.value === null ? '' : csvField(r.value, true),
        csvField(r.table),
        String(r.inserted),
        String(r.updated),
        String(r.deleted),
        String(r.truncated),
        r.first,
        r.last,
      ].join(','),
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}

/** One CSV field; quoted when it must be (and always when empty, so it differs from NULL). */
function csvField(text: string, distinguishEmpty = false): string {
  if ((distinguishEmpty && text === '') || /[",\r\n]/.test(text)) {
    return `"${text.replace(/"/g, '""')}"`;
  }
  return text;
}

/** The column name as SQL would take it: unquoted folds to lower case, "Quoted" keeps its case. */
export function parseColumnName(text: string): string {
  const t = text.trim();
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) {
    const inner = t.slice(1, -1);
    if (inner !== '' && !/(^|[^"])"("")*([^"]|$)/.test(inner)) return inner.replace(/""/g, '"');
  }
  if (t === '' || t.includes('"')) {
    throw new UsageError(`--by: not a column name: "${text}"`, {
      hint: 'give the column as it is named, e.g. --by tenant_id (or "TenantId" in double quotes for a mixed-case name)',
    });
  }
  return t.toLowerCase();
}

// ---------------------------------------------------------------------------
// Per-table bookkeeping

/** A value of the column that is not known: the log lacks it and history could not give it. */
const UNKNOWN = Symbol('unknown');
/** No row holds the key. */
const ABSENT = Symbol('absent');
/** The change does not carry the old value: look it up in history. */
const LOOKUP = Symbol('lookup');

type Val = string | null;
type RowState = Val | typeof UNKNOWN | typeof ABSENT;

interface Counter {
  readonly value: Val;
  inserted: number;
  /** Identities of updated rows (counted once each). */
  readonly updatedKeys: Set<Id>;
  /** Updates of rows without a key (each counts as one row). */
  updatedKeyless: number;
  deleted: number;
  truncated: number;
  first: string;
  last: string;
}

/** Where each change keeps the column and the row's key. */
interface Layout {
  /** Index of the column among the change's columns; -1 if the table has none. */
  readonly col: number;
  /** Indexes of the identity columns; undefined when one is missing (the rows cannot be identified). */
  readonly ids: readonly number[] | undefined;
  /**
   * The identity is the first column, flagged as the log's key, and the
   * column is not part of it: a Delete sending the old key has the identity
   * first and not the column's value (deletedKey).
   */
  readonly keyFirst: boolean;
}

interface TableCtx {
  /** `schema.name`: the newest name the window showed the table under. */
  label: string;
  /** Its OID on the source, when the log gives it: how it is followed across renames. */
  readonly oid: number | undefined;
  /** Every name it had in the window, in order (more than one: renamed). */
  readonly names: string[];
  /** The table in the lookup snapshot, if it is there. */
  readonly snap: TableSnapshot | undefined;
  /** Identity columns: the snapshot's key, else the log's key columns; null: rows have no key. */
  identity: readonly string[] | null | undefined;
  readonly counters: Map<Val, Counter>;
  /** Identities whose value just before a change in the window must come from history. */
  readonly pending: IdSet;
  truncated: boolean;
  readonly unresolved: { updated: number; deleted: number; truncated: number };
  readonly layouts: WeakMap<readonly ChangeColumn[], Layout>;
  /**
   * Rows whose key the window changed: each key it moved to → the row's
   * first identity, so that its updates count once (rowOf). A key inserted
   * again after its row moved away is another row: a new identity.
   */
  readonly moves: Map<Id, Id>;
  /** The identities `moves` leads to (a key of a row that moved away). */
  readonly movedFrom: Set<Id>;
  generation: number;
}

/** The row a key stands for in the window's counts (TableCtx.moves). */
function rowOf(t: TableCtx, id: Id): Id {
  return t.moves.get(id) ?? id;
}

function newCtx(label: string, snap: TableSnapshot | undefined, oid?: number): TableCtx {
  return {
    label,
    oid,
    names: [label],
    snap,
    identity: snap === undefined ? undefined : snap.keyKind === 'none' ? null : snap.key,
    counters: new Map(),
    pending: new IdSet(),
    truncated: false,
    unresolved: { updated: 0, deleted: 0, truncated: 0 },
    layouts: new WeakMap(),
    moves: new Map(),
    movedFrom: new Set(),
    generation: 0,
  };
}

function layoutOf(t: TableCtx, columns: readonly ChangeColumn[], column: string): Layout {
  const hit = t.layouts.get(columns);
  if (hit !== undefined) return hit;
  const names = columns.map((x) => x[0]);
  if (t.identity === undefined) {
    // A table the snapshot does not know: the log's key columns identify its
    // rows. All columns flagged means REPLICA IDENTITY FULL without a key to
    // tell: treated as keyless (old rows come whole with every change).
    const keys = columns.filter((x) => x[3]).map((x) => x[0]);
    t.identity = keys.length === 0 || keys.length === columns.length ? null : keys;
  }
  const ids = t.identity === null ? undefined : t.identity.map((k) => names.indexOf(k));
  const col = names.indexOf(column);
  const layout: Layout = {
    col,
    ids: ids === undefined || ids.includes(-1) ? undefined : ids,
    keyFirst: ids?.length === 1 && ids[0] === 0 && columns[0]![3] && col >= 0 && !columns[col]![3],
  };
  t.layouts.set(columns, layout);
  return layout;
}

/**
 * The key of a stored Delete that sends only the old key, when the layout
 * is `keyFirst` and the key is an integer as PostgreSQL prints it: the row
 * identity, read from the bytes (no Change made), and the value of the
 * column must come from history. Undefined otherwise: decode the change.
 * A DELETE of millions of rows is millions of these.
 */
function deletedKey(content: Buffer, start: number, end: number, l: Layout): number | undefined {
  if (!l.keyFirst || content[start] !== 0x44) return undefined;
  storedLayout(content, start, end, STORED);
  return STORED.oldKind === 0x4b ? tupleInteger(content, STORED.oldStart) : undefined;
}

const STORED = emptyLayout();

/**
 * A row's identity: its key as the snapshot's chunks hold it (COPY text
 * fields joined by tabs), an integer as PostgreSQL prints it held as its
 * number (a set of two million numbers hashes no string; as KeyedRows).
 */
type Id = string | number;

function heldId(text: string): Id {
  return integerKey(text) ?? text;
}

function identityText(values: readonly ChangeValue[]): Id {
  if (values.length === 1) {
    const v = values[0]!;
    return heldId(encodeField(v === 0 ? null : v));
  }
  return values.map((v) => encodeField(v === 0 ? null : v)).join('\t');
}

/** The identity of a chunk line whose key is its first `k` fields. */
function lineId(content: Buffer, pos: number, nl: number, k: number): Id {
  return (
    (k === 1 ? canonicalIntegerField(content, pos, nl) : undefined) ??
    content.toString('utf8', pos, endOfFields(content, pos, nl, k))
  );
}

/** Identities, each held as `heldId` gives it; as a KeyCollection, their text. */
class IdSet implements KeyCollection {
  private readonly ids = new Set<Id>();

  get size(): number {
    return this.ids.size;
  }

  add(id: Id): void {
    this.ids.add(id);
  }

  has(id: Id): boolean {
    return this.ids.has(typeof id === 'number' ? id : heldId(id));
  }

  *keys(): IterableIterator<string> {
    for (const id of this.ids) yield typeof id === 'number' ? String(id) : id;
  }

  [Symbol.iterator](): IterableIterator<Id> {
    return this.ids.values();
  }
}

/** The row's key before an update or delete: the old key, the old row, else (an update that kept its key) the new row. */
function oldIdentity(c: Change, l: Layout): Id | undefined {
  if (l.ids === undefined) return undefined;
  const values: ChangeValue[] = [];
  for (const p of l.ids) {
    let v: ChangeValue | undefined;
    if (c.key !== null && c.columns[p]![3]) v = c.key[p];
    else if (c.old !== null) v = c.old[p];
    else if (c.op === 'update' && c.key === null) v = c.row?.[p];
    if (v === undefined || v === 0) return undefined;
    values.push(v);
  }
  return identityText(values);
}

/** The row's key after an insert or update. */
function newIdentity(c: Change, l: Layout): Id | undefined {
  if (l.ids === undefined || c.row === null) return undefined;
  if (l.ids.some((p) => c.row![p] === 0)) return oldIdentity(c, l);
  return identityText(l.ids.map((p) => c.row![p] ?? null));
}

/** The column's value before an update or delete, if the change carries it. */
function oldValue(c: Change, l: Layout): Val | typeof LOOKUP {
  const isKey = c.columns[l.col]![3];
  if (c.old !== null) {
    const v = c.old[l.col];
    if (v !== 0 && v !== undefined) return v;
  }
  if (c.key !== null && isKey) {
    const v = c.key[l.col];
    if (v !== 0 && v !== undefined) return v;
  }
  // No old key sent: the key did not change, and so neither did a key column.
  if (c.op === 'update' && c.key === null && c.old === null && isKey) {
    const v = c.row?.[l.col];
    if (v !== 0 && v !== undefined) return v;
  }
  return LOOKUP;
}

function counterOf(t: TableCtx, value: Val, time: string): Counter {
  let k = t.counters.get(value);
  if (k === undefined) {
    k = {
      value,
      inserted: 0,
      updatedKeys: new Set(),
      updatedKeyless: 0,
      deleted: 0,
      truncated: 0,
      first: time,
      last: time,
    };
    t.counters.set(value, k);
  }
  if (time < k.first) k.first = time;
  if (time > k.last) k.last = time;
  return k;
}

function countUpdated(t: TableCtx, value: Val, id: Id | undefined, time: string): void {
  const k = counterOf(t, value, time);
  if (id === undefined) k.updatedKeyless++;
  else k.updatedKeys.add(rowOf(t, id));
}

// ---------------------------------------------------------------------------
// The report

/**
 * The impact of the window's changes, per value of the column and table (see
 * the module comment). Under a shared lock, as any reader of the log.
 */
export async function impactReport(o: ImpactOptions): Promise<ImpactReport> {
  return whileShared(o.repo.storage, `impact --by ${o.column}`, () => readImpact(o));
}

async function readImpact(o: ImpactOptions): Promise<ImpactReport> {
  const column = parseColumnName(o.column);
  const store = SnapshotStore.of(o.repo);
  const { log, target, logStart, logCreated, logs, index, sinceManifest } = await selectImpactLog(
    o.repo,
    store,
    o.target,
    o.since,
  );
  const manifests = snapshotsOfLog(
    logs,
    index,
    (await store.all(target)) as Array<SnapshotManifest<SchemaModel>>,
  );
  const notes: string[] = [];
  // Of the notes, those that mean changes in the window are not counted.
  const gaps: string[] = [];
  const gap = (text: string) => {
    notes.push(text);
    gaps.push(text);
  };
  const until = normaliseTime(o.until);
  const next = logs[index + 1];
  if (next !== undefined && until >= normaliseTime(next.info.created)) {
    // One log is read: the gap between two is in neither, and the next is its own.
    notes.push(
      `changes after log ${index + 1} of "${target}" ends are not counted: ${gapBetween(logs, index)}; for what changed since, run impact again with --since ${next.info.created}`,
    );
  }

  // The window, and the snapshot to look values up in (the newest before the window).
  let since: string;
  let sinceLsn: bigint | undefined;
  let sinceSnapshot: ImpactReport['sinceSnapshot'] = null;
  let base: SnapshotManifest<SchemaModel> | undefined;
  if (o.since.kind === 'snapshot') {
    const m = sinceManifest!; // (resolved by selectImpactLog)
    if (m.target !== target) {
      throw new UsageError(
        `snapshot ${m.id} is of target "${m.target}", not "${target}" whose change log is read`,
        { hint: `give --target ${m.target}, or a snapshot of "${target}" (\`flashback list\`)` },
      );
    }
    base = m;
    since = consistentTime(m);
    sinceLsn = lsnValue(m.lsn);
    sinceSnapshot = { id: m.id, lsn: m.lsn };
    if (sinceLsn < logStart) {
      gap(
        `snapshot ${m.id} (LSN ${m.lsn}) is older than the change log of "${target}" (it begins at LSN ${lsnText(logStart)}): changes committed between the two are in neither and are not counted`,
      );
    }
  } else {
    since = normaliseTime(o.since.at);
    const before = manifests.filter((m) => consistentTime(m) <= since);
    // Prefer one the log covers (nothing between it and the log is missing).
    base =
      [...before].reverse().find((m) => lsnValue(m.lsn) >= logStart) ?? before[before.length - 1];
    if (logCreated > since) {
      gap(
        `the change log of "${target}" began at ${logCreated}, after --since: changes committed before it are not counted`,
      );
    }
  }
  if (since > until) {
    throw new UsageError(`the window starts (${since}) after it ends (--until ${until})`, {
      hint: 'give an --until after the start, or an earlier --since',
    });
  }
  const views = o.tables === undefined ? undefined : await schemaViews(log, manifests);
  const chosen = views === undefined ? undefined : resolveTables(o.tables!, views);
  // The tables named, also under the other names they had (by OID).
  const chosenOids = new Set<number>();
  for (const v of views ?? []) {
    for (const [label, oid] of v.oids) if (chosen!.has(label)) chosenOids.add(oid);
  }

  // A table is followed by its OID where the log gives one: renamed in the
  // window, it stays one table (counted under its newest name), and its rows
  // are looked up in the snapshot under the name it had there. A name
  // another table takes over is that table's.
  const tables = new Map<string | number, TableCtx>();
  const withoutColumn = new Map<string, number>();
  const ctxOf = (schema: string, name: string, relid: number | undefined): TableCtx | undefined => {
    const label = `${schema}.${name}`;
    const key = tableKey(schema, name, relid);
    let t = tables.get(key);
    if (t === undefined) {
      const oid = typeof key === 'number' ? key : undefined;
      if (chosen !== undefined && !chosen.has(label) && !(oid !== undefined && chosenOids.has(oid)))
        return undefined;
      t = newCtx(label, tableIn(base, oid, schema, name), oid);
      tables.set(key, t);
    } else if (t.label !== label) {
      t.label = label;
      t.names.push(label);
    }
    return t;
  };
  const inWindow = (tx: Transaction): boolean =>
    sinceLsn !== undefined ? tx.commitLsn >= sinceLsn : tx.commitTime > since;

  // Pass 1: the window, once.
  let newest = '';
  const seen = (at: string) => {
    const t = normaliseTime(at);
    if (t > newest) newest = t;
  };
  let transactions = 0;
  let changes = 0;
  let lastLookupLsn: bigint | undefined;
  let time = '';
  let lookup = false;
  const decoded = (c: Change): void => {
    const t = ctxOf(c.schema, c.table, c.relid);
    if (t === undefined) return;
    const l = layoutOf(t, c.columns, column);
    if (l.col < 0) {
      withoutColumn.set(t.label, (withoutColumn.get(t.label) ?? 0) + 1);
      return;
    }
    changes++;
    if (c.op === 'insert') {
      counterOf(t, valueText(c.row?.[l.col]), time).inserted++;
      // A key another row had before it moved away: a row of its own.
      const id = newIdentity(c, l);
      if (id !== undefined && (t.moves.has(id) || t.movedFrom.has(id))) {
        t.moves.set(id, `${String(id)}\u0001${++t.generation}`);
      }
    } else if (c.op === 'update') {
      const next = c.row?.[l.col];
      const prev = oldValue(c, l);
      const id = newIdentity(c, l);
      // A key change: the row goes on under its new key, counted as one row.
      const from = oldIdentity(c, l);
      if (from !== undefined && id !== undefined && from !== id) {
        const row = rowOf(t, from);
        t.moves.set(id, row);
        t.movedFrom.add(row);
      }
      if (prev !== LOOKUP) {
        countUpdated(t, prev, id, time);
        if (next !== 0 && next !== undefined && next !== prev) countUpdated(t, next, id, time);
      } else {
        // The new value is certain now; whether the row came from another
        // value (and which) is history's to say, in pass 2.
        if (next !== 0 && next !== undefined) countUpdated(t, next, id, time);
        const key = oldIdentity(c, l);
        if (key === undefined) {
          // Whether (and from which value) the row moved cannot be known.
          t.unresolved.updated++;
        } else {
          t.pending.add(key);
          lookup = true;
        }
      }
    } else if (c.op === 'delete') {
      const prev = oldValue(c, l);
      if (prev !== LOOKUP) counterOf(t, prev, time).deleted++;
      else {
        const key = oldIdentity(c, l);
        if (key === undefined) t.unresolved.deleted++;
        else {
          t.pending.add(key);
          lookup = true;
        }
      }
    } else {
      t.truncated = true;
      lookup = true;
    }
  };
  // (The table of the last relation seen: changes come in runs of one table.)
  let seenRel: StoredRelation | undefined;
  let seenCtx: TableCtx | undefined;
  const stored = (content: Buffer, start: number, end: number, rel: StoredRelation): void => {
    if (rel !== seenRel) {
      seenRel = rel;
      seenCtx = ctxOf(rel.schema, rel.name, rel.id);
    }
    const t = seenCtx;
    if (t !== undefined) {
      const key = deletedKey(content, start, end, layoutOf(t, rel.columns, column));
      if (key !== undefined) {
        // (What decoded() does with such a delete, without decoding it.)
        changes++;
        t.pending.add(key);
        lookup = true;
        return;
      }
    }
    decoded(storedChange(content, start, end, rel));
  };
  for await (const tx of readTransactions(log, {
    // Every transaction after the base snapshot's consistent time committed after its LSN.
    fromLsn: sinceLsn ?? (base === undefined ? undefined : lsnValue(base.lsn)),
    untilTime: until,
    onHeartbeat: (_lsn, at) => seen(at),
    onPastLimit: (_lsn, at) => seen(at),
    decodedChanges: 0,
  })) {
    seen(tx.commitTime);
    if (!inWindow(tx)) continue;
    transactions++;
    time = normaliseTime(tx.commitTime);
    lookup = false;
    tx.changes.forEachStored(stored, decoded);
    if (lookup) lastLookupLsn = tx.commitLsn;
  }

  // Tables named but not changed: still say when they lack the column.
  if (chosen !== undefined) {
    // A name no snapshot has and nothing in the window changed is a typo: an
    // empty report for it would read as "nobody was affected".
    const seenNames = new Set([...tables.values()].flatMap((t) => t.names));
    const unknown = [...chosen].filter(
      (label) =>
        !seenNames.has(label) &&
        !withoutColumn.has(label) &&
        newestTable(manifests, label) === undefined,
    );
    if (unknown.length > 0) {
      const known = [
        ...new Set(manifests.flatMap((m) => m.tables.map((t) => `${t.schema}.${t.name}`))),
      ];
      throw new UsageError(
        `no table ${unknown.join(', ')} in the snapshots of "${target}", nor changed in the window`,
        {
          hint: `check the name (unquoted names are folded to lower case: quote "Mixed Case"); tables known: ${known.slice(0, 8).join(', ')}${known.length > 8 ? ', …' : ''}`,
        },
      );
    }
    for (const label of chosen) {
      if (seenNames.has(label) || withoutColumn.has(label)) continue;
      const snap = newestTable(manifests, label);
      if (snap !== undefined && !snap.columns.includes(column)) withoutColumn.set(label, 0);
    }
  }
  const hasColumn =
    [...tables.values()].some((t) => !withoutColumn.has(t.label)) ||
    manifests.some((m) => m.tables.some((t) => t.columns.includes(column)));
  // A name no table has is a typo, not an empty report (when there is anything to compare with).
  if (!hasColumn && (withoutColumn.size > 0 || manifests.length > 0)) {
    throw new UsageError(
      `no table of "${target}" has a column "${column}" (in its snapshots, or among the tables changed in the window)`,
      {
        hint: 'check the name: column names are lower case unless quoted ("TenantId"); `flashback show latest` lists the tables',
      },
    );
  }

  // Pass 2: what the log lacks, from history.
  const truncates: ImpactTruncate[] = [];
  let lookupInfo: ImpactReport['lookup'] = null;
  if (lastLookupLsn !== undefined) {
    const resolver = new Resolver(o.repo, base, logStart, column, notes);
    lookupInfo = await resolver.run(
      log,
      [...tables.values()].filter((t) => t.pending.size > 0 || t.truncated),
      lastLookupLsn,
      inWindow,
      truncates,
    );
  }

  // Capture stores a commit within a second and a heartbeat every few, so
  // the log is always a few seconds short of now: only a log a minute
  // behind means changes up to now may be missing.
  const endsAtLog =
    o.untilIsNow === true &&
    newest > since &&
    newest < until &&
    Date.parse(until) - Date.parse(newest) <= LOG_SLACK_MS;
  if (!endsAtLog && (newest === '' || newest < until)) {
    gap(
      `the change log reaches ${newest === '' ? 'no commit or heartbeat after the window opens' : `only ${newest}`}: changes committed after that, up to ${until}, are not in it (is capture running?)`,
    );
  }
  for (const tr of truncates) {
    notes.push(
      `${tr.table} was truncated at ${tr.time} (transaction ${tr.xid}): every row it had then (${tr.rows}) is counted under truncated, by its value of ${column}`,
    );
  }
  for (const t of tables.values()) {
    if (t.names.length < 2) continue;
    notes.push(
      `${t.label} was renamed in the window (${t.names.join(' → ')}): its changes are counted together under its newest name, the table followed by its OID`,
    );
  }
  const unresolved: ImpactUnresolved[] = [];
  for (const t of tables.values()) {
    const u = t.unresolved;
    if (u.updated + u.deleted + u.truncated === 0) continue;
    unresolved.push({ table: t.label, ...u });
    const parts = [
      u.deleted > 0 ? `${u.deleted} deleted row(s)` : '',
      u.updated > 0 ? `${u.updated} update(s) (the value before)` : '',
      u.truncated > 0 ? `${u.truncated} truncated row(s)` : '',
    ].filter(Boolean);
    gap(
      `${t.label}: the value of ${column} is unknown for ${parts.join(', ')}: the change log does not carry it and neither a snapshot before the window nor an earlier change holds the row (not counted above)`,
    );
  }
  if (withoutColumn.size > 0) {
    notes.push(
      `no column ${column} in ${[...withoutColumn].map(([l, n]) => `${l} (${n} change${n === 1 ? '' : 's'})`).join(', ')}: not counted`,
    );
  }

  const rows: ImpactRow[] = [];
  for (const t of tables.values()) {
    for (const k of t.counters.values()) {
      const updated = k.updatedKeys.size + k.updatedKeyless;
      if (k.inserted + updated + k.deleted + k.truncated === 0) continue;
      rows.push({
        value: k.value,
        table: t.label,
        inserted: k.inserted,
        updated,
        deleted: k.deleted,
        truncated: k.truncated,
        first: k.first,
        last: k.last,
      });
    }
  }
  rows.sort((a, b) => compareValues(a.value, b.value) || (a.table < b.table ? -1 : 1));
  return {
    target,
    column,
    since,
    sinceSnapshot,
    until: endsAtLog ? newest : until,
    transactions,
    changes,
    rows,
    withoutColumn: [...withoutColumn]
      .map(([table, n]) => ({ table, changes: n }))
      .sort((a, b) => (a.table < b.table ? -1 : 1)),
    truncates,
    unresolved,
    lookup: lookupInfo,
    logReaches: newest === '' ? null : newest,
    notes,
    gaps,
  };
}

function valueText(v: ChangeValue | undefined): Val {
  return v === undefined || v === 0 ? null : v;
}

/** Integers numerically, other text by code point; NULL last. */
export function compareValues(a: Val, b: Val): number {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  if (/^-?\d+$/.test(a) && /^-?\d+$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a < b ? -1 : 1;
}

/** A snapshot's consistent time, six-digit form (finishedAt for older manifests). */
function consistentTime(m: SnapshotManifest): string {
  return normaliseTime(m.consistentAt ?? m.finishedAt);
}

/** How pass 1 and pass 2 know a table: by its OID when the log gives one, else by `schema.name`. */
function tableKey(schema: string, name: string, relid: number | undefined): string | number {
  return relid === undefined || relid === 0 ? `${schema}.${name}` : relid;
}

/** The table in the lookup snapshot: by OID when both know it, else by name. */
function tableIn(
  base: SnapshotManifest | undefined,
  oid: number | undefined,
  schema: string,
  name: string,
): TableSnapshot | undefined {
  if (base === undefined) return undefined;
  if (oid !== undefined && base.tables.some((x) => x.oid !== undefined)) {
    return base.tables.find((x) => x.oid === oid);
  }
  return base.tables.find((x) => x.schema === schema && x.name === name);
}

function newestTable(manifests: readonly SnapshotManifest[], label: string) {
  for (const m of [...manifests].reverse()) {
    const t = m.tables.find((x) => `${x.schema}.${x.name}` === label);
    if (t !== undefined) return t;
  }
  return undefined;
}

/**
 * `--table` names as `schema.name`: unqualified names looked up in the
 * snapshots and recorded schemas (public if in none); a partitioned table as
 * every partition it had in any of them (one created or detached in the
 * window held some of its rows there).
 */
function resolveTables(names: readonly string[], models: readonly SchemaView[]) {
  const out = new Set<string>();
  for (const text of names) {
    const n = resolveTableName(text, (x) => inSnapshots(models, x));
    const leaves = partitionsEver(models, n);
    if (leaves !== undefined) {
      if (leaves.length === 0) {
        throw new UsageError(
          `"${text}" is a partitioned table without partitions, in the snapshots and in the schema changes the change log recorded`,
          { hint: 'name the tables that hold its rows' },
        );
      }
      for (const l of leaves) out.add(`${l.schema}.${l.name}`);
      continue;
    }
    if (n.schema !== undefined) {
      out.add(`${n.schema}.${n.name}`);
      continue;
    }
    let schema: string | undefined;
    for (const m of [...models].reverse()) {
      const hits = [...new Set(m.tables.filter((t) => t.name === n.name).map((t) => t.schema))];
      if (hits.length > 1) {
        throw new UsageError(`table "${n.name}" is in several schemas (${hits.join(', ')})`, {
          hint: `name it with its schema, e.g. --table ${hits[0]!}.${n.name}`,
        });
      }
      if (hits.length === 1) {
        schema = hits[0]!;
        break;
      }
    }
    out.add(`${schema ?? 'public'}.${n.name}`);
  }
  return out;
}

/**
 * The log the window starts in (of a target's several, the one that holds
 * --since), and the snapshot --since names, if it names one.
 */
async function selectImpactLog(
  repo: Repository,
  store: SnapshotStore,
  target: string | undefined,
  since: ImpactOptions['since'],
): Promise<{
  log: ChangeLog;
  target: string;
  logStart: bigint;
  logCreated: string;
  logs: readonly TargetLog[];
  index: number;
  sinceManifest: SnapshotManifest<SchemaModel> | undefined;
}> {
  let sel = await selectLog(
    repo.storage,
    target,
    'an impact report',
    since.kind === 'time' ? normaliseTime(since.at) : undefined,
  );
  const sinceManifest =
    since.kind === 'snapshot'
      ? ((await store.resolve(since.ref, sel.info.target)) as SnapshotManifest<SchemaModel>)
      : undefined;
  if (sinceManifest !== undefined && sel.logs.length > 1) {
    const m = sinceManifest;
    const k = logOfSnapshot(sel.logs, m);
    if (k === undefined) {
      throw new UsageError(
        `snapshot ${m.id} was taken after the change log of "${sel.info.target}" it was taken under had ended, and before the next one began: no log continues it`,
        { hint: 'give --since a time, or a snapshot taken while capture ran' },
      );
    }
    sel = { ...sel.logs[k]!, logs: sel.logs, index: k };
  }
  const { log, info } = sel;
  return {
    log,
    target: info.target,
    logStart: lsnValue(info.startLsn),
    logCreated: normaliseTime(info.created),
    logs: sel.logs,
    index: sel.index,
    sinceManifest,
  };
}

// ---------------------------------------------------------------------------
// Pass 2: values from history

/** What a table's rows not in `rows` are: as the snapshot holds them, none, or unknown (no snapshot). */
type Start = 'snapshot' | 'empty' | 'unknown';

interface Tracked {
  readonly t: TableCtx;
  /** Followed keys (every key, for a truncated table) and their value now. */
  readonly rows: Map<Id, RowState>;
  start: Start;
  /** Keyless tables under REPLICA IDENTITY FULL: rows added minus removed per value since the snapshot. */
  readonly delta: Map<Val, number>;
  /** A keyless change came without its old row: the delta is incomplete. */
  deltaBroken: boolean;
}

/**
 * Replays the log from the lookup snapshot, following only the keys set
 * aside in pass 1 (and every key of a truncated table), and counts what
 * pass 1 could not.
 */
class Resolver {
  private readonly chunks: ChunkStore;
  private chunksRead = 0;

  constructor(
    repo: Repository,
    private readonly base: SnapshotManifest<SchemaModel> | undefined,
    private readonly logStart: bigint,
    private readonly column: string,
    private readonly notes: string[],
  ) {
    this.chunks = new ChunkStore(repo.storage);
  }

  async run(
    log: ChangeLog,
    tables: readonly TableCtx[],
    lastLsn: bigint,
    inWindow: (tx: Transaction) => boolean,
    truncates: ImpactTruncate[],
  ): Promise<NonNullable<ImpactReport['lookup']>> {
    const base = this.base;
    if (base === undefined) {
      this.notes.push(
        'no snapshot was taken before the window opened: values of deleted rows (and rows truncated) are known only if the change log saw them inserted or updated',
      );
    } else if (lsnValue(base.lsn) < this.logStart) {
      this.notes.push(
        `values of deleted rows come from snapshot ${base.id}, which is older than the change log (LSN ${base.lsn}, the log begins at ${lsnText(this.logStart)}): a change between the two is in neither`,
      );
    }
    // By OID where the log gives one (as pass 1 made them), else by name.
    const tracked = new Map<string | number, Tracked>();
    const trackedOf = (schema: string, name: string, relid: number | undefined) =>
      tracked.get(tableKey(schema, name, relid));
    let keys = 0;
    for (const t of tables) {
      const tr: Tracked = {
        t,
        rows: new Map(),
        start: base === undefined ? 'unknown' : t.snap === undefined ? 'empty' : 'snapshot',
        delta: new Map(),
        deltaBroken: false,
      };
      keys += t.pending.size;
      if (tr.start === 'snapshot' && t.pending.size > 0) await this.preload(tr);
      tracked.set(t.oid ?? t.label, tr);
    }
    // Without a truncate in the window (counting one reads chunks, awaited
    // in its turn), changes are visited in place: a delete sending only its
    // key is followed from its bytes (deletedKey), no Change made.
    const inPlace = !tables.some((t) => t.truncated);
    let win = false;
    let time = '';
    let seenRel: StoredRelation | undefined;
    let seenTracked: Tracked | undefined;
    const decoded = (c: Change): void => {
      const tr = trackedOf(c.schema, c.table, c.relid);
      if (tr === undefined) return;
      const l = layoutOf(tr.t, c.columns, this.column);
      if (l.col >= 0) this.follow(tr, c, l, win, time);
    };
    const stored = (content: Buffer, start: number, end: number, rel: StoredRelation): void => {
      if (rel !== seenRel) {
        seenRel = rel;
        seenTracked = trackedOf(rel.schema, rel.name, rel.id);
      }
      const tr = seenTracked;
      if (tr === undefined) return;
      const key = deletedKey(content, start, end, layoutOf(tr.t, rel.columns, this.column));
      if (key === undefined) decoded(storedChange(content, start, end, rel));
      else this.deleted(tr, key, win, time);
    };
    for await (const tx of readTransactions(log, {
      fromLsn: base === undefined ? undefined : lsnValue(base.lsn),
      untilLsn: lastLsn + 1n,
      decodedChanges: inPlace ? 0 : undefined,
    })) {
      win = inWindow(tx);
      time = normaliseTime(tx.commitTime);
      if (inPlace) {
        tx.changes.forEachStored(stored, decoded);
        continue;
      }
      for (const c of tx.changes) {
        const tr = trackedOf(c.schema, c.table, c.relid);
        if (tr === undefined) continue;
        const l = layoutOf(tr.t, c.columns, this.column);
        if (l.col < 0) continue;
        if (c.op === 'truncate' && win) truncates.push(await this.truncate(tr, tx, time));
        this.follow(tr, c, l, win, time);
      }
    }
    return { snapshot: base?.id ?? null, chunksRead: this.chunksRead, keys };
  }

  /** Follows a change (a truncate in the window is counted by the caller first). */
  private follow(tr: Tracked, c: Change, l: Layout, win: boolean, time: string): void {
    if (c.op === 'truncate') {
      if (win && !tr.t.truncated) {
        // (Pass 1 saw every truncate in the window: reading in place relies on it.)
        throw new Error(`impact: a truncate of ${tr.t.label} in the window pass 1 did not see`);
      }
      tr.rows.clear();
      tr.delta.clear();
      tr.deltaBroken = false;
      tr.start = 'empty';
    } else if (tr.t.identity === null) this.keyless(tr, c, l);
    else this.keyed(tr, c, l, win, time);
  }

  /**
   * A delete of a keyed table whose value of the column comes from history
   * (keyed(), and deletedKey's deletes read in place): counted in the
   * window by the row's value before it, and the row followed as gone.
   */
  private deleted(tr: Tracked, key: Id, win: boolean, time: string): void {
    const t = tr.t;
    // (A key in rows was set there because it is followed: one lookup, not two.)
    const now = tr.rows.get(key);
    if (win) {
      const v = now !== undefined ? now : tr.start === 'unknown' ? UNKNOWN : ABSENT;
      if (v === UNKNOWN || v === ABSENT) t.unresolved.deleted++;
      else counterOf(t, v, time).deleted++;
    }
    if (now !== undefined || t.truncated || t.pending.has(key)) tr.rows.set(key, ABSENT);
  }

  /** Follows a keyed table's change; counts it if pass 1 left it to history. */
  private keyed(tr: Tracked, c: Change, l: Layout, win: boolean, time: string): void {
    const t = tr.t;
    const set = (key: Id | undefined, v: RowState) => {
      if (key !== undefined && (t.truncated || t.pending.has(key))) tr.rows.set(key, v);
    };
    const lookup = (key: Id): RowState =>
      tr.rows.has(key) ? tr.rows.get(key)! : tr.start === 'unknown' ? UNKNOWN : ABSENT;
    if (c.op === 'insert') {
      set(newIdentity(c, l), valueText(c.row?.[l.col]));
      return;
    }
    const oldKey = oldIdentity(c, l);
    const needed = win && oldKey !== undefined && oldValue(c, l) === LOOKUP;
    if (c.op === 'delete') {
      if (needed) this.deleted(tr, oldKey, win, time);
      else set(oldKey, ABSENT);
      return;
    }
    // update
    const next = c.row?.[l.col];
    const newKey = newIdentity(c, l);
    if (needed) {
      const v = lookup(oldKey);
      if (v === UNKNOWN || v === ABSENT) t.unresolved.updated++;
      else if (next === 0 || next !== v) countUpdated(t, v, newKey, time);
    }
    let value: RowState | undefined;
    if (next !== 0 && next !== undefined) value = next;
    else if (oldKey !== undefined && tr.rows.has(oldKey)) value = tr.rows.get(oldKey)!;
    else if (oldKey === newKey)
      value = undefined; // unchanged, and not followed: as it was
    else value = UNKNOWN;
    if (oldKey !== newKey) set(oldKey, ABSENT);
    if (value !== undefined) set(newKey, value);
  }

  /** Keeps a truncated keyless table's per-value delta (REPLICA IDENTITY FULL sends old rows). */
  private keyless(tr: Tracked, c: Change, l: Layout): void {
    if (!tr.t.truncated) return;
    const add = (v: ChangeValue | undefined, n: number) => {
      const k = valueText(v);
      tr.delta.set(k, (tr.delta.get(k) ?? 0) + n);
    };
    if (c.op !== 'insert') {
      if (c.old === null || c.old[l.col] === 0) tr.deltaBroken = true;
      else add(c.old[l.col], -1);
    }
    if (c.row !== null) {
      const v = c.row[l.col];
      if (v === 0) add(c.old?.[l.col], 1);
      else add(v, 1);
    }
  }

  /** Counts every row the table has at the truncate, per value, under truncated. */
  private async truncate(tr: Tracked, tx: Transaction, time: string): Promise<ImpactTruncate> {
    const t = tr.t;
    const counts = new Map<Val, number>();
    let unknown = 0;
    const add = (v: RowState, n = 1) => {
      if (v === ABSENT) return;
      if (v === UNKNOWN) unknown += n;
      else counts.set(v, (counts.get(v) ?? 0) + n);
    };
    if (tr.start === 'snapshot' && t.snap !== undefined) {
      const snap = t.snap;
      const col = snap.columns.indexOf(this.column);
      const k = t.identity === null ? 0 : snap.key.length;
      for (let i = 0; i < snap.chunks.length; i++) {
        const content = await this.read(snap, i);
        let pos = 0;
        while (pos < content.length) {
          let nl = content.indexOf(0x0a, pos);
          if (nl < 0) nl = content.length;
          // A key the log changed is counted from its state below, not from the snapshot.
          const changed = k > 0 && tr.rows.has(lineId(content, pos, nl, k));
          if (!changed) {
            add(col < 0 ? UNKNOWN : decodeField(fieldAt(content, pos, nl, col)));
          }
          pos = nl + 1;
        }
      }
    } else if (tr.start === 'unknown') {
      this.notes.push(
        `${t.label}: rows it had before the change log began are not known (no snapshot before the window), so the truncate at ${time} may have removed more rows than counted`,
      );
    }
    for (const v of tr.rows.values()) add(v);
    for (const [v, n] of tr.delta) add(v, n);
    if (tr.deltaBroken) {
      this.notes.push(
        `${t.label}: a change before the truncate at ${time} came without its old row, so the rows counted as truncated may be off`,
      );
    }
    let total = 0;
    for (const [v, n] of counts) {
      if (n <= 0) continue;
      counterOf(t, v, time).truncated += n;
      total += n;
    }
    t.unresolved.truncated += unknown;
    return { table: t.label, time, xid: tx.xid, rows: total + unknown };
  }

  /** Loads the snapshot values of a table's pending keys, reading only the chunks that can hold them. */
  private async preload(tr: Tracked): Promise<void> {
    const snap = tr.t.snap!;
    const pending = tr.t.pending;
    const col = snap.columns.indexOf(this.column);
    const k = snap.key.length;
    const keep = (content: Buffer) => {
      let pos = 0;
      while (pos < content.length) {
        let nl = content.indexOf(0x0a, pos);
        if (nl < 0) nl = content.length;
        // (Picked lines are of pending keys only: pick.ts keeps no other.)
        const key = lineId(content, pos, nl, k);
        tr.rows.set(key, col < 0 ? UNKNOWN : decodeField(fieldAt(content, pos, nl, col)));
        pos = nl + 1;
      }
    };
    // Only the pending keys' lines of each chunk that can hold one, picked
    // in threads when there are many (keys deleted all over a big table).
    const jobs = pickJobs(snap, keysByChunk(this.base?.schema, snap, pending));
    this.chunksRead += jobs.length;
    const picker = createPicker(this.chunks);
    try {
      for await (const block of picker.blocks(jobs)) keep(block.content);
    } catch (err) {
      if (!(err instanceof ChunkError)) throw err;
      throw this.damaged(
        snap,
        snap.chunks.findIndex((c) => c.id === err.chunkId),
        err,
      );
    } finally {
      await picker.close();
    }
    // Keys in no chunk: no row held them when the snapshot was taken.
    if (tr.rows.size < pending.size) {
      for (const key of pending) if (!tr.rows.has(key)) tr.rows.set(key, ABSENT);
    }
  }

  private async read(snap: TableSnapshot, i: number): Promise<Buffer> {
    this.chunksRead++;
    try {
      return await this.chunks.get(snap.chunks[i]!.id);
    } catch (err) {
      if (!(err instanceof ChunkError)) throw err;
      throw this.damaged(snap, i, err);
    }
  }

  /** A chunk error as damaged data, saying where the chunk is (its position `i` in the table). */
  private damaged(snap: TableSnapshot, i: number, err: ChunkError): DamagedError {
    return new DamagedError(
      'impact.chunk',
      `${err.message} (snapshot ${this.base?.id}, ${snap.schema}.${snap.name}, chunk ${i + 1} of ${snap.chunks.length})`,
      { hint: err.hint, cause: err },
    );
  }
}
