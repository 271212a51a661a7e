/**
 * Row history: every committed version of one row, found by its key, from
 * the repository alone (no database connection).
 *
 * The row's starting state comes from one snapshot: the chunk that can hold
 * the key is chosen from the manifest's per-chunk first/last key values and
 * only that chunk is read (its hash verified). Then the change log is read
 * one transaction at a time from the snapshot's LSN, and each transaction
 * that touched the row gives one version: the committed state after it.
 * Memory holds the current version and the versions found, never the log.
 *
 * Plain data in (a repository, names and text), plain data out (versions);
 * the CLI (src/cli/commands/history.ts) only formats. docs/CAPTURE.md ("Row
 * history") describes the behaviour for users.
 */
import {
  DamagedError,
  ExitCode,
  FlashbackError,
  type FlashbackErrorOptions,
  UsageError,
} from '../errors.js';
import { decodeField, encodeField, endOfFields, splitFields } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { parseTableName, resolveTableName, type TableName } from '../pg/schema/names.js';
import { partitionsIn } from '../pg/schema/partitions.js';
import type { TableShape } from '../pg/schema/shapes.js';
import {
  type CaptureInfo,
  type Change,
  ChangeLog,
  type ChangeValue,
  lsnText,
  lsnValue,
  readTransactions,
  type Transaction,
} from '../repo/changelog.js';
import {
  gapBetween,
  logForTime,
  snapshotsOfLog,
  type TargetLog,
  targetLogs,
} from '../repo/changelogs.js';
import { ChunkError, ChunkStore } from '../repo/chunks.js';
import { whileShared } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';
import {
  type ChunkRef,
  inSnapshots,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { keysByChunk } from '../restore/key-chunks.js';
import type { Storage } from '../storage/storage.js';
import { normaliseTime } from './time.js';

/** A column value in its PostgreSQL text form, or null. */
export type Cell = string | null;

/** What happened to the row in a version; `snapshot` is the starting state read from a snapshot. */
export type VersionOp = 'snapshot' | 'insert' | 'update' | 'delete' | 'truncate';

/** One version of the row: its state after a transaction (or as a snapshot holds it). */
export interface RowVersion {
  /**
   * Commit time, UTC, ISO 8601 with microseconds; for a snapshot, the server
   * time of its consistent point (when it was taken, for older manifests).
   */
  readonly time: string;
  /** Transaction id; null for a snapshot. */
  readonly xid: number | null;
  /** Commit LSN; for a snapshot, its consistent point. */
  readonly lsn: string;
  readonly op: VersionOp;
  /** The snapshot's id, for op `snapshot`. */
  readonly snapshot?: string;
  /** The row's key values after this version (key-column order). */
  readonly key: readonly Cell[];
  /** The key before this transaction, when the transaction changed it. */
  readonly keyChangedFrom?: readonly Cell[];
  /** The row after this version (column name to value); null once deleted or truncated. */
  readonly row: Readonly<Record<string, Cell>> | null;
  /** Columns whose value differs from the previous version; every column for the first one shown. */
  readonly changed: readonly string[];
  /** Previous values of the changed columns the previous version had (absent for the first version shown). */
  readonly old?: Readonly<Record<string, Cell>>;
  /** Changed columns the previous version did not have: added to the table in between (no old value). */
  readonly added?: readonly string[];
  /** Changed columns this version does not have: dropped from the table in between (old value only). */
  readonly dropped?: readonly string[];
  /**
   * Columns whose value is unknown (shown as null): an unchanged TOASTed value
   * the server did not send, with no earlier version to take it from.
   */
  readonly unknown?: readonly string[];
  /**
   * Which of the target's change logs this version is from (1, 2, …); set
   * only when the history spans several (after `capture --new-log`).
   */
  readonly log?: number;
}

/** How the user named the row's key. */
export type KeySpec =
  /** The KEY argument: one value, or comma-separated values in key-column order. */
  | { readonly positional: string }
  /** `--key col=value`, repeated: values by column name. */
  | { readonly named: ReadonlyArray<readonly [column: string, value: string]> };

/** What `rowHistory` needs. */
export interface RowHistoryOptions {
  readonly repo: Repository;
  /** Target name; by default the only target with a change log. */
  readonly target?: string | undefined;
  /** `name` or `schema.name` (unquoted parts fold to lower case, as in SQL). */
  readonly table: string;
  readonly key: KeySpec;
  /** Window start (ISO UTC with microseconds, from parseTimeArg). */
  readonly since?: string | undefined;
  /** Window end, inclusive. */
  readonly until?: string | undefined;
}

/** The history of one row. */
export interface RowHistory {
  readonly target: string;
  readonly schema: string;
  readonly table: string;
  readonly keyColumns: readonly string[];
  /** The key asked for, normalised (integers in canonical form). */
  readonly key: readonly string[];
  /** Where the log begins (the capture slot's consistent point). */
  readonly logStart: string;
  /** The snapshot the starting state was read from, if any. */
  readonly snapshot: {
    readonly id: string;
    readonly lsn: string;
    readonly chunksRead: number;
    readonly chunks: number;
  } | null;
  /** Things the reader should know: gaps, key changes, guesses. */
  readonly notes: readonly string[];
  /** Oldest first. The first is the state at the window's start (or the row's first appearance in it). */
  readonly versions: readonly RowVersion[];
  /**
   * When the window spans several of the target's change logs: what each
   * gave, oldest first (the top-level `logStart` and `snapshot` are the
   * newest part's). Each log is its own history: what was committed between
   * one log's end and the next one's start is in neither.
   */
  readonly parts?: readonly HistoryPart[];
}

/** What one change log gave a history that spans several. */
export interface HistoryPart {
  /** The log's number (1 for the first). */
  readonly log: number;
  readonly logStart: string;
  readonly snapshot: RowHistory['snapshot'];
  /** How many of the history's versions are from this log. */
  readonly versions: number;
  /** Between the previous log and this one (absent for the first part): what neither holds. */
  readonly gapBefore?: string;
  /** Why this log gave no version (the row not in it, or the log emptied by prune). */
  readonly none?: string;
}

/** No version of the row exists in the window. Exit 3, like an unknown snapshot or table. */
export { normaliseTime, parseTimeArg } from './time.js';

export class RowNotFoundError extends FlashbackError {
  constructor(message: string, options: FlashbackErrorOptions = {}) {
    super('history.not-found', ExitCode.usage, message, options);
  }
}

// ---------------------------------------------------------------------------
// Parsing what the user typed

export { parseTableName, type TableName };

/** Builds a KeySpec from the KEY argument and `--key col=value` options; exactly one form. */
export function parseKeyArgs(positional: string | undefined, named: readonly string[]): KeySpec {
  if (positional !== undefined && named.length > 0) {
    throw new UsageError('give the key either as the KEY argument or with --key, not both', {
      hint: 'e.g. `history subscribers 42`, or `history memberships --key tenant_id=7 --key email=a@b.example`',
    });
  }
  if (positional !== undefined) return { positional };
  if (named.length === 0) {
    throw new UsageError('no key given: which row?', {
      hint: 'give the primary-key value, e.g. `history subscribers 42`; for a composite key `7,42` in key-column order, or --key col=value per column',
    });
  }
  const seen = new Set<string>();
  const pairs: Array<readonly [string, string]> = [];
  for (const n of named) {
    const eq = n.indexOf('=');
    if (eq <= 0) {
      throw new UsageError(`--key ${n}: expected column=value`, {
        hint: 'e.g. --key tenant_id=7 (the value is everything after the first "=")',
      });
    }
    const column = n.slice(0, eq).trim();
    if (seen.has(column)) throw new UsageError(`--key ${column} is given twice`);
    seen.add(column);
    pairs.push([column, n.slice(eq + 1)]);
  }
  return { named: pairs };
}

/** Key column types compared numerically when looking for a key's chunk. */
export const INTEGER_TYPES: ReadonlySet<string> = new Set(['smallint', 'integer', 'bigint', 'oid']);
/** int2, int4, int8, oid: the type OIDs whose text form is a plain integer. */
const INTEGER_OIDS = new Set([20, 21, 23, 26]);

/**
 * The key values in key-column order, checked against the table's key. A
 * positional KEY is split at commas only for a composite key (a one-column
 * key takes the whole argument, commas included). Integer columns accept
 * any integer spelling and are normalised to PostgreSQL's (`042` → `42`);
 * other values must be given in their text form exactly (as `col::text`).
 */
export function resolveKey(
  spec: KeySpec,
  keyColumns: readonly string[],
  integer: readonly boolean[],
  tableLabel: string,
): string[] {
  const example = keyColumns.map((c) => `--key ${c}=…`).join(' ');
  let values: string[];
  if ('positional' in spec) {
    values = keyColumns.length === 1 ? [spec.positional] : spec.positional.split(',');
    if (values.length !== keyColumns.length) {
      throw new UsageError(
        `${tableLabel} has the key (${keyColumns.join(', ')}): expected ${keyColumns.length} comma-separated values, got ${values.length} in "${spec.positional}"`,
        { hint: `give them in that order, or by name: ${example}` },
      );
    }
  } else {
    const byName = new Map(spec.named);
    for (const [c] of spec.named) {
      if (!keyColumns.includes(c)) {
        throw new UsageError(
          `--key ${c}: "${c}" is not a key column of ${tableLabel}; its key is (${keyColumns.join(', ')})`,
          { hint: example },
        );
      }
    }
    const missing = keyColumns.filter((c) => !byName.has(c));
    if (missing.length > 0) {
      throw new UsageError(
        `${tableLabel} has the key (${keyColumns.join(', ')}): no value for ${missing.join(', ')}`,
        { hint: example },
      );
    }
    values = keyColumns.map((c) => byName.get(c)!);
  }
  return values.map((v, i) => {
    if (integer[i] !== true) return v;
    const t = v.trim();
    if (!/^[+-]?\d+$/.test(t)) {
      throw new UsageError(`${keyColumns[i]} of ${tableLabel} is an integer, not "${v}"`);
    }
    return BigInt(t).toString();
  });
}

// ---------------------------------------------------------------------------
// Finding a key in a snapshot

/**
 * Positions of the chunks of a snapshot's table that can hold `key`, in the
 * order to read them (keysByChunk leaves out those whose range excludes it;
 * a chunk whose first or last key is the key comes first). An empty list
 * means no chunk holds the key.
 */
export function candidateChunks(
  s: Pick<SnapTable, 'manifest' | 'table'>,
  key: readonly string[],
): number[] {
  const { table } = s;
  const holds = keysByChunk(
    s.manifest.schema as SchemaModel | undefined,
    table,
    new Set([key.map(encodeField).join('\t')]),
  );
  const bound = (b: ChunkRef['first']) =>
    b !== null && b.length === key.length && b.every((v, i) => v === key[i]);
  const exact: number[] = [];
  const maybe: number[] = [];
  table.chunks.forEach((c, i) => {
    if (holds(table, c).length === 0) return;
    if (bound(c.first) || bound(c.last)) exact.push(i);
    else maybe.push(i);
  });
  return [...exact, ...maybe];
}

/** The row of a chunk (COPY text lines, key columns first) whose key fields equal `key`, decoded; or undefined. */
export function findRowInChunk(content: Buffer, key: readonly string[]): Cell[] | undefined {
  let pos = 0;
  while (pos < content.length) {
    let nl = content.indexOf(0x0a, pos);
    if (nl < 0) nl = content.length;
    const keyEnd = endOfFields(content, pos, nl, key.length);
    const fields = splitFields(content.subarray(pos, keyEnd));
    let match = fields.length === key.length;
    for (let i = 0; match && i < key.length; i++) match = decodeField(fields[i]!) === key[i];
    if (match) return splitFields(content.subarray(pos, nl)).map(decodeField);
    pos = nl + 1;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Following the row through the change log

type State = 'unknown' | 'absent' | 'present';

interface Snap {
  readonly state: State;
  readonly row: ReadonlyMap<string, Cell>;
  readonly unknown: ReadonlySet<string>;
  readonly key: readonly Cell[];
}

/**
 * The row's state as changes are applied, one transaction at a time; pure
 * (no I/O), so every rule about matching and carrying values is here.
 */
class RowTracker {
  private state: State = 'unknown';
  private row = new Map<string, Cell>();
  private unknownCols = new Set<string>();
  private key: Cell[];
  private txStart: Snap | undefined;
  private ops: Array<Change['op']> = [];
  /** The old key of a row that moved into the followed key in this transaction. */
  private movedFrom: Cell[] | undefined;
  private readonly index = new WeakMap<object, Map<string, number>>();

  constructor(
    readonly keyColumns: readonly string[],
    /** The key asked for, normalised. */
    readonly requested: readonly string[],
  ) {
    this.key = [...requested];
  }

  get current(): State {
    return this.state;
  }

  get currentKey(): readonly Cell[] {
    return this.key;
  }

  /**
   * Sets the state from a snapshot (null: the snapshot does not hold the
   * key); before any change of a transaction touched the row.
   */
  start(row: ReadonlyMap<string, Cell> | null): void {
    this.state = row === null ? 'absent' : 'present';
    this.row = new Map(row ?? []);
    this.unknownCols = new Set();
  }

  /** A transaction begins (its state before is taken at its first change of the row). */
  begin(): void {
    this.txStart = undefined;
    this.ops = [];
    this.movedFrom = undefined;
  }

  /** True if the change touches the row: by its old identity, or (insert, update) by its new key. */
  concerns(c: Change): boolean {
    return this.match(c) !== undefined;
  }

  /** Applies a change of the row's table (changes that do not concern the row are ignored). */
  apply(c: Change): void {
    const how = this.match(c);
    if (how === undefined) return;
    this.txStart ??= this.snap();
    this.ops.push(c.op);
    if (c.op === 'delete' || c.op === 'truncate') {
      this.state = 'absent';
      return;
    }
    if (how === 'moved-in') {
      this.movedFrom = this.oldKey(c).map((v) => (v === undefined || v === 0 ? null : v));
    }
    const prev = this.state === 'present' ? this.row : undefined;
    const next = new Map<string, Cell>();
    const unknown = new Set<string>();
    c.columns.forEach(([name], i) => {
      const v = c.row?.[i];
      if (v === 0 || v === undefined) {
        // Unchanged TOASTed value: the server did not send it; the previous
        // version has it (or the old row, under REPLICA IDENTITY FULL).
        const o = c.old?.[i];
        if (prev?.has(name) === true && !this.unknownCols.has(name))
          next.set(name, prev.get(name)!);
        else if (o !== undefined && o !== 0) next.set(name, o);
        else {
          next.set(name, null);
          unknown.add(name);
        }
      } else next.set(name, v);
    });
    // Follow the row: its key is now the new row's (a column the change lacks keeps its value).
    this.key = this.keyColumns.map((k, i) => (next.has(k) ? next.get(k)! : this.key[i]!));
    this.state = 'present';
    this.row = next;
    this.unknownCols = unknown;
  }

  /** The version the transaction made, if it touched the row. */
  commit(tx: Transaction): RowVersion | undefined {
    const before = this.txStart;
    this.txStart = undefined;
    const last = this.ops[this.ops.length - 1];
    if (before === undefined || last === undefined) return undefined;
    const after = this.snap();
    const base = { time: normaliseTime(tx.commitTime), xid: tx.xid, lsn: lsnText(tx.commitLsn) };
    if (after.state !== 'present') {
      // Inserted and deleted within one transaction: never visible, no version.
      if (before.state === 'absent') return undefined;
      const op = last === 'truncate' ? 'truncate' : 'delete';
      if (before.state === 'unknown')
        return { ...base, op, key: after.key, row: null, changed: [] };
      return {
        ...base,
        op,
        key: after.key,
        row: null,
        changed: [...before.row.keys()],
        old: Object.fromEntries(before.row),
      };
    }
    const present = before.state === 'present';
    const from = present ? before.key : this.movedFrom;
    const keyChangedFrom =
      from !== undefined && !sameCells(from, after.key) ? { keyChangedFrom: from } : {};
    const changed = present ? changedColumns(before.row, after.row) : [...after.row.keys()];
    const had = changed.filter((c) => before.row.has(c));
    const old = present
      ? { old: Object.fromEntries(had.map((c) => [c, before.row.get(c) ?? null])) }
      : {};
    // Columns added or dropped in between (schema changes): no old, or no new, value.
    const added = present ? changed.filter((c) => !before.row.has(c)) : [];
    const dropped = changed.filter((c) => !after.row.has(c));
    const unknown = after.unknown.size > 0 ? { unknown: [...after.unknown] } : {};
    return {
      ...base,
      // The last change decides (a delete and re-insert in one transaction is an insert).
      op: last === 'insert' ? 'insert' : 'update',
      key: after.key,
      ...keyChangedFrom,
      row: Object.fromEntries(after.row),
      changed,
      ...old,
      ...(added.length > 0 ? { added } : {}),
      ...(dropped.length > 0 ? { dropped } : {}),
      ...unknown,
    };
  }

  private snap(): Snap {
    return {
      state: this.state,
      row: new Map(this.row),
      unknown: new Set(this.unknownCols),
      key: [...this.key],
    };
  }

  /**
   * How a change concerns the row: by its old identity (`old`), by the new
   * key of an insert (`new`), or as an update that moves another row into
   * the followed key while no row holds it (`moved-in`).
   */
  private match(c: Change): 'old' | 'new' | 'moved-in' | undefined {
    if (c.op === 'truncate') return this.state === 'absent' ? undefined : 'old';
    if (c.op === 'insert') return this.sameKey(this.newKey(c)) ? 'new' : undefined;
    if (this.matchesOld(c)) return 'old';
    if (c.op === 'update' && this.state !== 'present' && this.sameKey(this.newKey(c))) {
      return 'moved-in';
    }
    return undefined;
  }

  private indexOf(c: Change): Map<string, number> {
    let m = this.index.get(c.columns);
    if (m === undefined) {
      m = new Map(c.columns.map(([name], i) => [name, i]));
      this.index.set(c.columns, m);
    }
    return m;
  }

  /** The key columns' values in the new row (unchanged TOASTed key values: the old ones). */
  private newKey(c: Change): Array<ChangeValue | undefined> {
    const idx = this.indexOf(c);
    const old = this.oldKey(c);
    return this.keyColumns.map((k, i) => {
      const at = idx.get(k);
      const v = at === undefined ? undefined : c.row?.[at];
      return v === 0 ? old[i] : v;
    });
  }

  /**
   * The key columns' values before an update or delete: from the old key
   * (sent when the key changed, and for deletes), the old row (REPLICA
   * IDENTITY FULL), else the new row (an update that kept its key).
   * undefined where the change does not carry a key column.
   */
  private oldKey(c: Change): Array<ChangeValue | undefined> {
    const idx = this.indexOf(c);
    return this.keyColumns.map((k) => {
      const at = idx.get(k);
      if (at === undefined) return undefined;
      if (c.key !== null) return c.columns[at]![3] ? c.key[at] : undefined;
      if (c.old !== null) return c.old[at];
      return c.op === 'update' ? c.row?.[at] : undefined;
    });
  }

  private matchesOld(c: Change): boolean {
    const old = this.oldKey(c);
    if (old.every((v) => v !== undefined)) return this.sameKey(old);
    // The change identifies rows by other columns (a replica identity index
    // that is not the key): compare those with the row as we know it.
    if (this.state !== 'present' || c.key === null) return false;
    let any = false;
    for (let i = 0; i < c.columns.length; i++) {
      const [name, , , isKey] = c.columns[i]!;
      if (!isKey) continue;
      if (!this.row.has(name) || this.unknownCols.has(name)) return false;
      if (this.row.get(name) !== c.key[i]) return false;
      any = true;
    }
    return any;
  }

  private sameKey(values: ReadonlyArray<ChangeValue | undefined>): boolean {
    return this.key.every((k, i) => values[i] === k);
  }
}

function sameCells(a: readonly Cell[], b: readonly Cell[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Columns whose value differs, in the new row's order, then columns that went away. */
function changedColumns(
  before: ReadonlyMap<string, Cell>,
  after: ReadonlyMap<string, Cell>,
): string[] {
  const out: string[] = [];
  for (const [k, v] of after) if (!before.has(k) || before.get(k) !== v) out.push(k);
  for (const k of before.keys()) if (!after.has(k)) out.push(k);
  return out;
}

// ---------------------------------------------------------------------------
// The repository side

/** The targets with a change log in a repository: scope and the first log's description. */
export async function changeLogs(
  storage: Storage,
): Promise<Array<{ scope: string; info: CaptureInfo }>> {
  const out: Array<{ scope: string; info: CaptureInfo }> = [];
  for await (const o of storage.list('changes/')) {
    // (A target's later logs, changes/<scope>.<n>/, are found from its first.)
    const m = /^changes\/([^/.]+)\/capture\.json$/.exec(o.key);
    if (m === null) continue;
    const info = await new ChangeLog(storage, m[1]!).info();
    if (info !== undefined) out.push({ scope: m[1]!, info });
  }
  return out.sort((a, b) => (a.info.target < b.info.target ? -1 : 1));
}

/** The change log a command reads, among the target's logs (`logs[index]`). */
export interface SelectedLog {
  readonly log: ChangeLog;
  readonly info: CaptureInfo;
  /** Every log of the target, oldest first (one, unless `capture --new-log` began more). */
  readonly logs: readonly TargetLog[];
  readonly index: number;
}

/**
 * The change log a command reads: the named target's, or the only one in
 * the repository; of the target's logs, the one that holds `at` (an ISO
 * time), else the newest. `purpose` names the command in messages ("row
 * history").
 */
export async function selectLog(
  storage: Storage,
  target: string | undefined,
  purpose: string,
  at?: string,
): Promise<SelectedLog> {
  const pick = (logs: TargetLog[]): SelectedLog => {
    const index = at === undefined ? logs.length - 1 : logForTime(logs, at);
    return { ...logs[index]!, logs, index };
  };
  if (target !== undefined) {
    // The target's log is where capture puts it: read it there, without
    // listing every log's segments to find the capture.json files.
    const logs = await targetLogs(storage, runScope(target));
    if (logs.length > 0) return pick(logs);
  }
  const all = await changeLogs(storage);
  const names = all.map((l) => l.info.target).join(', ');
  if (target !== undefined) {
    const l = all.find((x) => x.info.target === target || x.scope === runScope(target));
    if (l === undefined) {
      throw new UsageError(
        `target "${target}" has no change log in this repository${all.length > 0 ? ` (change logs: ${names})` : ''}`,
        { hint: `start one with \`flashback capture ${target}\`` },
      );
    }
    return pick(await targetLogs(storage, l.scope));
  }
  if (all.length === 0) {
    throw new UsageError(`no change log in this repository: ${purpose} needs one`, {
      hint: 'start capture with `flashback capture TARGET`',
    });
  }
  if (all.length > 1) {
    throw new UsageError(`several targets have a change log (${names}): which one?`, {
      hint: `give --target, e.g. --target ${all[0]!.info.target}`,
    });
  }
  return pick(await targetLogs(storage, all[0]!.scope));
}

/** The tables of one moment and, when known, its schema model: a snapshot's or a recorded schema change's. */
export interface SchemaView {
  readonly tables: ReadonlyArray<{ readonly schema: string; readonly name: string }>;
  readonly schema?: SchemaModel | undefined;
  /** The moment: a snapshot's consistent time, a schema change's commit time (six-digit form). */
  readonly at: string;
  /** Its position: a snapshot's LSN, the end LSN of a schema change's transaction. */
  readonly lsn: bigint;
  /** The tables' OIDs on the source, by schema.name, where known (snapshots by older versions lack them). */
  readonly oids: ReadonlyMap<string, number>;
}

/**
 * The snapshots' schemas and the schemas capture recorded after each schema
 * change in `log` (src/capture/schema-events.ts), in LSN order: what a
 * table name has meant. A partition, or a partitioned table, created since
 * the newest snapshot is known from the records alone. Records of a moment
 * capture could not read (no model) are left out. Every record is read:
 * schema changes are few, and the log starts at the oldest snapshot.
 */
export async function schemaViews(
  log: ChangeLog,
  manifests: readonly SnapshotManifest[],
): Promise<SchemaView[]> {
  const all: SchemaView[] = manifests.map((m) => ({
    tables: m.tables,
    schema: (m as SnapshotManifest<SchemaModel>).schema,
    at: normaliseTime(m.consistentAt ?? m.finishedAt),
    lsn: lsnValue(m.lsn),
    oids: new Map(
      m.tables.flatMap((t) => (t.oid === undefined ? [] : [[label(t.schema, t.name), t.oid]])),
    ),
  }));
  for (const ref of await log.schemaRecords()) {
    const r = await log.readSchema<SchemaModel, TableShape>(ref);
    if (r.model === null) continue;
    const oids = new Map(Object.entries(r.shapes ?? {}).map(([k, shape]) => [k, shape.oid]));
    const at = normaliseTime(r.commitTime);
    all.push({ tables: r.model.tables, schema: r.model, at, lsn: ref.endLsn, oids });
  }
  // Stable: a snapshot and a record at the same LSN keep the snapshots-first order.
  return all.sort((a, b) => (a.lsn < b.lsn ? -1 : a.lsn > b.lsn ? 1 : 0));
}

/** A snapshot manifest holding the table, with the table's entry. */
interface SnapTable {
  readonly manifest: SnapshotManifest;
  readonly table: TableSnapshot;
  readonly lsn: bigint;
  /**
   * Server time by which everything in the snapshot had committed
   * (`consistentAt`; finishedAt in manifests without it), six-digit form.
   */
  readonly consistent: string;
}

function tableOf(m: SnapshotManifest, schema: string, name: string): TableSnapshot | undefined {
  return m.tables.find((t) => t.schema === schema && t.name === name);
}

/** Column names of the table in the schema model (attnum order), when the manifest has them. */
function modelColumns(m: SnapshotManifest, schema: string, name: string) {
  const model = m.schema as Partial<SchemaModel> | null | undefined;
  return model?.tables?.find((t) => t.schema === schema && t.name === name)?.columns;
}

function label(schema: string, name: string): string {
  return `${schema}.${name}`;
}

/**
 * Every version of one row, oldest first (see the module comment and
 * docs/CAPTURE.md). Under a shared lock: a prune cannot remove the log or
 * snapshots it is reading.
 */
export async function rowHistory(o: RowHistoryOptions): Promise<RowHistory> {
  return whileShared(o.repo.storage, `history ${o.table}`, () => readRowHistory(o));
}

async function readRowHistory(o: RowHistoryOptions): Promise<RowHistory> {
  if (o.since !== undefined && o.until !== undefined && o.since > o.until) {
    throw new UsageError(`--since (${o.since}) is after --until (${o.until})`);
  }
  // Of a target's several logs, those the window reaches: from the one that
  // holds --since (else the first) to the one that holds --until (else the
  // newest), each read as its own history.
  const { logs, index: last } = await selectLog(o.repo.storage, o.target, 'row history', o.until);
  const first = o.since === undefined ? 0 : Math.min(last, logForTime(logs, o.since));
  if (first === last) return readLogHistory(o, logs, last);
  const read: Array<{ k: number; h?: RowHistory; none?: RowNotFoundError }> = [];
  for (let k = first; k <= last; k++) {
    try {
      read.push({ k, h: await readLogHistory(o, logs, k) });
    } catch (err) {
      // The row may be in one log and not another (inserted after the
      // failover, deleted before it; a log emptied by prune holds nothing).
      if (!(err instanceof RowNotFoundError)) throw err;
      read.push({ k, none: err });
    }
  }
  const found = read.filter((r) => r.h !== undefined).map((r) => r.h!);
  const newest = found.at(-1);
  if (newest === undefined) throw read.at(-1)!.none!;
  const parts: HistoryPart[] = read.map(({ k, h, none }) => ({
    log: logs[k]!.log.number,
    logStart: logs[k]!.info.startLsn,
    snapshot: h?.snapshot ?? null,
    versions: h?.versions.length ?? 0,
    ...(k > first ? { gapBefore: gapBetween(logs, k - 1) } : {}),
    ...(none !== undefined ? { none: none.message } : {}),
  }));
  return {
    ...newest,
    notes: read.flatMap(({ k, h }) =>
      (h?.notes ?? []).map((n) => `log ${logs[k]!.log.number}: ${n}`),
    ),
    versions: read.flatMap(({ k, h }) =>
      (h?.versions ?? []).map((v) => ({ ...v, log: logs[k]!.log.number })),
    ),
    parts,
  };
}

/**
 * The row's history in one of the target's change logs (`logs[index]`):
 * from that log's snapshots and changes only.
 */
async function readLogHistory(
  o: RowHistoryOptions,
  logs: readonly TargetLog[],
  index: number,
): Promise<RowHistory> {
  const storage = o.repo.storage;
  const { log, info } = logs[index]!;
  const logStart = lsnValue(info.startLsn);
  const manifests = snapshotsOfLog(logs, index, await SnapshotStore.of(o.repo).all(info.target));
  const views = await schemaViews(log, manifests);
  const name = resolveTableName(o.table, (n) => inSnapshots(views, n));
  const partitions = partitionsIn(views, name);
  if (partitions !== undefined) {
    // (A row's partition follows its partition key, which the user knows; an
    // update that moves it is a delete from one partition and an insert into another.)
    const list = partitions.map((p) => `${p.schema}.${p.name}`);
    throw new UsageError(
      `${o.table} is a partitioned table: its rows are in its partitions, and a row's history is read from the partition that holds it`,
      {
        hint: `give the partition${list.length === 0 ? ' (it has none)' : `: ${list.slice(0, 8).join(', ')}${list.length > 8 ? ', …' : ''}`}`,
      },
    );
  }

  // The table: as the newest snapshot or recorded schema (up to --until)
  // that has a table of that name has it; else as named (public by default).
  // Followed by its OID where known: a table renamed (or one whose name
  // another took, as a migration swapping tables does) keeps its history.
  let schema = name.schema;
  let oid: number | undefined;
  for (const v of [...views].reverse()) {
    if (o.until !== undefined && v.at > o.until) continue;
    const hits = v.tables.filter(
      (t) => t.name === name.name && (schema === undefined || t.schema === schema),
    );
    if (hits.length > 1) {
      throw new UsageError(
        `table "${name.name}" is in several schemas (${hits.map((t) => t.schema).join(', ')})`,
        { hint: `name it with its schema, e.g. ${hits[0]!.schema}.${name.name}` },
      );
    }
    if (hits.length === 1) {
      schema = hits[0]!.schema;
      oid = v.oids.get(label(schema, name.name));
      break;
    }
  }
  const notes: string[] = [];
  if (schema === undefined) {
    schema = 'public';
    notes.push(
      `table "${name.name}" is in no snapshot of "${info.target}"; looking for public.${name.name} in the change log`,
    );
  }
  const tableLabel = label(schema, name.name);
  /** The table in a snapshot: by OID (when both know it), else by name. */
  const tableIn = (m: SnapshotManifest): TableSnapshot | undefined =>
    oid !== undefined && m.tables.some((t) => t.oid !== undefined)
      ? m.tables.find((t) => t.oid === oid)
      : tableOf(m, schema!, name.name);
  const definedIn = [...manifests].reverse().find((m) => tableIn(m) !== undefined);
  if (oid !== undefined) {
    const names = [
      ...new Set(views.flatMap((v) => [...v.oids].filter(([, x]) => x === oid).map(([k]) => k))),
    ];
    if (names.length > 1) {
      notes.push(
        `the table was renamed (${names.join(' → ')}): its history is followed under each name, by the table's OID (${oid})`,
      );
    }
  }
  /** Whether a change is of this table: by the source's OID, when the log and the table have one. */
  const ours = (c: Change): boolean =>
    oid !== undefined && c.relid !== undefined && c.relid !== 0
      ? c.relid === oid
      : c.schema === schema && c.table === name.name;

  // Key columns and their types: from the snapshot, else from the log's relation record.
  let tracker: RowTracker | undefined;
  let integer: boolean[] = [];
  if (definedIn !== undefined) {
    const t = tableIn(definedIn)!;
    if (t.keyKind === 'none' || t.key.length === 0) {
      throw new UsageError(
        `${tableLabel} has neither a primary key nor a replica identity index: its rows have no key to follow`,
        { hint: 'row history needs a key; add a primary key to the table' },
      );
    }
    const types = modelColumns(definedIn, t.schema, t.name);
    integer = t.key.map((k) => INTEGER_TYPES.has(types?.find((c) => c.name === k)?.type ?? ''));
    tracker = new RowTracker(t.key, resolveKey(o.key, t.key, integer, tableLabel));
  }
  const keyFromLog = (c: Change): RowTracker => {
    const cols = c.columns.filter((x) => x[3]);
    if (cols.length === 0) {
      throw new UsageError(
        `${tableLabel} has no key in the change log (replica identity NOTHING or no key): its rows cannot be followed`,
      );
    }
    integer = cols.map((x) => INTEGER_OIDS.has(x[1]));
    const names = cols.map((x) => x[0]);
    return new RowTracker(names, resolveKey(o.key, names, integer, tableLabel));
  };

  // Snapshots that hold the table and are not after the window's end, by LSN.
  const snaps: SnapTable[] = manifests
    .map((m) => ({
      manifest: m,
      table: tableIn(m),
      lsn: lsnValue(m.lsn),
      consistent: normaliseTime(m.consistentAt ?? m.finishedAt),
    }))
    .filter((s): s is SnapTable => s.table !== undefined)
    .filter((s) => o.until === undefined || s.consistent <= o.until)
    .sort((a, b) => (a.lsn < b.lsn ? -1 : a.lsn > b.lsn ? 1 : 0));
  // The base: the newest snapshot that hides no change the log has: one at or
  // before the log's start (everything after it is in the log), or one that
  // was consistent before --since (everything it holds is before the window).
  const base = [...snaps]
    .reverse()
    .find((s) => s.lsn <= logStart || (o.since !== undefined && s.consistent < o.since));
  const gapped = base !== undefined && base.lsn < logStart;
  // Used only while the row's state is unknown: snapshots the log covers, by LSN.
  const later = snaps.filter(
    (s) => s !== base && s.lsn >= logStart && (base === undefined || s.lsn > base.lsn),
  );

  // The snapshot the starting state came from (a holder: set inside load()).
  const start: { snapshot: RowHistory['snapshot'] } = { snapshot: null };
  const versions: RowVersion[] = [];
  // A version before --since: the one in effect when the window opens.
  let pending: RowVersion | undefined;
  let lastSeen: RowVersion | undefined;
  const emit = (v: RowVersion, pre: boolean): void => {
    lastSeen = v;
    if (pre) {
      pending = v;
      return;
    }
    if (versions.length === 0 && pending !== undefined && pending.row !== null) {
      versions.push(asFirst(pending));
    }
    versions.push(versions.length === 0 ? asFirst(v) : v);
  };
  const chunkStore = new ChunkStore(storage);
  const load = async (s: SnapTable, t: RowTracker): Promise<void> => {
    const key = t.currentKey as string[];
    let found: Cell[] | undefined;
    let read = 0;
    for (const i of candidateChunks(s, key)) {
      read++;
      const ref = s.table.chunks[i]!;
      const content = await chunkStore.get(ref.id).catch((err: unknown) => {
        if (!(err instanceof ChunkError)) throw err;
        throw new DamagedError(
          'history.chunk',
          `${err.message} (snapshot ${s.manifest.id}, ${tableLabel}, chunk ${i + 1} of ${s.table.chunks.length})`,
          { hint: err.hint, cause: err },
        );
      });
      found = findRowInChunk(content, key);
      if (found !== undefined) break;
    }
    start.snapshot = {
      id: s.manifest.id,
      lsn: s.manifest.lsn,
      chunksRead: read,
      chunks: s.table.chunks.length,
    };
    if (s.lsn < logStart) {
      notes.push(
        `snapshot ${s.manifest.id} (LSN ${s.manifest.lsn}) was taken before the change log began (LSN ${info.startLsn}): a change of this row committed between the two is not in the log, so a version may be missing there`,
      );
    }
    let row: Map<string, Cell> | null = null;
    if (found !== undefined) {
      const values = found;
      const byName = new Map(s.table.columns.map((c, i) => [c, values[i] ?? null]));
      // In the table's column order (chunks hold key columns first), as the change log has it.
      const order = modelColumns(s.manifest, s.table.schema, s.table.name)
        ?.map((c) => c.name)
        .filter((c) => byName.has(c));
      const names =
        order !== undefined && order.length === byName.size ? order : [...byName.keys()];
      row = new Map(names.map((c) => [c, byName.get(c) ?? null]));
    }
    t.start(row);
    if (row !== null) {
      emit(
        {
          time: normaliseTime(s.manifest.consistentAt ?? s.manifest.startedAt),
          xid: null,
          lsn: s.manifest.lsn,
          op: 'snapshot',
          snapshot: s.manifest.id,
          key: [...key],
          row: Object.fromEntries(row),
          changed: [...row.keys()],
        },
        o.since !== undefined && s.consistent < o.since,
      );
    }
  };

  if (tracker !== undefined && base !== undefined && !gapped) await load(base, tracker);
  let crossed = 0;
  const fromLsn = base !== undefined ? base.lsn : logStart;
  for await (const tx of readTransactions(log, { fromLsn, untilTime: o.until })) {
    while (crossed < later.length && later[crossed]!.lsn <= tx.commitLsn) crossed++;
    tracker?.begin();
    for (const c of tx.changes) {
      if (!ours(c)) continue;
      if (tracker === undefined) {
        tracker = keyFromLog(c);
        tracker.begin();
      }
      if (tracker.current === 'unknown' && c.op !== 'insert' && tracker.concerns(c)) {
        // The row's first change: its state before comes from the newest
        // snapshot the log has passed (nothing touched the row since), else the base.
        const s = crossed > 0 ? later[crossed - 1] : base;
        if (s !== undefined) await load(s, tracker);
      }
      tracker.apply(c);
    }
    const v = tracker?.commit(tx);
    if (v === undefined) continue;
    if (v.keyChangedFrom !== undefined) {
      notes.push(
        `the key changed from (${v.keyChangedFrom.join(', ')}) to (${v.key.join(', ')}) in transaction ${v.xid} at ${v.time}: the history follows the row`,
      );
    }
    emit(v, o.since !== undefined && v.time < o.since);
  }
  if (tracker !== undefined && tracker.current === 'unknown') {
    // Untouched by the log: its state is what the newest usable snapshot holds.
    const s = later[later.length - 1] ?? base;
    if (s !== undefined) await load(s, tracker);
  }
  if (versions.length === 0 && pending !== undefined && pending.row !== null) {
    versions.push(asFirst(pending));
  }

  if (versions.length === 0 || tracker === undefined) {
    throw notFound(tableLabel, tracker, o, {
      target: info.target,
      logStart: info.startLsn,
      snapshot: start.snapshot?.id,
      lastSeen,
    });
  }
  return {
    target: info.target,
    schema,
    table: name.name,
    keyColumns: tracker.keyColumns,
    key: tracker.requested,
    logStart: info.startLsn,
    snapshot: start.snapshot,
    notes,
    versions,
  };
}

/** The error for a row with no version in the window, saying where Flashback looked. */
function notFound(
  tableLabel: string,
  tracker: RowTracker | undefined,
  o: RowHistoryOptions,
  seen: {
    target: string;
    logStart: string;
    snapshot: string | undefined;
    lastSeen: RowVersion | undefined;
  },
): RowNotFoundError {
  const keyText = tracker === undefined ? describeSpec(o.key) : tracker.requested.join(', ');
  const window =
    o.since !== undefined || o.until !== undefined
      ? ` between ${o.since ?? 'the start of the log'} and ${o.until ?? 'now'}`
      : '';
  const where =
    seen.snapshot !== undefined
      ? `in snapshot ${seen.snapshot} or in the change log after it`
      : `in the change log of "${seen.target}" (from LSN ${seen.logStart}) or in a snapshot`;
  const last = seen.lastSeen;
  const gone =
    last !== undefined && last.row === null
      ? `; it was ${last.op === 'truncate' ? 'truncated' : 'deleted'} at ${last.time} (transaction ${last.xid})`
      : '';
  const hint =
    tracker === undefined
      ? `the table is in no snapshot and has no change in the log: check its name (\`flashback show latest\` lists the tables of the newest snapshot)`
      : `check the key (values as \`SELECT ${tracker.keyColumns.map((k) => `${k}::text`).join(', ')}\` prints them)${window === '' ? '' : ' and the time window'}`;
  return new RowNotFoundError(
    `no version of ${tableLabel} with key (${keyText})${window} ${where}${gone}`,
    { hint },
  );
}

function describeSpec(spec: KeySpec): string {
  return 'positional' in spec
    ? spec.positional
    : spec.named.map(([c, v]) => `${c}=${v}`).join(', ');
}

/** The first version shown: every column counts as changed, no old values. */
function asFirst(v: RowVersion): RowVersion {
  const { old: _old, ...rest } = v;
  return { ...rest, changed: v.row === null ? [] : Object.keys(v.row) };
}
