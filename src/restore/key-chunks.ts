/**
 * Which of some wanted keys each chunk of a snapshot's table can hold, from
 * the chunks' first and last keys: readers of a few rows (undo, impact,
 * history) read only those chunks, and pick only those keys out of each
 * (pick.ts). Kept apart from pick.ts: the pick threads load that module,
 * not the key ordering (and the schema model) this needs.
 *
 * Chunks are in key order, so also in the order of any leading run of the
 * key's columns. Flashback reproduces PostgreSQL's order for some types
 * (from-log.ts, columnOrder): the leading columns of such types narrow the
 * chunks even when a later one (text under a linguistic collation) cannot
 * be compared. When the first column cannot, every chunk can hold any key.
 */
import { columnOrder, keyComparator } from '../backup/from-log.js';
import { decodeField, splitFields } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';

/**
 * Per chunk, the keys of `keys` (COPY text: fields escaped, tab-separated)
 * that its [first, last] key range can hold, in key order as far as it is
 * known. `schema` is the snapshot's (undefined: nothing is narrowed).
 */
export function keysByChunk(
  schema: SchemaModel | undefined,
  t: TableSnapshot,
  keys: ReadonlySet<string>,
): (t: TableSnapshot, c: ChunkRef) => readonly string[] {
  const all = [...keys];
  // (The model is read from a manifest's JSON: one without tables narrows nothing.)
  const model = schema?.tables?.find((m) => m.schema === t.schema && m.name === t.name);
  const per: Array<(x: string, y: string) => number> = [];
  for (const k of t.key) {
    const order = columnOrder(model?.columns.find((c) => c.name === k));
    if (order === undefined) break;
    per.push(order);
  }
  if (per.length === 0) return () => all;
  const compare = keyComparator(per);
  let sorted: Array<{ text: string; values: Array<string | null> }>;
  try {
    sorted = all
      .map((text) => ({ text, values: splitFields(Buffer.from(text, 'utf8')).map(decodeField) }))
      .sort((x, y) => compare(x.values, y.values));
  } catch {
    // A key the order cannot read (not an integer where one is due): no narrowing.
    return () => all;
  }
  const texts = sorted.map((k) => k.text);
  // The first key not below `bound`.
  const lowerBound = (bound: readonly (string | null)[]): number => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(sorted[mid]!.values, bound) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return (_t, c) => {
    if (c.first === null || c.last === null) return texts;
    const from = lowerBound(c.first);
    let to = from;
    while (to < sorted.length && compare(sorted[to]!.values, c.last) <= 0) to++;
    return texts.slice(from, to);
  };
}
