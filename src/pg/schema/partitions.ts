/**
 * Partitioned tables as commands name them: a partitioned table holds no
 * rows of its own (snapshots and the change log have them under its
 * partitions), so `--table events` stands for every partition under
 * events, at any depth.
 */
import { UsageError } from '../../errors.js';
import type { SchemaModel } from './model.js';

/** A table's schema and name. */
export interface QualifiedName {
  readonly schema: string;
  readonly name: string;
}

/**
 * The leaf partitions (tables holding rows) under `table`, in the model's
 * order; undefined when `table` is not a partitioned table of the model.
 */
export function partitionLeaves(
  model: Pick<SchemaModel, 'tables'> | undefined,
  table: QualifiedName,
): QualifiedName[] | undefined {
  const tables = model?.tables ?? [];
  const self = tables.find(
    (t) => t.kind === 'partitioned' && t.schema === table.schema && t.name === table.name,
  );
  if (self === undefined) return undefined;
  const key = (schema: string, name: string) => JSON.stringify([schema, name]);
  const parentOf = new Map<string, string>();
  for (const t of tables) {
    if (t.partitionOf !== undefined) {
      parentOf.set(key(t.schema, t.name), key(t.partitionOf.schema, t.partitionOf.name));
    }
  }
  const target = key(self.schema, self.name);
  const under = (schema: string, name: string) => {
    for (let k = parentOf.get(key(schema, name)); k !== undefined; k = parentOf.get(k)) {
      if (k === target) return true;
    }
    return false;
  };
  return tables
    .filter((t) => t.kind !== 'partitioned' && under(t.schema, t.name))
    .map((t) => ({ schema: t.schema, name: t.name }));
}

/** The partitioned tables of the model. */
export function partitionedTables(model: Pick<SchemaModel, 'tables'> | undefined): QualifiedName[] {
  return (model?.tables ?? [])
    .filter((t) => t.kind === 'partitioned')
    .map((t) => ({ schema: t.schema, name: t.name }));
}

/** Snapshots, or recorded schemas, oldest first: each one's tables and (when known) schema model. */
export type Moments = ReadonlyArray<{
  readonly tables: readonly QualifiedName[];
  readonly schema?: Pick<SchemaModel, 'tables'> | undefined;
}>;

/** A table name as given: its schema when qualified. */
type NameAsked = { readonly schema: string | undefined; readonly name: string };

/**
 * The partitioned table `n` names in the newest of `moments` that has a
 * table of that name, with that moment; undefined when it is an ordinary
 * table there, or in none. A partitioned name in several schemas must be
 * qualified.
 */
function newestParent(
  moments: Moments,
  n: NameAsked,
): { readonly parent: QualifiedName; readonly in: Moments[number] } | undefined {
  const named = (t: QualifiedName) =>
    t.name === n.name && (n.schema === undefined || t.schema === n.schema);
  for (const m of [...moments].reverse()) {
    const parents = partitionedTables(m.schema).filter(named);
    if (parents.length === 0) {
      if (m.tables.some(named)) return undefined;
      continue;
    }
    if (parents.length > 1) {
      throw new UsageError(
        `table "${n.name}" is in several schemas (${parents.map((p) => p.schema).join(', ')})`,
        { hint: `name it with its schema, e.g. ${parents[0]!.schema}.${n.name}` },
      );
    }
    return { parent: parents[0]!, in: m };
  }
  return undefined;
}

/**
 * The partitions under the table `n` names, when the newest snapshot that
 * has a table of that name (snapshots oldest first) has it partitioned;
 * undefined when it is an ordinary table there, or in none.
 */
export function partitionsIn(snapshots: Moments, n: NameAsked): QualifiedName[] | undefined {
  const found = newestParent(snapshots, n);
  return found === undefined ? undefined : partitionLeaves(found.in.schema, found.parent);
}

/**
 * Every leaf partition that was under the table `n` names in any of the
 * models (oldest first), when the newest model that has a table of that
 * name has it partitioned; undefined when that one has it ordinary, or
 * none has it. For a report over a window: a partition created, or
 * detached, within it held some of the parent's rows there.
 */
export function partitionsEver(models: Moments, n: NameAsked): QualifiedName[] | undefined {
  const found = newestParent(models, n);
  if (found === undefined) return undefined;
  const out = new Map<string, QualifiedName>();
  for (const m of models) {
    for (const l of partitionLeaves(m.schema, found.parent) ?? []) {
      out.set(JSON.stringify([l.schema, l.name]), l);
    }
  }
  return [...out.values()];
}
