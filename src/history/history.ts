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

import { tableKey } from '../backup/backup.js';
import { parseSchemaEvent } from '../capture/schema-events.js';
import {
  DamagedError,
  ExitCode,
  FlashbackError,
  type FlashbackErrorOptions,
  UsageError,
} from '../errors.js';
import { decodeField, encodeField, endOfFields, splitFields } from '../pg/copy-text.js';
import type { SchemaModel, TableModel } from '../pg/schema/model.js';
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
  type SchemaEventRef,
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
  type KeyKind,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { keysByChunk } from '../restore/key-chunks.js';
import type { Storage } from '../storage/storage.js';
import { normaliseTime } from './time.js';

/** A column value in its PostgreSQL text form, or null. */
export type Cell = string | null;

/**
 * What happened to the row in a version; `snapshot` is the starting state
 * read from a snapshot, `drop` the row's table dropped (DROP TABLE).
 */
export type VersionOp = 'snapshot' | 'insert' | 'update' | 'delete' | 'truncate' | 'drop';

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
  /** Columns renamed since the previous version: new name to the name it had (listed in `changed`). */
  readonly renamed?: Readonly<Record<string, string>>;
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
  keyColumns: readonly string[] = s.table.key,
): number[] {
  const { table } = s;
  // A key the snapshot did not order its rows by (one added since): any chunk.
  if (!sameNames(table.key, keyColumns)) return table.chunks.map((_, i) => i);
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

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The row of a chunk (COPY text lines) whose key fields equal `key`,
 * decoded; or undefined. The key fields are the first ones (a snapshot's
 * key columns come first), or at `positions` (a key the snapshot did not
 * order by).
 */
export function findRowInChunk(
  content: Buffer,
  key: readonly string[],
  positions?: readonly number[],
): Cell[] | undefined {
  let pos = 0;
  // Key fields elsewhere than first: each line split whole.
  const scattered = positions?.some((p, i) => p !== i) === true ? positions : undefined;
  while (pos < content.length) {
    let nl = content.indexOf(0x0a, pos);
    if (nl < 0) nl = content.length;
    if (scattered !== undefined) {
      const fields = splitFields(content.subarray(pos, nl));
      if (scattered.every((p, i) => fields[p] !== undefined && decodeField(fields[p]) === key[i]))
        return fields.map(decodeField);
      pos = nl + 1;
      continue;
    }
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
  private ops: Array<Change['op'] | 'drop'> = [];
  /** The old key of a row that moved into the followed key in this transaction. */
  private movedFrom: Cell[] | undefined;
  /** Columns of the row renamed since its previous version: current name to the name it had then. */
  private renamedNow = new Map<string, string>();
  private readonly index = new WeakMap<object, Map<string, number>>();

  constructor(
    readonly keyColumns: readonly string[],
    /** The key asked for, normalised. */
    readonly requested: readonly string[],
    /** The table's column renames, new name to the name before (columnRenames). */
    private readonly renames: ReadonlyMap<string, string> = new Map(),
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

  /**
   * Columns were renamed (old name to new, all at once: a swap is two
   * pairs): the row as known, and its state at the transaction's start, take
   * the new names; the next version shows them as renamed.
   */
  renameColumns(pairs: ReadonlyMap<string, string>): void {
    if (pairs.size === 0) return;
    const rename = <T>(m: ReadonlyMap<string, T>): Map<string, T> =>
      new Map([...m].map(([k, v]) => [pairs.get(k) ?? k, v]));
    this.row = rename(this.row);
    this.unknownCols = new Set([...this.unknownCols].map((k) => pairs.get(k) ?? k));
    if (this.txStart !== undefined) {
      this.txStart = {
        ...this.txStart,
        row: rename(this.txStart.row),
        unknown: new Set([...this.txStart.unknown].map((k) => pairs.get(k) ?? k)),
      };
    }
    const next = new Map<string, string>();
    for (const [now, was] of this.renamedNow) next.set(pairs.get(now) ?? now, was);
    for (const [was, now] of pairs) if (!this.renamedNow.has(was)) next.set(now, was);
    for (const [now, was] of next) if (now === was) next.delete(now);
    this.renamedNow = next;
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
    // Renames the log's schema events did not announce, found from the
    // schema views: the row takes the change's names first.
    if (prev !== undefined) this.renameColumns(this.unannounced(c, prev));
    const known = this.state === 'present' ? this.row : undefined;
    c.columns.forEach(([name], i) => {
      const v = c.row?.[i];
      if (v === 0 || v === undefined) {
        // Unchanged TOASTed value: the server did not send it; the previous
        // version has it (or the old row, under REPLICA IDENTITY FULL).
        const o = c.old?.[i];
        if (known?.has(name) === true && !this.unknownCols.has(name))
          next.set(name, known.get(name)!);
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

  /** The row's table was dropped in this transaction (after its changes). */
  drop(): void {
    // (Unknown: no snapshot or change says the row existed; nothing to show.)
    if (this.state !== 'present') return;
    this.txStart ??= this.snap();
    this.ops.push('drop');
    this.state = 'absent';
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
      const op = last === 'truncate' || last === 'drop' ? last : 'delete';
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
    // The state before is under the current column names (renameColumns):
    // renamed columns are compared with their old selves and marked.
    const renamed = present ? [...this.renamedNow].filter(([now]) => after.row.has(now)) : [];
    this.renamedNow = new Map();
    const prior = before.row;
    const renamedSame = (c: string): boolean => renamed.some(([now]) => now === c);
    const changed = present ? changedColumns(prior, after.row) : [...after.row.keys()];
    for (const [now] of renamed) if (!changed.includes(now)) changed.push(now);
    // (A renamed column whose value stayed has no old value to show.)
    const had = changed.filter(
      (c) => prior.has(c) && !(renamedSame(c) && prior.get(c) === after.row.get(c)),
    );
    const old = present
      ? { old: Object.fromEntries(had.map((c) => [c, prior.get(c) ?? null])) }
      : {};
    // Columns added or dropped in between (schema changes): no old, or no new, value.
    const added = present ? changed.filter((c) => !prior.has(c)) : [];
    const dropped = changed.filter((c) => !after.row.has(c));
    const unknown = after.unknown.size > 0 ? { unknown: [...after.unknown] } : {};
    // An insert when the row did not exist before the transaction (inserted,
    // then perhaps updated, in it) or was deleted in it and inserted again.
    const removed = Math.max(
      this.ops.lastIndexOf('delete'),
      this.ops.lastIndexOf('truncate'),
      this.ops.lastIndexOf('drop'),
    );
    const inserted = this.ops.lastIndexOf('insert');
    const created = inserted > removed && (before.state !== 'present' || removed >= 0);
    return {
      ...base,
      op: created ? 'insert' : 'update',
      key: after.key,
      ...keyChangedFrom,
      row: Object.fromEntries(after.row),
      changed,
      ...old,
      ...(added.length > 0 ? { added } : {}),
      ...(dropped.length > 0 ? { dropped } : {}),
      ...(renamed.length > 0 ? { renamed: Object.fromEntries(renamed) } : {}),
      ...unknown,
    };
  }

  /**
   * Columns of the change that the previous version has under an earlier
   * name: the change lacks that name and the renames lead back to it
   * (through several renames, if need be). The previous name to the new.
   */
  private unannounced(c: Change, prev: ReadonlyMap<string, Cell>): Map<string, string> {
    const out = new Map<string, string>();
    if (this.renames.size === 0) return out;
    const names = this.indexOf(c);
    for (const [name] of c.columns) {
      if (prev.has(name)) continue;
      let was = this.renames.get(name);
      const seen = new Set([name]);
      while (was !== undefined && !seen.has(was) && !prev.has(was)) {
        seen.add(was);
        was = this.renames.get(was);
      }
      if (was !== undefined && prev.has(was) && !names.has(was)) out.set(was, name);
    }
    return out;
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

  /** Where a column is among `columns` (a snapshot's): by its name, else an earlier one; -1 if absent. */
  positionIn(columns: readonly string[], column: string): number {
    return this.position(new Map(columns.map((c, i) => [c, i])), column) ?? -1;
  }

  /** Where a column is in a change: by its name, else by an earlier name (a change from before a rename). */
  private position(idx: ReadonlyMap<string, number>, column: string): number | undefined {
    let name: string | undefined = column;
    for (let hops = 0; name !== undefined && hops < 64; hops++) {
      const at = idx.get(name);
      if (at !== undefined) return at;
      name = this.renames.get(name);
    }
    return undefined;
  }

  /** The key columns' values in the new row (unchanged TOASTed key values: the old ones). */
  private newKey(c: Change): Array<ChangeValue | undefined> {
    const idx = this.indexOf(c);
    const old = this.oldKey(c);
    return this.keyColumns.map((k, i) => {
      const at = this.position(idx, k);
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
      const at = this.position(idx, k);
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

/** A snapshot's table's column names by attnum, when it recorded them. */
function startColumns(t: TableSnapshot | undefined): Map<number, string> | undefined {
  if (t?.attnums === undefined) return undefined;
  return new Map(t.columns.map((c, i) => [t.attnums![i]!, c]));
}

/** What a schema event in the log says about the followed table. */
type TableEvent =
  /** Its columns after a DDL command: attnum to name (dropped ones left out). */
  | { readonly at: number; readonly kind: 'columns'; readonly columns: ReadonlyMap<number, string> }
  /** It was dropped. */
  | { readonly at: number; readonly kind: 'drop' };

/**
 * A transaction's schema events (src/capture/schema-events.ts) that concern
 * the table, in order, each with the number of the transaction's changes
 * before it: by the table's OID when known, else by name.
 */
function tableEvents(
  events: readonly SchemaEventRef[] | undefined,
  oid: number | undefined,
  schema: string,
  name: string,
): TableEvent[] {
  const out: TableEvent[] = [];
  const isOurs = (t: { oid: number; schema: string; name: string }): boolean =>
    oid !== undefined ? t.oid === oid : t.schema === schema && t.name === name;
  for (const e of events ?? []) {
    let event: ReturnType<typeof parseSchemaEvent>;
    try {
      event = parseSchemaEvent(e.event);
    } catch {
      continue; // (A damaged event: readers of the schema refuse it; history does not need it.)
    }
    if (event.kind === 'drop' && event.tables.some(isOurs)) out.push({ at: e.at, kind: 'drop' });
    if (event.kind !== 'ddl') continue;
    const t = event.tables.find(isOurs);
    if (t === undefined) continue;
    const columns = new Map(t.columns.filter((c) => !c[3]).map((c) => [c[0], c[1]] as const));
    out.push({ at: e.at, kind: 'columns', columns });
  }
  return out;
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
  /** Each table's column attnums on the source (column name to attnum), by schema.name, where known. */
  readonly attnums?: ReadonlyMap<string, Readonly<Record<string, number>>>;
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
    attnums: new Map(
      m.tables.flatMap((t) =>
        t.attnums === undefined
          ? []
          : [
              [
                label(t.schema, t.name),
                Object.fromEntries(t.columns.map((c, i) => [c, t.attnums![i]!])),
              ],
            ],
      ),
    ),
  }));
  for (const ref of await log.schemaRecords()) {
    const r = await log.readSchema<SchemaModel, TableShape>(ref);
    if (r.model === null) continue;
    const oids = new Map(Object.entries(r.shapes ?? {}).map(([k, shape]) => [k, shape.oid]));
    const attnums = new Map(Object.entries(r.shapes ?? {}).map(([k, shape]) => [k, shape.attnums]));
    const at = normaliseTime(r.commitTime);
    all.push({ tables: r.model.tables, schema: r.model, at, lsn: ref.endLsn, oids, attnums });
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

/** A table's key as one schema view has it. */
interface KeyDef {
  readonly key: readonly string[];
  readonly kind: KeyKind;
  /** The table's columns, with types, when the view has its model. */
  readonly columns: TableModel['columns'] | undefined;
  /** The view's moment. */
  readonly at: string;
}

/**
 * The table's key in the newest schema view (a snapshot's or a recorded
 * schema change's) at or before `until` that has the table: by OID where
 * the view knows OIDs and the table's is known, else by name. A snapshot
 * says how it keyed the table; a recorded schema, its primary key, else
 * its replica identity index.
 */
function newestKey(
  views: readonly SchemaView[],
  until: string | undefined,
  oid: number | undefined,
  schema: string | undefined,
  name: string,
): KeyDef | undefined {
  for (let i = views.length - 1; i >= 0; i--) {
    const v = views[i]!;
    if (until !== undefined && v.at > until) continue;
    // The table's schema.name in this view.
    const named =
      oid !== undefined && v.oids.size > 0
        ? [...v.oids].find(([, x]) => x === oid)?.[0]
        : schema !== undefined
          ? label(schema, name)
          : undefined;
    if (named === undefined) continue;
    const model = v.schema?.tables?.find((t) => label(t.schema, t.name) === named);
    const entry = v.tables.find((t) => label(t.schema, t.name) === named) as
      | Partial<TableSnapshot>
      | undefined;
    if (entry?.keyKind !== undefined && entry.key !== undefined) {
      return { key: entry.key, kind: entry.keyKind, columns: model?.columns, at: v.at };
    }
    if (model !== undefined) return { ...tableKey(model), columns: model.columns, at: v.at };
  }
  return undefined;
}

/**
 * The table's column renames, new name to the name before, from the
 * columns' attnums in successive views (a column keeps its attnum when
 * renamed). Only views that know the table's OID and attnums count.
 */
export function columnRenames(
  views: readonly SchemaView[],
  oid: number | undefined,
): Map<string, string> {
  const out = new Map<string, string>();
  if (oid === undefined) return out;
  let previous: Map<number, string> | undefined;
  for (const v of views) {
    const named = [...v.oids].find(([, x]) => x === oid)?.[0];
    const cols = named === undefined ? undefined : v.attnums?.get(named);
    if (cols === undefined) continue;
    const byAttnum = new Map(Object.entries(cols).map(([c, n]) => [n, c]));
    for (const [n, c] of byAttnum) {
      const was = previous?.get(n);
      if (was !== undefined && was !== c) out.set(c, was);
    }
    previous = byAttnum;
  }
  return out;
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
  /** How many key changes have been followed back so far (bounds a chain of them). */
  back = 0,
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

  // Key columns and their types: as the newest schema that has the table
  // (up to --until) defines them: a key added since the newest snapshot is
  // the key (changes made before it are matched by those columns' values
  // all the same). Else from the log's relation record.
  let tracker: RowTracker | undefined;
  let integer: boolean[] = [];
  const renames = columnRenames(views, oid);
  const keyDef = newestKey(views, o.until, oid, schema, name.name);
  if (keyDef !== undefined) {
    if (keyDef.kind === 'none' || keyDef.key.length === 0) {
      throw new UsageError(
        `${tableLabel} has neither a primary key nor a replica identity index (as of ${keyDef.at}): its rows have no key to follow`,
        { hint: 'row history needs a key; add a primary key to the table' },
      );
    }
    const types = keyDef.columns;
    integer = keyDef.key.map((k) =>
      INTEGER_TYPES.has(types?.find((c) => c.name === k)?.type ?? ''),
    );
    tracker = new RowTracker(
      keyDef.key,
      resolveKey(o.key, keyDef.key, integer, tableLabel),
      renames,
    );
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
    return new RowTracker(names, resolveKey(o.key, names, integer, tableLabel), renames);
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
    // Where the key's columns are in the snapshot's chunks (absent: a key
    // column the table did not have then, so no row of it can match).
    const positions = t.keyColumns.map((k) => t.positionIn(s.table.columns, k));
    for (const i of positions.includes(-1) ? [] : candidateChunks(s, key, t.keyColumns)) {
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
      found = findRowInChunk(content, key, positions);
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
  // The table's OID as the log's changes give it, for a log whose schema records lack it.
  let relid = oid;
  // The table's column names by attnum, as of the log read so far (from the
  // starting snapshot, then each schema event): renames found on the way
  // join those the schema views showed.
  let columns: ReadonlyMap<number, string> | undefined = startColumns(base?.table);
  const fromLsn = base !== undefined ? base.lsn : logStart;
  for await (const tx of readTransactions(log, { fromLsn, untilTime: o.until })) {
    while (crossed < later.length && later[crossed]!.lsn <= tx.commitLsn) crossed++;
    tracker?.begin();
    /** The row's state before its first change: from the newest snapshot the log has passed (nothing touched the row since), else the base. */
    const before = async (t: RowTracker): Promise<void> => {
      const s = crossed > 0 ? later[crossed - 1] : base;
      if (s !== undefined) await load(s, t);
    };
    // The table's schema events in this transaction, each before the change it preceded.
    const events = tableEvents(tx.schema, relid, schema, name.name);
    let next = 0;
    const eventsUpTo = async (at: number): Promise<void> => {
      for (; next < events.length && events[next]!.at <= at; next++) {
        const e = events[next]!;
        if (e.kind === 'columns') {
          // Names by attnum: a column renamed keeps its attnum.
          const pairs = new Map<string, string>();
          for (const [n, now] of e.columns) {
            const was = columns?.get(n);
            if (was !== undefined && was !== now) {
              pairs.set(was, now);
              renames.set(now, was);
            }
          }
          tracker?.renameColumns(pairs);
          columns = e.columns;
        } else if (tracker !== undefined) {
          if (tracker.current === 'unknown') await before(tracker);
          tracker.drop();
        }
      }
    };
    let i = 0;
    for (const c of tx.changes) {
      if (events.length > 0) await eventsUpTo(i);
      i++;
      if (!ours(c)) continue;
      if (c.relid !== undefined && c.relid !== 0) relid ??= c.relid;
      if (tracker === undefined) {
        tracker = keyFromLog(c);
        tracker.begin();
      }
      if (tracker.current === 'unknown' && c.op !== 'insert' && tracker.concerns(c)) {
        await before(tracker);
      }
      tracker.apply(c);
    }
    await eventsUpTo(Number.POSITIVE_INFINITY);
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
  // The row came to this key from another in the window (an update moved
  // it): its life before is under the old key. Read from there: that history
  // follows the row to this key, so it holds these versions too, and the
  // values the move did not send (unchanged TOASTed ones).
  const came = versions[0]!.keyChangedFrom;
  if (
    came !== undefined &&
    back < 16 &&
    came.every((v) => v !== null) &&
    (o.since === undefined || versions[0]!.time >= o.since)
  ) {
    const keyColumns = tracker.keyColumns;
    const earlier = await readLogHistory(
      { ...o, key: { named: keyColumns.map((k, i) => [k, came[i]!] as const) } },
      logs,
      index,
      back + 1,
    ).catch((err: unknown) => {
      if (err instanceof RowNotFoundError) return undefined;
      throw err;
    });
    // Its own life only: a row that held the old key before it (deleted,
    // then the key taken by an insert of the row that moved) is another row.
    const move = earlier?.versions.findIndex(
      (v) => v.xid === versions[0]!.xid && v.lsn === versions[0]!.lsn,
    );
    if (earlier !== undefined && move !== undefined && move > 0) {
      let from = 0;
      for (let j = 0; j < move; j++) if (earlier.versions[j]!.row === null) from = j + 1;
      const own = earlier.versions.slice(from);
      return {
        ...earlier,
        versions: from > 0 ? [asFirst(own[0]!), ...own.slice(1)] : own,
        key: tracker.requested,
        notes: [
          `the row had the key (${came.join(', ')}) before transaction ${versions[0]!.xid} at ${versions[0]!.time}: its history is read from there`,
          ...earlier.notes,
        ],
      };
    }
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
      ? `; it was ${last.op === 'truncate' ? 'truncated' : last.op === 'drop' ? 'removed with its table (DROP TABLE)' : 'deleted'} at ${last.time} (transaction ${last.xid})`
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
