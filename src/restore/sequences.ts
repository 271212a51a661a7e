/**
 * Sequences after a restore to a moment (`restore --at`): the change log
 * does not carry sequence changes (pgoutput sends none), so each sequence
 * comes from the snapshot the moment was rebuilt from, behind the rows the
 * log added since. The application's first INSERT into such a database
 * would take a key that exists ("duplicate key value violates unique
 * constraint"). Each sequence that owns a column (serial, identity) with a
 * positive increment is raised to the column's largest value; one already
 * past it is left as it is. Its exact value at the moment is not known.
 */
import type { PgClient } from '../pg/connect.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { qualify, quoteIdent } from '../pg/schema/quote.js';

/**
 * A sequence raised: its name, its value before (null: never called), and
 * after; or why it could not be (`error`: the restore stands, committed).
 */
export interface RaisedSequence {
  readonly sequence: string;
  readonly from: string | null;
  readonly to: string;
  readonly error?: string | undefined;
}

/** Raises the owning sequences of `schema`'s tables (see above) in the connected database. */
export async function raiseSequences(
  client: PgClient,
  schema: SchemaModel,
  /** The tables restored (`schema.name`): only their sequences. */
  tables: ReadonlySet<string>,
): Promise<RaisedSequence[]> {
  const out: RaisedSequence[] = [];
  for (const s of schema.sequences) {
    const owner = s.identityOf ?? s.ownedBy;
    if (owner === undefined || !/^\d+$/.test(s.increment)) continue; // (descending: not raised)
    if (!tables.has(`${owner.schema}.${owner.table}`)) continue;
    const table = qualify(owner.schema, owner.table);
    try {
      const raised = await raiseOne(client, table, owner.column);
      if (raised !== undefined) out.push(raised);
    } catch (err) {
      // After the commit: the rows are in; a sequence left behind is said, not fatal.
      out.push({
        sequence: `${table}.${owner.column}`,
        from: null,
        to: '',
        error: (err as Error).message,
      });
    }
  }
  return out;
}

/** Raises the sequence behind `table.column` past the column's largest value, if behind. */
async function raiseOne(
  client: PgClient,
  table: string,
  column: string,
): Promise<RaisedSequence | undefined> {
  // The live sequence behind the column (an identity's is made by its table).
  const r = await client.query<{ seq: string | null; m: string | null; last: string | null }>(
    `SELECT q.seq, (SELECT max(${quoteIdent(column)})::text FROM ONLY ${table}) AS m,
            pg_sequence_last_value(q.seq::regclass)::text AS last
       FROM (SELECT pg_get_serial_sequence($1, $2) AS seq) q`,
    [table, column],
  );
  const { seq, m, last } = r.rows[0] ?? { seq: null, m: null, last: null };
  if (seq === null || m === null || !/^-?\d+$/.test(m)) return undefined;
  if (last !== null && BigInt(m) <= BigInt(last)) return undefined;
  await client.query('SELECT setval($1::regclass, $2::bigint, true)', [seq, m]);
  return { sequence: seq, from: last, to: m };
}
