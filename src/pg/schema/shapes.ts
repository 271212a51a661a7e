/**
 * Table shapes: what the schema model leaves out on purpose (it must be
 * equal between two databases with equal schemas) but a change log needs
 * to follow a table across schema changes: the table's OID, which survives
 * renames, and each column's attnum, which survives renames and tells a
 * dropped-and-re-added column from the one before it.
 */
import type { PgClient } from '../connect.js';

/** Schemas that hold no user tables: the catalogs, and Flashback's own (src/capture/schema-events.ts). */
export const INTERNAL_SCHEMA_FILTER = `(n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', '_flashback'))`;

/** One table's identity and column numbers. */
export interface TableShape {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  /** attnum of each (non-dropped) column, by name. */
  readonly attnums: Readonly<Record<string, number>>;
  /**
   * Type OID and type modifier of each column, by name, as pgoutput's
   * Relation messages carry them: a column retyped with no record of it in
   * the change log (capture without event triggers) is told from these.
   */
  readonly types?: Readonly<Record<string, readonly [number, number]>> | undefined;
}

/**
 * Every user table's shape (ordinary and partitioned), keyed `schema.name`.
 * Read in the caller's transaction, so a backup reads the shapes its
 * exported snapshot sees.
 */
export async function readTableShapes(client: PgClient): Promise<Map<string, TableShape>> {
  const r = await client.query<{ oid: string; s: string; n: string; cols: string; types: string }>(
    `SELECT c.oid::text AS oid, n.nspname AS s, c.relname AS n,
            coalesce((SELECT json_object_agg(a.attname, a.attnum)
                        FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}')::text AS cols,
            coalesce((SELECT json_object_agg(a.attname, json_build_array(a.atttypid::bigint, a.atttypmod))
                        FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}')::text AS types
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND ${INTERNAL_SCHEMA_FILTER}`,
  );
  const out = new Map<string, TableShape>();
  for (const row of r.rows) {
    out.set(`${row.s}.${row.n}`, {
      oid: Number(row.oid),
      schema: row.s,
      name: row.n,
      attnums: JSON.parse(row.cols) as Record<string, number>,
      types: JSON.parse(row.types) as Record<string, [number, number]>,
    });
  }
  return out;
}
