/** How a table that inherits (not by partitioning) is recreated. */
import type { TableModel } from './model.js';

/**
 * Whether CREATE TABLE ... INHERITS reproduces the table's column order: it
 * puts the parents' columns first (in parent order, merged by name), then
 * the table's own. When it does not (a column was added to a parent after
 * the child was created), the child is created with all its columns and
 * attached with ALTER TABLE ... INHERIT, which keeps the order but marks the
 * inherited columns and constraints as the child's own too.
 */
export function inheritsKeepsOrder(
  table: TableModel,
  tableByKey: (schema: string, name: string) => TableModel | undefined,
): boolean {
  const order: string[] = [];
  for (const p of table.inherits) {
    const parent = tableByKey(p.schema, p.name);
    if (parent === undefined) return false;
    for (const c of parent.columns) if (!order.includes(c.name)) order.push(c.name);
  }
  for (const c of table.columns) if (!order.includes(c.name)) order.push(c.name);
  return (
    order.length === table.columns.length && order.every((n, i) => table.columns[i]?.name === n)
  );
}
