/**
 * How backup, show and restore print what a backup could not reproduce
 * (schema.unsupported), and what a user can do about objects that others
 * need: a restore creating those fails unless the object exists first.
 */
import type { UnsupportedObject } from '../pg/schema/model.js';

/** `kind name: reason`, with what needs it. */
export function describeUnsupported(u: UnsupportedObject): string {
  const base = `${u.kind} ${u.name}: ${u.reason}`;
  const by = u.neededBy ?? [];
  if (by.length === 0) return base;
  const shown = by.length > 5 ? [...by.slice(0, 5), `${by.length - 5} more`] : by;
  return `${base}; needed by ${shown.join(', ')}`;
}

/**
 * The warning for a snapshot whose restore needs objects it does not
 * recreate; undefined when there are none.
 */
export function blockedRestoreWarning(
  unsupported: readonly UnsupportedObject[],
): string | undefined {
  const needed = unsupported.filter((u) => (u.neededBy ?? []).length > 0);
  if (needed.length === 0) return undefined;
  return `a full restore of this snapshot fails unless ${needed.map((u) => `${u.kind} ${u.name}`).join(', ')} ${needed.length === 1 ? 'exists' : 'exist'} in the target first: restore only the tables that do not need ${needed.length === 1 ? 'it' : 'them'} (--table), or create ${needed.length === 1 ? 'it' : 'them'} in an empty database and restore into it (without --create), which works only where ${needed.length === 1 ? 'it needs' : 'they need'} nothing the snapshot creates (a type of its own: the restore then stops on that type, already there); \`flashback verify\` tells whether a snapshot restores`;
}
