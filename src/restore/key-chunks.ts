/**
 * Which of some wanted keys each chunk of a snapshot's table can hold, from
 * the chunks' first and last keys: readers of a few rows (undo, impact,
 * history) read only those chunks, and pick only those keys out of each
 * (pick.ts). Kept apart from pick.ts: the pick threads load that module,
 * not the key ordering (and the schema model) this needs.
 *
 * Chunks are in key order, so also in the order of any leading run of the
 * key's columns. Flashback reproduces PostgreSQL's order for some types
 * (src/pg/key-order.ts): the leading columns of such types narrow the
 * chunks even when a later one (text under a linguistic collation) cannot
 * be compared. When the first column cannot, every chunk can hold any key.
 */
import { decodeField, splitFields } from '../pg/copy-text.js';
import {
  type ColumnOrder,
  columnOrder,
  compareSortKeys,
  integerColumn,
  type SortKey,
  sortKey,
} from '../pg/key-order.js';
import type { SchemaModel } from '../pg/schema/model.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';
import { integerKey, type KeyCollection } from './pick.js';

/**
 * Per chunk, the keys of `keys` (COPY text: fields escaped, tab-separated)
 * that its [first, last] key range can hold, in key order as far as it is
 * known. `schema` is the snapshot's (undefined: nothing is narrowed).
 */
export function keysByChunk(
  schema: SchemaModel | undefined,
  t: TableSnapshot,
  keys: KeyCollection,
): (t: TableSnapshot, c: ChunkRef) => readonly string[] {
  const all = [...keys.keys()];
  // (The model is read from a manifest's JSON: one without tables narrows nothing.)
  const model = schema?.tables?.find((m) => m.schema === t.schema && m.name === t.name);
  const orders: ColumnOrder[] = [];
  for (const k of t.key) {
    const order = columnOrder(model?.columns.find((c) => c.name === k));
    if (order === undefined) break;
    orders.push(order);
  }
  if (orders.length === 0) return () => all;
  if (t.key.length === 1 && integerColumn(model?.columns.find((c) => c.name === t.key[0]))) {
    const fast = integerKeysByChunk(all);
    if (fast !== undefined) return fast;
  }
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

/**
 * keysByChunk for one integer key column whose keys are all integers as
 * PostgreSQL prints them (integerKey): sorted as a Float64Array, natively,
 * and each chunk's keys printed back from their values. Undoing a DELETE of
 * 2 million rows sorted its keys in 1.2 s as objects with sort keys; this
 * takes a tenth of that. Undefined when a key is not such an integer.
 */
function integerKeysByChunk(
  all: readonly string[],
): ((t: TableSnapshot, c: ChunkRef) => readonly string[]) | undefined {
  const values = new Float64Array(all.length);
  for (let i = 0; i < all.length; i++) {
    const n = integerKey(all[i]!);
    if (n === undefined) return undefined;
    values[i] = n;
  }
  values.sort();
  // The first value not below `bound`.
  const lowerBound = (bound: number): number => {
    let lo = 0;
    let hi = values.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (values[mid]! < bound) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const texts = (from: number, to: number) => Array.from(values.subarray(from, to), String);
  return (_t, c) => {
    const first = c.first?.[0];
    const last = c.last?.[0];
    // A bound that is not a number this order can hold (null, beyond 2^53): no narrowing.
    const lo = first === null || first === undefined ? Number.NaN : Number(first);
    const hi = last === null || last === undefined ? Number.NaN : Number(last);
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) return texts(0, values.length);
    return texts(lowerBound(lo), lowerBound(hi + 1));
  };
}

/** A key's values from its COPY text (most keys have neither tab nor escape: no work). */
function fields(text: string): Array<string | null> {
  if (!text.includes('\t') && !text.includes('\\')) return [text];
  return splitFields(Buffer.from(text, 'utf8')).map(decodeField);
}
