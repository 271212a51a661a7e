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

/** A sequence raised: its name, its value before (null: never called), and after. */
export interface RaisedSequence {
  readonly sequence: string;
  readonly from: string | null;
  readonly to: string;
}

/** Raises the owning sequences of `schema`'s tables (see above) in the connected database. */
export async function raiseSequences(
  client: PgClient,
  schema: SchemaModel,
): Promise<RaisedSequence[]> {
  const out: RaisedSequence[] = [];
  for (const s of schema.sequences) {
    const owner = s.identityOf ?? s.ownedBy;
    if (owner === undefined || !/^\d+$/.test(s.increment)) continue; // (descending: not raised)
    const table = qualify(owner.schema, owner.table);
    // The live sequence behind the column (an identity's is made by its table).
    const r = await client.query<{ seq: string | null; m: string | null; last: string | null }>(
      `SELECT q.seq, (SELECT max(${quoteIdent(owner.column)})::text FROM ONLY ${table}) AS m,
              pg_sequence_last_value(q.seq::regclass)::text AS last
         FROM (SELECT pg_get_serial_sequence($1, $2) AS seq) q`,
      [table, owner.column],
    );
    const { seq, m, last } = r.rows[0] ?? { seq: null, m: null, last: null };
    if (seq === null || m === null || !/^-?\d+$/.test(m)) continue;
    if (last !== null && BigInt(m) <= BigInt(last)) continue;
    await client.query('SELECT setval($1::regclass, $2::bigint, true)', [seq, m]);
    out.push({ sequence: seq, from: last, to: m });
  }
  return out;
}
