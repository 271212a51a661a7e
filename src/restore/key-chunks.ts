/**
 * Which of some wanted keys each chunk of a snapshot's table can hold, from
 * the chunks' first and last keys: readers of a few rows (undo, impact) read
 * only those chunks, and pick only those keys out of each (pick.ts). Kept
 * apart from pick.ts: the pick threads load that module, not the key
 * ordering (and the schema model) this needs.
 */
import { comparatorFor } from '../backup/from-log.js';
import { decodeField, splitFields } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';

/**
 * Per chunk, the keys of `keys` within its [first, last] key range, in key
 * order; undefined when Flashback does not reproduce the key's order (every
 * chunk is then read).
 */
export function keysByChunk(
  schema: SchemaModel,
  t: TableSnapshot,
  keys: ReadonlySet<string>,
): ((t: TableSnapshot, c: ChunkRef) => readonly string[]) | undefined {
  let compare: ReturnType<typeof comparatorFor>;
  try {
    compare = comparatorFor(schema, t);
  } catch {
    return undefined;
  }
  const sorted = [...keys]
    .map((text) => ({ text, values: splitFields(Buffer.from(text, 'utf8')).map(decodeField) }))
    .sort((x, y) => compare(x.values, y.values));
  const all = sorted.map((k) => k.text);
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
    if (c.first === null || c.last === null) return all;
    const from = lowerBound(c.first);
    let to = from;
    while (to < sorted.length && compare(sorted[to]!.values, c.last) <= 0) to++;
    return all.slice(from, to);
  };
}
