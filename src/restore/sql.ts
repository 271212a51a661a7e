/** SQL fragments shared by the restore paths. */
import { quoteIdent } from '../pg/schema/quote.js';

/** ` (a, b)` for a column list; empty for a table without columns (`COPY t ()` is not valid SQL). */
export function columnList(columns: readonly string[]): string {
  return columns.length === 0 ? '' : ` (${columns.map(quoteIdent).join(', ')})`;
}
