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
}

/** Reads the live table's columns (to_regclass of `t`'s name) and matches `t`'s to them. */
export async function columnsNow(client: PgClient, t: TableSnapshot): Promise<ColumnsNow> {
  const r = await client.query<{ oid: string; num: string; name: string; dropped: string }>(
    `SELECT attrelid::text AS oid, attnum::text AS num, attname AS name, attisdropped::text AS dropped
       FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0`,
    [qualify(t.schema, t.name)],
  );
  const names = new Set(r.rows.filter((x) => x.dropped !== 'true').map((x) => x.name));
  const byNumber =
    t.oid !== undefined && t.attnums !== undefined && r.rows[0]?.oid === String(t.oid);
  const byNum = new Map(r.rows.map((x) => [Number(x.num), x]));
  const columns = t.columns.map((c, j): ColumnNow => {
    if (!byNumber) return names.has(c) ? { kind: 'present', name: c } : { kind: 'missing' };
    const attnum = t.attnums![j]!;
    const now = byNum.get(attnum);
    return now === undefined || now.dropped === 'true'
      ? { kind: 'dropped', attnum }
      : { kind: 'present', name: now.name };
  });
  return { columns, names, byNumber };
}
