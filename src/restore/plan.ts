/**
 * What a restore will do, as plain data: computed first, printed by
 * `--dry-run`, shown in the guard's banner, and asserted on by tests.
 */
import { UsageError } from '../errors.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { parseTableName } from '../pg/schema/names.js';
import { partitionedTables, partitionLeaves } from '../pg/schema/partitions.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import { triggerList } from './triggers.js';

/** What to do with snapshot rows whose key already exists in the target table. */
export type OnConflict = 'skip' | 'update' | 'fail';

/** How one table is restored. */
export interface TablePlan {
  readonly schema: string;
  readonly name: string;
  /**
   * - `load`: the table is created (full restore, or absent from the target) and all matching rows loaded;
   * - `merge`: the table exists in the target; matching rows are merged per `onConflict`.
   */
  readonly action: 'load' | 'merge';
  /** The table's name in the snapshot (`schema.name`), when it was renamed since and is merged into under its name now. */
  readonly renamedFrom?: string | undefined;
  /** Rows of this table in the snapshot. */
  readonly snapshotRows: number;
  readonly chunks: number;
  /** Counts known before writing (exact after a dry run, or for loads without --where). */
  readonly insert?: number | undefined;
  readonly update?: number | undefined;
  readonly skip?: number | undefined;
  /**
   * Rows absent from the table that the INSERT did not write: a BEFORE
   * INSERT trigger returned NULL for them, or a rule took them elsewhere
   * (not counted as skipped: nothing held their keys).
   */
  readonly dropped?: number | undefined;
}

/** A whole restore. */
export interface RestorePlan {
  readonly snapshot: string;
  readonly target: string;
  /** `full`: the whole snapshot into an empty database; `selective`: some tables and/or rows into any database. */
  readonly mode: 'full' | 'selective';
  readonly where?: string | undefined;
  readonly onConflict: OnConflict;
  readonly tables: readonly TablePlan[];
  /** With `--disable-triggers`: the user triggers switched off while rows are merged (see triggers.ts). */
  readonly triggersOff?: ReadonlyArray<{ readonly table: string; readonly name: string }>;
}

/**
 * Selects snapshot tables by patterns: `name` or `schema.name`, with `*` and
 * `?` wildcards; a bare name matches in any schema. A partitioned table
 * stands for its partitions (the snapshot holds rows only in its leaves):
 * `--table events` is every partition of events, at any depth. Every
 * pattern must match at least one table (a typo must not silently restore
 * nothing).
 */
export function selectTables(
  manifest: SnapshotManifest<SchemaModel>,
  patterns: readonly string[],
  /**
   * What the manifest is, for messages, when not a stored snapshot: a
   * moment's tables (`at 2026-… (snapshot X and the change log)`), whose
   * names may differ from the snapshot's.
   */
  scope?: string,
): TableSnapshot[] {
  if (patterns.length === 0) return [...manifest.tables];
  const candidates = namedTables(manifest);
  const chosen = new Set<TableSnapshot>();
  const glob = (p: string) => {
    const re = globToRegExp(p);
    return candidates.filter((t) => re.test(p.includes('.') ? `${t.schema}.${t.name}` : t.name));
  };
  for (const p of patterns) {
    // As written (a glob over names as they are); else as SQL reads it, like
    // history and impact do: "Quoted" names exact, unquoted ones folded to lower case.
    let hits = p.includes('"') ? [] : glob(p);
    if (hits.length === 0 && p.includes('"')) {
      const n = parseTableName(p);
      hits = candidates.filter(
        (t) => t.name === n.name && (n.schema === undefined || t.schema === n.schema),
      );
    } else if (hits.length === 0 && p !== p.toLowerCase()) {
      hits = glob(p.toLowerCase());
    }
    if (hits.length === 0) {
      const names = manifest.tables.map((t) => `${t.schema}.${t.name}`);
      const list = `${names.slice(0, 12).join(', ')}${names.length > 12 ? ', …' : ''}`;
      throw new UsageError(`no table ${scope ?? `in snapshot ${manifest.id}`} matches "${p}"`, {
        hint:
          scope === undefined
            ? `tables in it: ${list} (\`flashback show ${manifest.id}\`)`
            : `tables then: ${list} (renamed since the snapshot? name a table as it was then)`,
      });
    }
    if (hits.every((h) => h.tables.length === 0)) {
      throw new UsageError(
        `"${p}" is a partitioned table with no partition in snapshot ${manifest.id}: it holds no rows to restore`,
        { hint: `\`flashback show ${manifest.id}\` lists the tables it holds` },
      );
    }
    for (const h of hits) for (const t of h.tables) chosen.add(t);
  }
  return manifest.tables.filter((t) => chosen.has(t));
}

/** A name `--table` can give: a snapshot table, or a partitioned one standing for its leaves. */
interface NamedTable {
  readonly schema: string;
  readonly name: string;
  readonly tables: readonly TableSnapshot[];
}

/** The snapshot's tables, and each partitioned table with the leaves under it that the snapshot holds. */
function namedTables(manifest: SnapshotManifest<SchemaModel>): NamedTable[] {
  const out: NamedTable[] = manifest.tables.map((t) => ({
    schema: t.schema,
    name: t.name,
    tables: [t],
  }));
  for (const p of partitionedTables(manifest.schema)) {
    const leaves = new Set(
      (partitionLeaves(manifest.schema, p) ?? []).map((l) => JSON.stringify([l.schema, l.name])),
    );
    out.push({
      ...p,
      tables: manifest.tables.filter((t) => leaves.has(JSON.stringify([t.schema, t.name]))),
    });
  }
  return out;
}

function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/**
 * Orders tables so that a table comes after the tables its foreign keys
 * reference (among those being restored), keeping the given order otherwise.
 * Merging into a live database checks foreign keys row by row, so parents
 * must be restored first. Cycles keep their given order (deferrable
 * constraints or a full restore handle those).
 */
export function orderByForeignKeys<T extends { schema: string; name: string }>(
  tables: readonly T[],
  schema: SchemaModel,
): T[] {
  const key = (s: string, n: string): string => `${s}.${n}`;
  const chosen = new Map(tables.map((t) => [key(t.schema, t.name), t]));
  const parents = new Map<string, Set<string>>();
  for (const c of schema.constraints) {
    if (c.type !== 'foreign-key' || c.references === undefined) continue;
    const child = key(c.schema, c.table);
    const parent = key(c.references.schema, c.references.name);
    if (child !== parent && chosen.has(child) && chosen.has(parent)) {
      if (!parents.has(child)) parents.set(child, new Set());
      parents.get(child)!.add(parent);
    }
  }
  const out: T[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (k: string): void => {
    if (state.has(k)) return;
    state.set(k, 'visiting');
    for (const p of parents.get(k) ?? []) if (state.get(p) !== 'visiting') visit(p);
    state.set(k, 'done');
    out.push(chosen.get(k)!);
  };
  for (const t of tables) visit(key(t.schema, t.name));
  return out;
}

/** A one-line summary of a plan, for the guard's banner: exact row counts when known. */
export function describePlan(plan: RestorePlan): string {
  // The tables by name: a pattern (or a bare name in several schemas) may
  // take more than the operator meant, and the banner is where it shows.
  const names = plan.tables.map((t) => `${t.schema}.${t.name}`);
  const listed = `${names.slice(0, 6).join(', ')}${names.length > 6 ? `, and ${names.length - 6} more` : ''}`;
  const what =
    plan.mode === 'full' ? 'full restore' : `restore ${plan.tables.length} table(s) (${listed})`;
  const where = plan.where === undefined ? '' : ` where ${plan.where}`;
  const n = (f: (t: TablePlan) => number | undefined): string =>
    plan.tables.reduce((a, t) => a + (f(t) ?? 0), 0).toLocaleString('en-US');
  const known = plan.tables.every((t) => t.insert !== undefined);
  const effect = known
    ? `insert ${n((t) => t.insert)} rows, update ${n((t) => t.update)}, skip ${n((t) => t.skip)} (existing keys: ${plan.onConflict})`
    : `up to ${n((t) => t.snapshotRows)} rows (existing keys: ${plan.onConflict})`;
  const off =
    plan.triggersOff === undefined || plan.triggersOff.length === 0
      ? ''
      : `; user triggers off while merging (writers to those tables wait): ${triggerList(plan.triggersOff)}`;
  return `${what} from snapshot ${plan.snapshot}${where}: ${effect}${off}`;
}
