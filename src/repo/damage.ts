/**
 * Which chunks are known to be missing or damaged now, from the run records.
 *
 * `check` and `verify` each record the chunks they found bad; what makes a
 * chunk whole again, or shows it is, comes later and from other runs. The
 * newest run alone is not the answer: a plain `check` (which only lists and
 * sizes chunks) after a `check --read-data` that found a chunk's content
 * damaged has not looked at that content, and taking it as the verdict
 * cleared a real finding (status turned OK, serve sent "recovered", the next
 * backup reused the damaged chunk). So the records are replayed in order:
 * - a check that read every chunk (`--read-data`) is the whole picture: what
 *   it found is the damage, nothing else;
 * - any other check saw every chunk's presence and size: its missing and
 *   wrong-size findings replace the earlier ones of those kinds; damage
 *   found by reading stays, and what it read and found damaged is added;
 * - a verify that passed read every chunk of its snapshot: those are whole;
 *   one that failed adds the chunk it could not read;
 * - a backup that committed, started after a chunk was known bad, and uses
 *   that chunk, wrote it again (it does not reuse a known bad chunk:
 *   src/backup/backup.ts): it is whole. Not a `backup --from-log`: it
 *   passes the previous snapshot's unchanged chunks on unread (it has no
 *   source to write them from), so its snapshot holds the damage too.
 * `holders` says which snapshots use each chunk named in the records (read
 * from the manifests only when there is damage to place: `readKnownDamage`).
 */

import type { Storage } from '../storage/storage.js';
import type { ReuseVerdict } from './chunks.js';
import type { RunProblem, RunRecord } from './runs.js';
import { RunStore } from './runs.js';
import { SnapshotStore, type TableSnapshot } from './snapshots.js';

/** A chunk known bad. */
export interface KnownDamage {
  readonly chunkId: string;
  /** Found by reading its content (`damaged`), or by its absence or size (`missing`). */
  readonly kind: 'damaged' | 'missing';
  /** The run that found it: its kind, and when it finished. */
  readonly foundBy: 'check' | 'verify';
  readonly foundAt: string;
  readonly message: string;
  /** The snapshots in the repository that use it (empty when none is known). */
  readonly snapshots: readonly string[];
}

/** How a recorded problem was found: by reading the chunk, or by listing it. */
function problemKind(p: RunProblem): KnownDamage['kind'] {
  if (p.kind !== undefined) return p.kind === 'chunk-damaged' ? 'damaged' : 'missing';
  // Records from before the kind was written: their messages say.
  return /\bis missing\b|\bstored size\b|\bsize\b/.test(p.message) &&
    !/\bis damaged\b/.test(p.message)
    ? 'missing'
    : 'damaged';
}

/** Every chunk id that a check or verify ever recorded as bad (the candidates to place). */
export function damageCandidates(runs: readonly RunRecord[]): Set<string> {
  const out = new Set<string>();
  for (const r of runs) {
    if (r.kind !== 'check' && r.kind !== 'verify') continue;
    for (const p of r.problems ?? []) if (p.chunkId !== undefined) out.add(p.chunkId);
  }
  return out;
}

/** The chunks known bad now (see above). Pure. */
export function knownDamage(
  runs: readonly RunRecord[],
  holders: ReadonlyMap<string, ReadonlySet<string>>,
): Map<string, KnownDamage> {
  const bad = new Map<string, Omit<KnownDamage, 'snapshots'>>();
  const uses = (id: string, snapshot: string | null) =>
    snapshot !== null && holders.get(id)?.has(snapshot) === true;
  const ordered = [...runs].sort((a, b) => (a.finishedAt < b.finishedAt ? -1 : 1));
  for (const r of ordered) {
    if (r.kind === 'check') {
      // Interrupted or failed before it had looked: it knows nothing.
      if (!r.ok && (r.problems ?? []).length === 0) continue;
      const full = r.details?.readData === '100%';
      for (const [id, d] of bad) if (full || d.kind === 'missing') bad.delete(id);
    } else if (r.kind === 'verify') {
      if (r.ok) for (const id of bad.keys()) if (uses(id, r.snapshot)) bad.delete(id);
    } else if (r.kind === 'backup') {
      // (Older records of a snapshot from the log carry `fromLog` instead of `mode`.)
      if (r.ok && r.details?.mode !== 'from-log' && r.details?.fromLog === undefined) {
        for (const [id, d] of bad)
          if (d.foundAt < r.startedAt && uses(id, r.snapshot)) bad.delete(id);
      }
      continue;
    } else continue;
    for (const p of r.problems ?? []) {
      if (p.chunkId === undefined) continue;
      bad.set(p.chunkId, {
        chunkId: p.chunkId,
        kind: problemKind(p),
        foundBy: r.kind,
        foundAt: r.finishedAt,
        message: p.message,
      });
    }
  }
  const out = new Map<string, KnownDamage>();
  for (const [id, d] of bad) out.set(id, { ...d, snapshots: [...(holders.get(id) ?? [])].sort() });
  return out;
}

/** Per snapshot id: the candidates it uses, for the candidates it was last read against. */
const placed = new WeakMap<object, Map<string, { key: string; hits: readonly string[] }>>();

/**
 * `knownDamage` for a repository: its run records (or those given) and,
 * only when some chunk was ever recorded bad, the manifests read to place
 * those chunks (cached per snapshot while the candidates stay the same).
 */
export async function readKnownDamage(
  storage: Storage,
  given?: readonly RunRecord[],
): Promise<Map<string, KnownDamage>> {
  const runs = given ?? (await new RunStore(storage).list());
  const candidates = damageCandidates(runs);
  const holders = new Map<string, Set<string>>();
  if (candidates.size > 0) {
    const key = [...candidates].sort().join(',');
    let cache = placed.get(storage);
    if (cache === undefined) {
      cache = new Map();
      placed.set(storage, cache);
    }
    const store = new SnapshotStore(storage, { onUnreadable: () => {} });
    for (const id of await store.ids()) {
      let entry = cache.get(id);
      if (entry === undefined || entry.key !== key) {
        let hits: string[] = [];
        try {
          const m = await store.read(id);
          hits = [
            ...new Set(
              m.tables.flatMap((t) => t.chunks.map((c) => c.id).filter((c) => candidates.has(c))),
            ),
          ];
        } catch {
          continue; // (an unreadable manifest is reported elsewhere)
        }
        entry = { key, hits };
        cache.set(id, entry);
      }
      for (const c of entry.hits) {
        let s = holders.get(c);
        if (s === undefined) {
          s = new Set();
          holders.set(c, s);
        }
        s.add(id);
      }
    }
  }
  return knownDamage(runs, holders);
}

/**
 * How a backup treats the chunks already stored (ChunkStore.distrust), given
 * the tables of the snapshot it follows (the target's newest):
 * - known missing or damaged (found by a `check` or `verify`, and not shown
 *   whole or written again since): written again;
 * - recorded by that snapshot with another size (cut short: a full disk, a
 *   partial copy): written again;
 * - recorded with this size: reused unread (the common case, free);
 * - not recorded by it (an older snapshot's, or another target's): read and
 *   reused only if whole. Nothing the backup reads records this chunk's size,
 *   so a cut or damaged copy would otherwise be reused, and its size written
 *   into the new manifest would make `check`'s size test blind to it.
 * Damage of the recorded size that nothing has read yet is not seen here:
 * `verify` and `check --read-data` find it, and the next backup rewrites it.
 */
export async function chunkReuseRule(
  storage: Storage,
  previous: Iterable<TableSnapshot>,
): Promise<(id: string, storedSize: number) => ReuseVerdict> {
  const recorded = new Map<string, number>();
  for (const t of previous) for (const c of t.chunks) recorded.set(c.id, c.stored);
  const damaged = await readKnownDamage(storage);
  return (id, size) => {
    if (damaged.has(id)) return 'rewrite';
    const r = recorded.get(id);
    if (r === undefined) return 'read';
    return r === size ? 'reuse' : 'rewrite';
  };
}

/** The snapshots that use a chunk known bad: not restorable as they are, whatever verified them before. */
export function damagedSnapshots(damage: ReadonlyMap<string, KnownDamage>): Set<string> {
  return new Set([...damage.values()].flatMap((d) => d.snapshots));
}
