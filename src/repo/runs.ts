/**
 * Run records: `runs/<target>/<time>-<kind>-<random>.json`, one small object
 * per backup, verify, prune or check that ran (or failed to), written once
 * when the run ends. They are the repository's memory of what happened, so
 * that a failure is never silent: `status` reads them for "failures since",
 * `list` for each snapshot's verification, `prune` for the newest verified
 * snapshot it must keep.
 *
 * A record is written after the work it describes; a run killed before
 * writing one leaves no record (its absence is caught by the freshness and
 * missed-run checks of `status`). Recording is best-effort for callers: a
 * failure to record never replaces the run's own error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';

/** What ran. */
export type RunKind = 'backup' | 'verify' | 'prune' | 'check';

/** Who started it. */
export type RunTrigger = 'command' | 'schedule';

/** One problem a run found (verify: a difference; check: a damaged object). */
export interface RunProblem {
  /** `schema.table`, when the problem is in one table. */
  readonly table?: string | undefined;
  /** 0-based chunk position in the table, and the chunk's id. */
  readonly chunk?: number | undefined;
  readonly chunkId?: string | undefined;
  /** `check`: the snapshots affected (up to 20), and the repository object concerned. */
  readonly snapshots?: readonly string[] | undefined;
  readonly object?: string | undefined;
  /** `check`: the kind of finding (`chunk-damaged`, `chunk-missing`, …; src/verify/check.ts); verify: `chunk-damaged` or `chunk-missing` for a chunk it could not read. Absent in older records. */
  readonly kind?: string | undefined;
  readonly message: string;
}

/** A run record as stored. */
export interface RunRecord {
  readonly format: 'flashback-run';
  readonly version: 1;
  readonly id: string;
  readonly kind: RunKind;
  /** The target's name; `null` for repository-wide runs (check). */
  readonly target: string | null;
  /** backup: the snapshot committed; verify: the snapshot tested. */
  readonly snapshot: string | null;
  readonly ok: boolean;
  readonly trigger: RunTrigger;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly seconds: number;
  /** Why it failed: the error's code and message, as a user saw them. */
  readonly error?: { readonly code: string; readonly message: string } | undefined;
  readonly problems?: readonly RunProblem[] | undefined;
  /** Figures worth keeping (bytes, rows, chunks, …). */
  readonly details?: Readonly<Record<string, number | string>> | undefined;
}

/** What a caller gives; the store adds format, version and id. */
export type NewRun = Omit<RunRecord, 'format' | 'version' | 'id'>;

const PREFIX = 'runs/';
const REPOSITORY_SCOPE = '_repository';
/** Names usable as a key segment as they are (configured target names always are). */
const SAFE_SCOPE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const KEY = /^runs\/([^/]+)\/(\d{8}-\d{6})-(backup|verify|prune|check)-([0-9a-f]{6})\.json$/;

/** The folder of a target's records: its name, or a hash for URL targets (names with `/`, `:`, …). */
export function runScope(target: string | null): string {
  if (target === null) return REPOSITORY_SCOPE;
  if (SAFE_SCOPE.test(target) && target !== REPOSITORY_SCOPE) return target;
  return `url-${createHash('sha256').update(target).digest('hex').slice(0, 16)}`;
}

/** Which records: of one target (`null`: repository-wide runs; absent: every target) and kind. */
export interface RunFilter {
  readonly target?: string | null;
  readonly kind?: RunKind;
}

/** Oldest start first (ids break ties). */
function byStart(a: RunRecord, b: RunRecord): number {
  return a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : 1;
}

/** Reads and writes run records. */
export class RunStore {
  constructor(private readonly storage: Storage) {}

  /** Writes a record; returns it as stored. */
  async record(run: NewRun): Promise<RunRecord> {
    const t = run.startedAt.replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    const id = `${t}-${run.kind}-${randomBytes(3).toString('hex')}`;
    const rec: RunRecord = { format: 'flashback-run', version: 1, id, ...run };
    await this.storage.writeIfAbsent(
      `${PREFIX}${runScope(run.target)}/${id}.json`,
      Buffer.from(`${JSON.stringify(rec)}\n`),
    );
    return rec;
  }

  /**
   * Records, oldest first, of one target (or every target) and kind. The kind
   * and time are in the key, so only matching records are read. Unreadable
   * records are skipped: `check` reports them.
   */
  async list(
    filter: RunFilter = {},
    /** Told of each record that exists and cannot be read (not JSON, not a run record). */
    onUnreadable?: (record: UnreadableRun) => void,
  ): Promise<RunRecord[]> {
    const keys = await this.keys(filter);
    const out: RunRecord[] = [];
    // Small objects: read a few at a time (latency-bound on object storage).
    for (let i = 0; i < keys.length; i += 16) {
      const slice = keys.slice(i, i + 16);
      const batch = await Promise.all(slice.map((k) => this.readKey(k.key)));
      for (const [j, r] of batch.entries()) {
        if (r === GARBLED) onUnreadable?.(unreadableRun(slice[j]!.key));
        else if (r !== undefined) out.push(r);
      }
    }
    return out.sort(byStart);
  }

  /**
   * The newest readable record of one target (or every target) and kind.
   * Only the records of the newest second in the keys are read (the key
   * holds the start time to the second), not every record as `list` does.
   */
  async newest(filter: RunFilter = {}): Promise<RunRecord | undefined> {
    const keys = await this.keys(filter);
    for (let end = keys.length; end > 0; ) {
      const second = keys[end - 1]!.second;
      let start = end - 1;
      while (start > 0 && keys[start - 1]!.second === second) start--;
      const read = await Promise.all(keys.slice(start, end).map((k) => this.readKey(k.key)));
      const found = read
        .filter((r): r is RunRecord => r !== undefined && r !== GARBLED)
        .sort(byStart);
      if (found.length > 0) return found.at(-1);
      end = start;
    }
    return undefined;
  }

  /** The keys of the records a filter selects, in key order (start second, then id). */
  private async keys(
    filter: RunFilter,
  ): Promise<Array<{ key: string; second: string; sortKey: string }>> {
    const prefix = filter.target === undefined ? PREFIX : `${PREFIX}${runScope(filter.target)}/`;
    const keys: Array<{ key: string; second: string; sortKey: string }> = [];
    for await (const obj of this.storage.list(prefix)) {
      const m = KEY.exec(obj.key);
      if (m === null) continue;
      if (filter.kind !== undefined && m[3] !== filter.kind) continue;
      keys.push({ key: obj.key, second: m[2]!, sortKey: `${m[2]}-${m[4]}` });
    }
    return keys.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  }

  /**
   * The newest verify record of each snapshot that reached a verdict
   * (reachedVerdict): a verification that could not run says nothing of
   * the snapshot, so it neither makes it "verified" (and never tried again)
   * nor hides an earlier pass.
   */
  async verifications(): Promise<Map<string, RunRecord>> {
    const out = new Map<string, RunRecord>();
    for (const r of await this.list({ kind: 'verify' })) {
      if (r.snapshot !== null && reachedVerdict(r)) out.set(r.snapshot, r);
    }
    return out;
  }

  /** Removes records (by id and target), e.g. those of pruned snapshots. */
  async delete(records: readonly RunRecord[]): Promise<void> {
    for (const r of records)
      await this.storage.delete(`${PREFIX}${runScope(r.target)}/${r.id}.json`);
  }

  /** The record at `key`; undefined if gone meanwhile; GARBLED if it cannot be read. */
  private async readKey(key: string): Promise<RunRecord | undefined | typeof GARBLED> {
    try {
      const r = JSON.parse((await this.storage.read(key)).toString('utf8')) as RunRecord | null;
      return r !== null && r.format === 'flashback-run' ? r : GARBLED;
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return undefined;
      if (err instanceof SyntaxError) return GARBLED;
      throw err;
    }
  }
}

const GARBLED = Symbol('garbled');

/**
 * Whether a verify record says something of its snapshot: it passed, or it
 * found differences or damage (its problems). One that could not run (no
 * scratch server, interrupted) has an error and no problems.
 */
export function reachedVerdict(r: RunRecord): boolean {
  return r.ok || (r.problems?.length ?? 0) > 0;
}

/** A run record that exists and cannot be read: what its key tells. */
export interface UnreadableRun {
  readonly key: string;
  /** The folder: a target's name (or `url-…` hash), `_repository` for repository-wide runs. */
  readonly scope: string;
  readonly kind: RunKind;
  /** Its start, from the key (`YYYYMMDD-HHMMSS`). */
  readonly second: string;
}

function unreadableRun(key: string): UnreadableRun {
  const m = KEY.exec(key)!;
  return { key, scope: m[1]!, kind: m[3] as RunKind, second: m[2]! };
}
