/**
 * Sequences after a restore to a moment (`restore --at`): the change log
 * does not carry sequence changes (pgoutput sends none), so each sequence
 * comes from the snapshot the moment was rebuilt from, behind the rows the
 * log added since. The application's first INSERT into such a database
 * would take a key that exists ("duplicate key value violates unique
 * constraint").
 *
 * So every sequence a restored column draws from is moved past that
 * column's values: the sequences of serial and identity columns, and any
 * sequence a column's default calls (`DEFAULT nextval('ids')`, also one
 * shared by several tables), read from the restored database's catalogs.
 * An ascending sequence is raised to the largest value of its columns, a
 * descending one lowered to the smallest; one already past them is left
 * as it is. Its exact value at the moment is not known.
 */
import type { PgClient } from '../pg/connect.js';

/**
 * A sequence moved: its name, its value before (null: never called), and
 * after; or why it could not be (`error`: the restore stands, committed).
 */
export interface RaisedSequence {
  readonly sequence: string;
  readonly from: string | null;
  readonly to: string;
  readonly error?: string | undefined;
}

interface SequenceUse {
  readonly seq: string;
  readonly tbl: string;
  readonly col: string;
  readonly key: string;
  readonly inc: string;
  readonly start: string;
}

/** Moves the sequences the restored tables (`schema.name`) draw from (see above), in the connected database. */
export async function raiseSequences(
  client: PgClient,
  tables: ReadonlySet<string>,
): Promise<RaisedSequence[]> {
  // (`seq`, `tbl` and `col` quoted as SQL takes them; `key` as `tables` has it.)
  const uses = await client.query<SequenceUse>(`
    WITH uses AS (
      SELECT d.refobjid AS seq, ad.adrelid AS rel, ad.adnum AS att
        FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass
         AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
      UNION
      SELECT d.objid, d.refobjid, d.refobjsubid FROM pg_depend d
       WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
         AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0)
    SELECT quote_ident(sn.nspname) || '.' || quote_ident(sc.relname) AS seq,
           quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS tbl, quote_ident(a.attname) AS col,
           n.nspname || '.' || c.relname AS key, s.seqincrement::text AS inc, s.seqstart::text AS start
      FROM uses u JOIN pg_sequence s ON s.seqrelid = u.seq
      JOIN pg_class sc ON sc.oid = u.seq JOIN pg_namespace sn ON sn.oid = sc.relnamespace
      JOIN pg_class c ON c.oid = u.rel JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.att
      -- (Numbers only: a default such as 'INV-' || nextval('s') on a text
      -- column draws from it too, but its values say nothing of the sequence.)
      JOIN pg_type ty ON ty.oid = a.atttypid
     WHERE c.relkind IN ('r', 'p') AND NOT a.attisdropped
       AND (ty.typcategory = 'N' OR (ty.typtype = 'd' AND (SELECT bt.typcategory FROM pg_type bt WHERE bt.oid = ty.typbasetype) = 'N'))
     ORDER BY 1, 2, 3`);
  const bySequence = new Map<string, SequenceUse[]>();
  for (const u of uses.rows) {
    if (!tables.has(u.key)) continue;
    const list = bySequence.get(u.seq) ?? [];
    list.push(u);
    bySequence.set(u.seq, list);
  }
  const out: RaisedSequence[] = [];
  for (const [seq, list] of bySequence) {
    try {
      const moved = await moveOne(client, seq, list);
      if (moved !== undefined) out.push(moved);
    } catch (err) {
      // After the commit: the rows are in; a sequence left behind is said, not fatal.
      out.push({ sequence: seq, from: null, to: '', error: (err as Error).message });
    }
  }
  return out;
}

/** Moves `seq` past the values of the columns in `uses`, if it is behind them. */
async function moveOne(
  client: PgClient,
  seq: string,
  uses: readonly SequenceUse[],
): Promise<RaisedSequence | undefined> {
  const first = uses[0]!;
  const descending = first.inc.startsWith('-');
  const extreme = descending ? 'min' : 'max';
  // (Every table of the sequence, not ONLY: a partitioned table's rows are in its partitions.)
  const r = await client.query<{ m: string | null; last: string | null }>(
    `SELECT ${extreme}(v)::text AS m, pg_sequence_last_value($1::regclass)::text AS last
       FROM (${uses.map((u) => `SELECT ${extreme}(${u.col})::numeric AS v FROM ${u.tbl}`).join(' UNION ALL ')}) x`,
    [seq],
  );
  const { m, last } = r.rows[0] ?? { m: null, last: null };
  if (m === null || !/^-?\d+$/.test(m)) return undefined;
  const v = BigInt(m);
  // Called: its next value follows `last`. Never called: its next value is its start.
  const behind =
    last === null
      ? descending
        ? v <= BigInt(first.start)
        : v >= BigInt(first.start)
      : descending
        ? v < BigInt(last)
        : v > BigInt(last);
  if (!behind) return undefined;
  await client.query('SELECT setval($1::regclass, $2::bigint, true)', [seq, m]);
  return { sequence: seq, from: last, to: m };
}
