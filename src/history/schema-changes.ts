/**
 * Rebuilding a moment across schema changes.
 *
 * A snapshot holds its tables in their columns of then; the change log's
 * rows come in the columns of their moment; a restore creates the tables as
 * they were at the point. Capture records both sides of every schema change
 * (src/capture/schema-events.ts): in the log, each change's tables by OID
 * with their columns by attnum (and the value rows from before an ADD
 * COLUMN have for it); beside the log, the whole schema right after it.
 *
 * Here, for a window that holds schema changes:
 * - `planSchemaChanges` takes the schema of the last change before the
 *   point and lays every table out as it was then (key columns first, as
 *   chunks are), finding each one's snapshot chunks by OID, so renamed
 *   tables and columns keep their rows;
 * - a `ShapeTracker` follows the columns through the window: each logged
 *   row is mapped name → attnum (as the table was at that row's moment) →
 *   the point's column. A column the row does not have (added later) is
 *   marked like an unsent TOASTed value (0), and filled afterwards with
 *   the value PostgreSQL gave existing rows when it was added;
 * - `Reshape` turns snapshot lines into the point's layout the same way.
 *
 * Refused, with the reason, instead of guessed: a table rewritten in the
 * window (a retyped column, a column added with a volatile default: the new
 * values are not in the log), a changed key, a moment whose schema capture
 * could not read, and logged rows whose columns disagree with what was
 * recorded (a change made while the event triggers were missing).
 */
import { chunkColumns, tableKey } from '../backup/backup.js';
import { chooseBoundaryBits } from '../backup/chunker.js';
import { type EventColumn, parseSchemaEvent } from '../capture/schema-events.js';
import { OperationError } from '../errors.js';
import { encodeField, splitFields } from '../pg/copy-text.js';
import type { SchemaModel, TableModel } from '../pg/schema/model.js';
import { qualify } from '../pg/schema/quote.js';
import type { TableShape } from '../pg/schema/shapes.js';
import type { Change, ChangeLog, SchemaRecord } from '../repo/changelog.js';
import { lsnValue } from '../repo/changelog.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';

/**
 * Whether a and b hold the same items, in whatever order: a replica
 * identity as the log lists it (the table's column order) against a key
 * (its own order, e.g. PRIMARY KEY (tenant_id, id) on a table (id, tenant_id, ...)).
 */
export function sameMembers<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** How one table's snapshot lines become the point's layout. */
export interface Reshape {
  /** Per column of the point's layout: its index in the snapshot's chunk columns, or -1 (added since). */
  readonly from: readonly number[] | null;
  /** Per column: the value of rows that existed when it was added; undefined for columns the snapshot has. */
  readonly fill: ReadonlyArray<string | null | undefined>;
}

/** A table as the point has it, with its attnums (chunk order). */
export interface PointTable {
  readonly t: TableSnapshot;
  readonly attnums: readonly number[];
  readonly keyAttnums: readonly number[];
  /** The snapshot's table of the same OID, if it had one. */
  readonly base: TableSnapshot | undefined;
}

/** A window's schema changes, ready for one pass over the log. */
export interface SchemaChanges {
  /** The snapshot's manifest with the point's schema and tables (chunks from the snapshot). */
  readonly manifest: SnapshotManifest<SchemaModel>;
  /** The record the point's schema comes from. */
  readonly at: { readonly xid: number; readonly commitTime: string; readonly commitLsn: bigint };
  /**
   * A tracker for one pass over the window, in log order; given the tables
   * restored (schema.name), the others' changes are passed over and cannot
   * refuse the pass.
   */
  tracker(only?: readonly string[]): ShapeTracker;
  /**
   * Tables (schema.name at the point) whose rows cannot be carried across
   * the window's schema changes, with why: a restore that includes one is
   * refused with that error; one that leaves them out is not.
   */
  readonly refusals: ReadonlyMap<string, OperationError>;
}

/** Where a point is, for choosing the schema records before it. */
export type Before =
  | { readonly kind: 'lsn'; readonly lsn: bigint }
  | { readonly kind: 'time'; readonly at: string };

/**
 * The schema changes between the snapshot and the point, or undefined when
 * there are none (the snapshot's schema is the point's).
 */
export async function planSchemaChanges(
  log: ChangeLog,
  base: SnapshotManifest<SchemaModel>,
  before: Before,
): Promise<SchemaChanges | undefined> {
  const from = lsnValue(base.lsn);
  const refs = (await log.schemaRecords()).filter((r) => r.endLsn > from);
  let last: SchemaRecord<SchemaModel, TableShape> | undefined;
  for (const ref of refs) {
    const r = await log.readSchema<SchemaModel, TableShape>(ref);
    if (lsnValue(r.commitLsn) < from) continue;
    const inside =
      before.kind === 'lsn' ? lsnValue(r.commitLsn) < before.lsn : r.commitTime <= before.at;
    if (!inside) break;
    last = r;
  }
  if (last === undefined) return undefined;
  const record = last;
  if (record.model === null || record.shapes === null) {
    throw new OperationError(
      'restore.schema-unrecorded',
      `the schema after transaction ${record.xid} (committed ${record.commitTime}) was not recorded: another schema change committed before capture could read it, so the tables of this moment are not known`,
      {
        hint: 'choose a moment after the next schema change (or before this one); `flashback history` lists the transactions',
      },
    );
  }
  const model = record.model;
  const shapes = record.shapes;
  // Without OIDs a table renamed in the window would look new (and lose the
  // snapshot's rows): refused for a snapshot that lacks them.
  const unnumbered = base.tables.find((t) => t.oid === undefined || t.attnums === undefined);
  if (unnumbered !== undefined) throw olderSnapshot(base, unnumbered.schema, unnumbered.name);
  const baseModel = new Map(base.schema.tables.map((t) => [`${t.schema}.${t.name}`, t]));
  const redefined = redefinedTypes(base.schema, model);
  // (Every snapshot table has its OID and attnums from here on.)
  const baseByOid = new Map(base.tables.map((t) => [t.oid!, t]));
  const byOid = new Map<number, PointTable>();
  const tables: TableSnapshot[] = [];
  const refusals = new Map<string, OperationError>();
  for (const tm of model.tables.filter((x) => x.hasData)) {
    const label = `${tm.schema}.${tm.name}`;
    const shape = shapes[label];
    if (shape === undefined) {
      // (Not a per-table refusal: left out, the table would vanish from a
      // restore of several, and its changes would have nowhere to go.)
      throw new OperationError(
        'restore.schema-unrecorded',
        `the schema recorded after transaction ${record.xid} lacks the columns of ${label}`,
      );
    }
    const columns = chunkColumns(tm);
    const { key, kind } = tableKey(tm);
    const attnums = columns.map((c) => shape.attnums[c]!);
    const keyAttnums = attnums.slice(0, key.length);
    const b = baseByOid.get(shape.oid);
    if (b !== undefined) {
      // (Refused only if this table is restored: another table's change
      // cannot stop the restore of the ones that were not changed.)
      try {
        checkTypes(b, baseModel.get(`${b.schema}.${b.name}`), tm, shape, base.id, redefined);
        const bKey = b.attnums!.slice(0, b.key.length);
        if (bKey.join(',') !== keyAttnums.join(',')) {
          throw new OperationError(
            'restore.key-changed',
            `the key of ${label} changed after snapshot ${base.id} (now ${key.join(', ') || 'none'}, then ${b.key.join(', ') || 'none'}): matching its rows across the change is not supported`,
            { hint: 'take a new backup after the change and restore to a moment after it' },
          );
        }
      } catch (err) {
        if (!(err instanceof OperationError)) throw err;
        refusals.set(label, err);
      }
    }
    const t: TableSnapshot = {
      schema: tm.schema,
      name: tm.name,
      columns,
      key,
      keyKind: kind,
      // A table new since the snapshot: what a backup picks without statistics.
      boundaryBits: b?.boundaryBits ?? chooseBoundaryBits(100),
      rows: b?.rows ?? 0,
      bytes: b?.bytes ?? 0,
      storedBytes: b?.storedBytes ?? 0,
      chunks: b?.chunks ?? [],
      oid: shape.oid,
      attnums,
      // (The point's types, when the record has them: a later unrecorded retype is told from them.)
      ...(columns.every((c) => shape.types?.[c] !== undefined)
        ? { types: columns.map((c) => shape.types![c]!) }
        : {}),
    };
    tables.push(t);
    byOid.set(shape.oid, { t, attnums, keyAttnums, base: b });
  }
  const initial = new Map(
    base.tables.map((t) => [t.oid!, new Map(t.columns.map((c, i) => [c, t.attnums![i]!]))]),
  );
  return {
    manifest: { ...base, schema: model, tables },
    at: { xid: record.xid, commitTime: record.commitTime, commitLsn: lsnValue(record.commitLsn) },
    tracker: (only) =>
      new ShapeTracker(
        only === undefined
          ? byOid
          : new Map([...byOid].filter(([, p]) => only.includes(`${p.t.schema}.${p.t.name}`))),
        initial,
        base,
        only === undefined ? undefined : new Set([...byOid.keys()]),
      ),
    refusals,
  };
}

/**
 * Types whose values written before the window no longer read as the same
 * values at the point, with why: an enum with a label renamed (ALTER TYPE
 * … RENAME VALUE: the snapshot's rows hold the old label), a composite
 * type whose attributes changed (ALTER TYPE … ADD/DROP/ALTER ATTRIBUTE:
 * the snapshot's rows hold the old fields). By qualified name.
 */
function redefinedTypes(before: SchemaModel, now: SchemaModel): Map<string, string> {
  const out = new Map<string, string>();
  const then = new Map(before.types.map((t) => [qualify(t.schema, t.name), t]));
  for (const t of now.types) {
    const name = qualify(t.schema, t.name);
    const old = then.get(name);
    if (old === undefined || old.kind !== t.kind) continue;
    if (t.kind === 'enum' && old.kind === 'enum') {
      const gone = old.labels.filter((l) => !t.labels.includes(l));
      if (gone.length > 0)
        out.set(
          name,
          `an enum whose value(s) ${gone.map((l) => `'${l}'`).join(', ')} were renamed`,
        );
    } else if (t.kind === 'composite' && old.kind === 'composite') {
      // (By count and types: a comment or a renamed attribute leaves the text form as it was.)
      const types = (a: typeof t.attributes) => a.map((x) => x.type).join('\u0000');
      if (
        old.attributes.length !== t.attributes.length ||
        types(old.attributes) !== types(t.attributes)
      )
        out.set(name, 'a composite type whose attributes changed');
    }
  }
  return out;
}

/** Types whose values keep their text when one is changed to another without a rewrite. */
const TEXTUAL = /^(text|character varying(\(\d+\))?)$/;

/**
 * Refuses a column whose type changed without a rewrite in a way that can
 * change what its text means (timestamp to timestamptz: the zone of the
 * session that changed it), and any change of a key column's type or
 * collation (the chunks' key order would no longer be the table's).
 */
function checkTypes(
  b: TableSnapshot,
  before: TableModel | undefined,
  now: TableModel,
  shape: TableShape,
  snapshot: string,
  redefined: ReadonlyMap<string, string>,
): void {
  if (before === undefined) return;
  const byAttnum = new Map(b.columns.map((c, i) => [b.attnums![i]!, c]));
  for (const col of now.columns) {
    const a = shape.attnums[col.name];
    const oldName = a === undefined ? undefined : byAttnum.get(a);
    const old = before.columns.find((c) => c.name === oldName);
    if (old === undefined) continue;
    // (An array of such a type too: its elements hold the old text.)
    const why = redefined.get(col.type.replace(/(\[\])+$/, ''));
    if (why !== undefined) {
      throw new OperationError(
        'restore.type-redefined',
        `column ${col.name} of ${now.schema}.${now.name} is of type ${col.type}, ${why} after snapshot ${snapshot}: its values from before are in the old form, which the type no longer reads`,
        { hint: 'take a new backup after the change and restore to a moment after it' },
      );
    }
    const sameType = old.type === col.type && (old.collation ?? '') === (col.collation ?? '');
    if (sameType) continue;
    if (b.key.includes(old.name)) {
      throw new OperationError(
        'restore.key-changed',
        `key column ${col.name} of ${now.schema}.${now.name} changed type or collation after snapshot ${snapshot} (${old.type}${old.collation === undefined ? '' : ` ${old.collation}`} to ${col.type}${col.collation === undefined ? '' : ` ${col.collation}`}): the snapshot's rows are in the old key order`,
        { hint: 'take a new backup after the change and restore to a moment after it' },
      );
    }
    if (!(TEXTUAL.test(old.type) && TEXTUAL.test(col.type))) {
      throw new OperationError(
        'restore.column-retyped',
        `column ${col.name} of ${now.schema}.${now.name} was retyped after snapshot ${snapshot} (${old.type} to ${col.type}): its values from before cannot be carried across (the conversion's results are not in the change log, or their text means something else now)`,
        { hint: 'take a new backup after the change and restore to a moment after it' },
      );
    }
  }
}

function olderSnapshot(base: SnapshotManifest, schema: string, name: string): OperationError {
  return new OperationError(
    'restore.schema-changed',
    `the schema changed after snapshot ${base.id}, which was taken by an older Flashback that did not record the column numbers of ${schema}.${name}: its rows cannot be matched across the change`,
    { hint: 'take a new backup and restore to a moment after it' },
  );
}

/** A change resolved against the point's layout. */
export interface Resolved {
  readonly t: TableSnapshot;
  /** Per column of the point's layout: index in the change's columns, or -1 (absent then: filled later). */
  readonly map: readonly number[];
}

/** Follows table shapes through one pass over the window (events and changes in log order). */
export class ShapeTracker {
  /** Per OID: column name → attnum as the table is at the current place in the log. */
  private readonly current: Map<number, Map<string, number>>;
  /** Per OID, per attnum: the value rows had when the column appeared (from its first event). */
  private readonly appeared = new Map<number, Map<number, string | null>>();
  private cache = new WeakMap<object, Resolved | null>();
  /** Tables whose changes were passed over (not at the point): each must have been dropped in the window. */
  private readonly skipped = new Map<number, string>();
  private readonly dropped = new Set<number>();
  /** The events of the transaction being read; those from `aheadFrom` on are not applied yet. */
  private ahead: readonly string[] = [];
  private aheadFrom = 0;

  constructor(
    private readonly byOid: ReadonlyMap<number, PointTable>,
    initial: ReadonlyMap<number, Map<string, number>>,
    private readonly base: SnapshotManifest,
    /**
     * Every table of the point, when `byOid` holds only those restored: the
     * changes of the others are passed over (not tables "not at the point").
     */
    private readonly atPoint?: ReadonlySet<number>,
  ) {
    this.current = new Map([...initial].map(([k, v]) => [k, new Map(v)]));
  }

  /**
   * The schema events of the next transaction, before its changes. An event
   * can come after rows already in its table's new columns: CREATE TABLE AS
   * fills its table before the event fires (at the command's end), and the
   * decoded stream has been seen to put a DDL's message after the first row
   * of the statement following it. Such rows take their columns from the
   * event ahead.
   */
  beginTransaction(events: readonly string[]): void {
    this.ahead = events;
    this.aheadFrom = 0;
  }

  /** Applies one schema event (its JSON) found in the log at `when`. */
  apply(content: string, when: string): void {
    // (Events are applied in the order beginTransaction gave them.)
    if (this.ahead[this.aheadFrom] === content) this.aheadFrom++;
    let e: ReturnType<typeof parseSchemaEvent>;
    try {
      e = parseSchemaEvent(content);
    } catch (err) {
      throw new OperationError(
        'restore.schema-unreadable',
        `a schema change at ${when} cannot be read from the change log (${(err as Error).message})`,
      );
    }
    // Relation descriptions after an event may map differently.
    this.cache = new WeakMap();
    if (e.kind === 'rewrite') {
      const p = this.byOid.get(e.oid);
      if (p !== undefined) {
        throw new OperationError(
          'restore.table-rewritten',
          `${p.t.schema}.${p.t.name} was rewritten at ${when} (${rewriteReason(e.reason)}): the values it gave its rows are not in the change log, so the rows cannot be rebuilt after it`,
          {
            hint: `take a backup after the change (\`flashback backup ${this.base.target}\`) and restore to a moment after it, or restore to a moment before ${when}`,
          },
        );
      }
      return;
    }
    if (e.kind === 'drop') {
      for (const t of e.tables) {
        this.current.delete(t.oid);
        this.dropped.add(t.oid);
      }
      return;
    }
    for (const t of e.tables) {
      this.current.set(
        t.oid,
        new Map(t.columns.filter((c) => !c[3]).map((c) => [c[1], c[0]] as [string, number])),
      );
      const seen = this.appeared.get(t.oid) ?? new Map<number, string | null>();
      this.appeared.set(t.oid, seen);
      for (const c of t.columns as readonly EventColumn[]) {
        if (!c[3] && !seen.has(c[0])) seen.set(c[0], c[4]);
      }
    }
  }

  /**
   * The point's table and column map for a logged change, or null when the
   * table does not exist at the point (dropped later, or created and dropped
   * in the window): its changes do not matter there.
   */
  resolve(c: Change, when: string): Resolved | null {
    const hit = this.cache.get(c.columns);
    if (hit !== undefined) return hit;
    const p = c.relid === undefined ? undefined : this.byOid.get(c.relid);
    if (p === undefined) {
      if (c.relid !== undefined && this.atPoint?.has(c.relid) === true) {
        this.cache.set(c.columns, null);
        return null;
      }
      if (c.relid !== undefined && !this.skipped.has(c.relid))
        this.skipped.set(c.relid, `${c.schema}.${c.table} (at ${when})`);
      this.cache.set(c.columns, null);
      return null;
    }
    const names = c.columns.map((col) => col[0]);
    let shape = this.current.get(c.relid!);
    if (shape === undefined || names.some((n) => !shape!.has(n))) {
      shape = this.shapeAhead(c.relid!, names) ?? shape;
    }
    const unknown = shape === undefined ? names : names.filter((n) => !shape.has(n));
    if (shape === undefined || unknown.length > 0) {
      throw new OperationError(
        'restore.schema-unrecorded',
        `rows of ${c.schema}.${c.table} at ${when} have columns (${unknown.join(', ')}) that no recorded schema change explains: the table changed while Flashback's event triggers were missing, so its rows cannot be placed`,
        {
          hint: 'take a new backup (it records the current columns) and restore to a moment after it',
        },
      );
    }
    const attnumOf = names.map((n) => shape.get(n)!);
    const map = p.attnums.map((a) => attnumOf.indexOf(a));
    // Absent is right only for a column added later; one the table has now
    // but the row lacks means a change the log does not explain.
    const existing = new Set(shape.values());
    const lacking = p.attnums.filter((a, i) => map[i] === -1 && existing.has(a));
    if (lacking.length > 0) {
      throw new OperationError(
        'restore.schema-unrecorded',
        `rows of ${c.schema}.${c.table} at ${when} lack columns the recorded schema has then (attnum ${lacking.join(', ')}): the table changed while Flashback's event triggers were missing, so its rows cannot be placed`,
        { hint: 'take a new backup and restore to a moment after it' },
      );
    }
    // The log identifies rows by the replica identity: it must be the key (or the whole row).
    // (None flagged: a table with no replica identity then, e.g. filled by
    // CREATE TABLE AS before its key was added, which can only have had
    // inserts published: an update or delete of it fails on the source.)
    const identity = c.columns.flatMap((col, j) => (col[3] ? [attnumOf[j]!] : []));
    if (
      p.keyAttnums.length > 0 &&
      identity.length > 0 &&
      identity.length !== c.columns.length &&
      !sameMembers(identity, p.keyAttnums)
    ) {
      throw new OperationError(
        'restore.identity-not-key',
        `${c.schema}.${c.table} is identified in the change log at ${when} by other columns than its key at the point (${p.t.key.join(', ')}): matching its rows is not supported`,
        {
          hint: `make the replica identity the primary key (ALTER TABLE ${c.schema}.${c.table} REPLICA IDENTITY DEFAULT) or FULL`,
        },
      );
    }
    if (p.t.key.length === 0 && map.includes(-1)) {
      // Rows without a key are matched whole, and these would lack a column's value.
      throw new OperationError(
        'restore.schema-changed',
        `${c.schema}.${c.table} has no key and gained columns after ${when}: its rows are matched whole, which a row without the later columns cannot be`,
        { hint: 'take a new backup after the change and restore to a moment after it' },
      );
    }
    const r: Resolved = { t: p.t, map };
    this.cache.set(c.columns, r);
    return r;
  }

  /**
   * The table's columns in the next event of this transaction not applied
   * yet that has every one of `names`. Only those ahead: an earlier layout
   * of the same names (columns renamed round, or dropped and added again
   * under their names, in one transaction) would place values in the
   * wrong columns, or in dropped ones.
   */
  private shapeAhead(oid: number, names: readonly string[]): Map<string, number> | undefined {
    for (const content of this.ahead.slice(this.aheadFrom)) {
      let e: ReturnType<typeof parseSchemaEvent>;
      try {
        e = parseSchemaEvent(content);
      } catch {
        continue;
      }
      if (e.kind !== 'ddl') continue;
      const t = e.tables.find((x) => x.oid === oid);
      if (t === undefined) continue;
      const m = new Map(
        t.columns.filter((c) => !c[3]).map((c) => [c[1], c[0]] as [string, number]),
      );
      if (names.every((n) => m.has(n))) return m;
    }
    return undefined;
  }

  /** After the pass: how each table's snapshot lines and absent values become the point's. */
  reshapes(): Map<string, Reshape> {
    for (const [oid, what] of this.skipped) {
      if (this.dropped.has(oid)) continue;
      // Not a table of the point and not dropped: e.g. a publication that
      // sends partitions' changes as their root's. Never dropped silently.
      throw new OperationError(
        'restore.table-not-at-point',
        `changes of ${what} belong to no table of the moment's schema, and no drop of it is recorded: they cannot be placed`,
        {
          hint: 'if the publication sends partitions as their root (publish_via_partition_root), recreate it without that option; otherwise take a new backup',
        },
      );
    }
    const out = new Map<string, Reshape>();
    for (const [oid, p] of this.byOid) {
      const b = p.base;
      const from = b === undefined ? null : p.attnums.map((a) => b.attnums!.indexOf(a));
      const same =
        from !== null && from.length === b!.columns.length && from.every((j, i) => j === i);
      const seen = this.appeared.get(oid);
      const fill = p.attnums.map((a, i) => {
        if (from !== null && from[i]! >= 0) return undefined;
        if (seen === undefined || !seen.has(a)) {
          throw new OperationError(
            'restore.schema-unrecorded',
            `column ${p.t.columns[i]} of ${p.t.schema}.${p.t.name} is in neither snapshot ${this.base.id} nor any recorded schema change: where its values came from is not known`,
            { hint: 'take a new backup and restore to a moment after it' },
          );
        }
        return seen.get(a)!;
      });
      if (same) continue;
      out.set(`${p.t.schema}.${p.t.name}`, { from: from, fill });
    }
    return out;
  }
}

/** PostgreSQL's AT_REWRITE_* reason bits, in words. */
function rewriteReason(bits: number): string {
  const why: string[] = [];
  if (bits & 1) why.push('persistence changed');
  if (bits & 2) why.push('a column added with a volatile default');
  if (bits & 4) why.push('a column retyped');
  if (bits & 8) why.push('access method changed');
  return why.length > 0 ? why.join(', ') : `reason ${bits}`;
}

/** A snapshot line (without its newline) in the point's layout. */
export function reshapeLine(line: Buffer, r: Reshape): string {
  const fields = splitFields(line);
  const out: string[] = new Array(r.fill.length);
  for (let i = 0; i < r.fill.length; i++) {
    const j = r.from === null ? -1 : r.from[i]!;
    if (j >= 0) out[i] = fields[j]!.toString('utf8');
    else out[i] = encodeField(r.fill[i] ?? null);
  }
  return out.join('\t');
}

/** Absent values (0) of added columns replaced by the value rows had when the column was added. */
export function fillAbsent<T>(
  values: (T | 0)[],
  r: Reshape | undefined,
): (T | string | null | 0)[] {
  if (r === undefined || !values.includes(0)) return values;
  return values.map((v, i) => (v === 0 && r.fill[i] !== undefined ? r.fill[i]! : v));
}

/** Reshapes a block of snapshot lines. */
export function reshapeBlock(content: Buffer, r: Reshape): Buffer {
  const out: string[] = [];
  let pos = 0;
  while (pos < content.length) {
    let nl = content.indexOf(0x0a, pos);
    if (nl < 0) nl = content.length;
    out.push(reshapeLine(content.subarray(pos, nl), r));
    pos = nl + 1;
  }
  return Buffer.from(out.length === 0 ? '' : `${out.join('\n')}\n`, 'utf8');
}
