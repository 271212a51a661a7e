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
import { decodeField, splitFields } from '../pg/copy-text.js';
import {
  type ColumnOrder,
  columnOrder,
  compareSortKeys,
  type SortKey,
  sortKey,
} from '../pg/key-order.js';
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
  const orders: ColumnOrder[] = [];
  for (const k of t.key) {
    const order = columnOrder(model?.columns.find((c) => c.name === k));
    if (order === undefined) break;
    orders.push(order);
  }
  if (orders.length === 0) return () => all;
  let sorted: Array<{ text: string; key: SortKey }>;
  try {
    sorted = all
      .map((text) => ({ text, key: sortKey(orders, fields(text)) }))
      .sort((x, y) => compareSortKeys(x.key, y.key));
  } catch {
    // A key the order cannot read (not an integer where one is due): no narrowing.
    return () => all;
  }
  const texts = sorted.map((k) => k.text);
  // The first key not below `bound`.
  const lowerBound = (bound: SortKey): number => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareSortKeys(sorted[mid]!.key, bound) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return (_t, c) => {
    if (c.first === null || c.last === null) return texts;
    let first: SortKey;
    let last: SortKey;
    try {
      first = sortKey(orders, c.first);
      last = sortKey(orders, c.last);
    } catch {
      return texts;
    }
    const from = lowerBound(first);
    let to = from;
    while (to < sorted.length && compareSortKeys(sorted[to]!.key, last) <= 0) to++;
    return texts.slice(from, to);
  };
}

/** A key's values from its COPY text (most keys have neither tab nor escape: no work). */
function fields(text: string): Array<string | null> {
  if (!text.includes('\t') && !text.includes('\\')) return [text];
  return splitFields(Buffer.from(text, 'utf8')).map(decodeField);
}
