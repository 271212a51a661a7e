/**
 * Table names as users type them on the command line: `name` or
 * `schema.name`, as in SQL (unquoted parts fold to lower case, "double
 * quotes" keep a name as written). Shared by every command that takes a
 * table (history, impact; restore and undo for quoted names).
 */
import { UsageError } from '../../errors.js';

/** A table reference: `name`, `schema.name`, with "double quotes" for names needing them. */
export interface TableName {
  readonly schema: string | undefined;
  readonly name: string;
}

/** Parses `name` / `schema.name`; unquoted parts fold to lower case, quoted ones are kept (`""` is a quote). */
export function parseTableName(text: string): TableName {
  const parts: string[] = [];
  let i = 0;
  const t = text.trim();
  const bad = (why: string) =>
    new UsageError(`table "${text}": ${why}`, {
      hint: 'give the table as name or schema.name, e.g. subscribers or public.subscribers',
    });
  while (i <= t.length) {
    let part = '';
    if (t[i] === '"') {
      i++;
      for (;;) {
        if (i >= t.length) throw bad('unterminated quoted name');
        if (t[i] === '"') {
          if (t[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += t[i];
        i++;
      }
    } else {
      const dot = t.indexOf('.', i);
      const end = dot < 0 ? t.length : dot;
      part = t.slice(i, end).toLowerCase();
      if (part.includes('"')) throw bad('a quote inside a name must start it');
      i = end;
    }
    if (part === '') throw bad('empty name');
    parts.push(part);
    if (i >= t.length) break;
    if (t[i] !== '.') throw bad(`unexpected "${t[i]}" after a quoted name`);
    i++;
    if (i >= t.length) throw bad('empty name after "."');
  }
  if (parts.length === 1) return { schema: undefined, name: parts[0]! };
  if (parts.length === 2) return { schema: parts[0]!, name: parts[1]! };
  throw bad('expected at most schema.name');
}

/**
 * `text` parsed as SQL does (parseTableName), unless no table of that name
 * exists (`exists`) and one is named exactly as typed: `--table Orders`
 * finds "Orders" when there is no orders (restore and undo match names as
 * written, and users type what they see).
 */
export function resolveTableName(text: string, exists: (n: TableName) => boolean): TableName {
  const folded = parseTableName(text);
  if (text.includes('"') || text === text.toLowerCase() || exists(folded)) return folded;
  const parts = text.trim().split('.');
  if (parts.length > 2 || parts.some((p) => p === '')) return folded;
  const typed: TableName =
    parts.length === 1
      ? { schema: undefined, name: parts[0]! }
      : { schema: parts[0]!, name: parts[1]! };
  return exists(typed) ? typed : folded;
}
