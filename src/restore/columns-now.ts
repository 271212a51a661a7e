/**
 * Where a snapshot table's columns are in the live table now. A column's
 * attnum, on the table's OID, survives a rename and tells a column dropped
 * and added again from the one before it; names alone cannot tell a rename
 * from a drop. Used by a restore into a live table (to name a rename in its
 * refusal) and by undo (to put values back under a column's name now).
 */
import type { PgClient } from '../pg/connect.js';
import { qualify } from '../pg/schema/quote.js';
import type { TableSnapshot } from '../repo/snapshots.js';

/** One snapshot column, now. */
export type ColumnNow =
  /** In the table under `name` (its own, or the one it was renamed to). */
  | { readonly kind: 'present'; readonly name: string }
  /** Dropped since (its attnum is gone or dropped). */
  | { readonly kind: 'dropped'; readonly attnum: number }
  /** Not in the table by name, and no column numbers to tell a rename from a drop. */
  | { readonly kind: 'missing' };

/** The live table's columns against a snapshot table's (which must exist now). */
export interface ColumnsNow {
  /** Per column of `t.columns`, in order. */
  readonly columns: readonly ColumnNow[];
  /** The live table's column names (not dropped). */
  readonly names: ReadonlySet<string>;
  /** Whether columns were matched by attnum (the same table by OID, attnums recorded). */
  readonly byNumber: boolean;
  /** The live table's relkind: 'r' ordinary, 'p' partitioned (its rows are in its partitions). */
  readonly relkind: string | undefined;
  /** Whether the live table is a partition now. */
  readonly isPartition: boolean;
  /** Its primary key's columns now, in key order (empty without one). */
  readonly primaryKey: readonly string[];
  /** Its generated columns now (their values are computed, never written). */
  readonly generated: ReadonlySet<string>;
  /** Its GENERATED ALWAYS identity columns now (written only with OVERRIDING SYSTEM VALUE, never updated). */
  readonly identityAlways: ReadonlySet<string>;
}

/**
 * Reads the live table's columns (to_regclass of `t`'s name) and matches
 * `t`'s to them. `sameDatabase`: whether the live database is the one the
 * snapshot was taken of (false: another database's table may have the same
 * OID by chance, so columns are matched by name).
 */
export async function columnsNow(
  client: PgClient,
  t: TableSnapshot,
  sameDatabase = true,
): Promise<ColumnsNow> {
  const r = await client.query<{
    oid: string;
    num: string;
    name: string;
    dropped: string;
    generated: string;
    identity: string;
  }>(
    `SELECT attrelid::text AS oid, attnum::text AS num, attname AS name, attisdropped::text AS dropped,
            attgenerated::text AS generated, attidentity::text AS identity
       FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0`,
    [qualify(t.schema, t.name)],
  );
  const rel = await client.query<{ relkind: string; part: string; pk: string | null }>(
    `SELECT c.relkind::text AS relkind, c.relispartition::text AS part,
            (SELECT json_agg(a.attname ORDER BY k.i)::text
               FROM pg_index x CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY k(n, i)
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
              WHERE x.indrelid = c.oid AND x.indisprimary) AS pk
       FROM pg_class c WHERE c.oid = to_regclass($1)`,
    [qualify(t.schema, t.name)],
  );
  const live = r.rows.filter((x) => x.dropped !== 'true');
  const names = new Set(live.map((x) => x.name));
  const byNumber =
    sameDatabase &&
    t.oid !== undefined &&
    t.attnums !== undefined &&
    r.rows[0]?.oid === String(t.oid);
  const byNum = new Map(r.rows.map((x) => [Number(x.num), x]));
  const columns = t.columns.map((c, j): ColumnNow => {
    if (!byNumber) return names.has(c) ? { kind: 'present', name: c } : { kind: 'missing' };
    const attnum = t.attnums![j]!;
    const now = byNum.get(attnum);
    return now === undefined || now.dropped === 'true'
      ? { kind: 'dropped', attnum }
      : { kind: 'present', name: now.name };
  });
  const info = rel.rows[0];
  return {
    columns,
    names,
    byNumber,
    relkind: info?.relkind,
    isPartition: info?.part === 'true',
    primaryKey: info?.pk == null ? [] : (JSON.parse(info.pk) as string[]),
    generated: new Set(live.filter((x) => x.generated !== '').map((x) => x.name)),
    identityAlways: new Set(live.filter((x) => x.identity === 'a').map((x) => x.name)),
  };
}
