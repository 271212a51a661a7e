/**
 * Snapshot manifests: `snapshots/<id>.json`. A manifest is written last,
 * with write-if-absent, after every chunk it names is stored: it is the
 * commit point of a backup. A backup that dies before it leaves only
 * unreferenced chunks (removed by prune), never a partial snapshot.
 */
import { createHash, randomBytes } from 'node:crypto';
import { DamagedError, RepositoryError, UsageError } from '../errors.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import type { Repository } from './repository.js';

/** The manifest format version this build writes and the newest it reads. */
export const SNAPSHOT_FORMAT_VERSION = 1;

/** One chunk of a table, in key order. */
export interface ChunkRef {
  /** sha256 of the chunk's content (COPY text lines). */
  readonly id: string;
  readonly rows: number;
  /** Content bytes (uncompressed COPY text). */
  readonly size: number;
  /** Bytes of the stored object. */
  readonly stored: number;
  /** Key column values (text form) of the chunk's first and last rows; null without a key. */
  readonly first: ReadonlyArray<string | null> | null;
  readonly last: ReadonlyArray<string | null> | null;
}

/** How a table's rows are ordered and chunked. */
export type KeyKind = 'primary' | 'replica-identity' | 'none';

/** One table's data in a snapshot. */
export interface TableSnapshot {
  readonly schema: string;
  readonly name: string;
  /** Columns in the order the chunks hold them (key columns first). */
  readonly columns: readonly string[];
  /** Key columns (a prefix of `columns`); empty when keyKind is 'none'. */
  readonly key: readonly string[];
  readonly keyKind: KeyKind;
  /**
   * Chunking parameter: a chunk ends after a row whose boundary hash has its
   * low `boundaryBits` bits zero. Kept per table and reused by later backups
   * so boundaries, and so chunks, stay stable.
   */
  readonly boundaryBits: number;
  readonly rows: number;
  readonly bytes: number;
  readonly storedBytes: number;
  readonly chunks: readonly ChunkRef[];
  /** The table's OID on the source (absent in snapshots from before it was recorded). */
  readonly oid?: number;
  /** attnum of each of `columns` on the source, in the same order (with `oid`). */
  readonly attnums?: readonly number[];
  /**
   * Type OID and type modifier of each of `columns` on the source, in the
   * same order (absent in older snapshots): a restore to a moment refuses a
   * column retyped since with no schema record in the change log.
   */
  readonly types?: readonly (readonly [number, number])[];
}

/** Totals of a snapshot, for `list`. */
export interface SnapshotTotals {
  readonly tables: number;
  readonly rows: number;
  /** Uncompressed COPY bytes. */
  readonly bytes: number;
  /** Stored bytes of all chunks referenced. */
  readonly storedBytes: number;
  /** Chunks and stored bytes this backup added to the repository. */
  readonly newChunks: number;
  readonly newBytes: number;
}

/** A snapshot manifest. `schema` is the pg layer's schema model (opaque here). */
export interface SnapshotManifest<Schema = unknown> {
  readonly format: 'flashback-snapshot';
  readonly version: number;
  readonly id: string;
  readonly target: string;
  readonly database: string;
  /** The source database's encoding and locale, for `restore --create`. */
  readonly encoding: string;
  readonly collate: string;
  readonly ctype: string;
  /**
   * The database's locale provider when it is not libc (PostgreSQL 15+:
   * `CREATE DATABASE … LOCALE_PROVIDER icu`), with its locale and ICU rules
   * (16+). Absent: libc, or a snapshot from before it was recorded. Text
   * sorts by it, so a restore without it would order keys otherwise.
   */
  readonly localeProvider?: 'icu' | 'builtin';
  readonly locale?: string;
  readonly icuRules?: string;
  readonly systemIdentifier: string;
  readonly host: string;
  readonly serverVersion: string;
  readonly serverVersionNum: number;
  /** The exported snapshot's consistent point: the change log starts here. */
  readonly lsn: string;
  /**
   * The source server's clock just after the snapshot was exported (ISO,
   * microseconds): every transaction in the snapshot committed before it.
   * Absent in manifests written before it was recorded.
   */
  readonly consistentAt?: string | undefined;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly schema: Schema;
  readonly tables: readonly TableSnapshot[];
  /**
   * Present when the snapshot was built from an earlier one plus the change
   * log (`backup --from-log`), not by reading the source.
   */
  readonly fromLog?:
    | { readonly base: string; readonly transactions: number; readonly changes: number }
    | undefined;
  readonly totals: SnapshotTotals;
  /**
   * `<id>:<sha256 hex>`: the manifest's id, and the hash of its JSON
   * without this field, as written. A reader that finds it checks it (a
   * flipped digit of the LSN restored another moment, with exit 0). Absent
   * in manifests written before it; one naming another id was copied from
   * the manifest it was built from by a build that did not know the field
   * (`backup --from-log`), and is not checked.
   */
  readonly checksum?: string | undefined;
}

/**
 * When a snapshot's data is from, in ms: its consistent point (the source's
 * clock), else, in manifests from before that was recorded, its start.
 */
export function dataTime(m: Pick<SnapshotManifest, 'consistentAt' | 'startedAt'>): number {
  return Date.parse(m.consistentAt ?? m.startedAt);
}

/**
 * Orders snapshots by the moment of their data, oldest first, then by id:
 * "newest" is the newest data, not the last written (`backup --from-log
 * --lsn` writes an earlier moment after later ones).
 */
export function byDataTime(
  a: Pick<SnapshotManifest, 'consistentAt' | 'startedAt' | 'id'>,
  b: Pick<SnapshotManifest, 'consistentAt' | 'startedAt' | 'id'>,
): number {
  return dataTime(a) - dataTime(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** The checksum of a manifest's body (everything but `checksum`, in its key order). */
function manifestChecksum(body: object): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('hex');
}

/**
 * What a manifest lacks that readers rely on (list, show, prune, restore
 * read these without checking), or undefined when nothing: a manifest
 * edited or cut so is damaged, not a crash (exit 70) in each of them.
 */
function manifestDefect(m: Record<string, unknown>): string | undefined {
  for (const f of ['id', 'target', 'lsn', 'startedAt'] as const) {
    if (typeof m[f] !== 'string') return `no ${f}`;
  }
  if (m.totals === null || typeof m.totals !== 'object') return 'no totals';
  const tables = m.tables as unknown[];
  for (const [i, t] of tables.entries()) {
    const x = t as Record<string, unknown> | null;
    if (
      x === null ||
      typeof x !== 'object' ||
      typeof x.schema !== 'string' ||
      typeof x.name !== 'string' ||
      !Array.isArray(x.columns) ||
      !Array.isArray(x.key) ||
      !Array.isArray(x.chunks)
    ) {
      return `table ${i + 1} lacks its name, columns, key or chunks`;
    }
    for (const c of x.chunks as unknown[]) {
      const r = c as Record<string, unknown> | null;
      if (
        r === null ||
        typeof r !== 'object' ||
        typeof r.id !== 'string' ||
        typeof r.rows !== 'number'
      )
        return `a chunk of ${String(x.schema)}.${String(x.name)} lacks its id or rows`;
    }
  }
  return undefined;
}

/** A new snapshot id: UTC time (sortable, readable) plus randomness. */
export function newSnapshotId(at = new Date()): string {
  const t = at.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${t}-${randomBytes(2).toString('hex')}`;
}

const ID = /^\d{8}-\d{6}-[0-9a-f]{4}$/;

function manifestKey(id: string): string {
  return `snapshots/${id}.json`;
}

function tombstoneKey(id: string): string {
  return `snapshots/${id}.pruned`;
}

function tombstone(): Buffer {
  return Buffer.from(`${JSON.stringify({ pruned: new Date().toISOString() })}\n`);
}

/**
 * A manifest this build cannot read: damaged (DamagedError `snapshot.damaged`,
 * exit 8) or of a newer format (RepositoryError `repository.version`).
 */
export interface UnreadableManifest {
  readonly id: string;
  readonly error: DamagedError | RepositoryError;
}

/** Options of a SnapshotStore. */
export interface SnapshotStoreOptions {
  /**
   * Called for each unreadable manifest `all` and `resolve('latest')` meet,
   * which then go on without it: one damaged snapshot must not stop a
   * restore from the others. Without it they throw: prune decides what to
   * delete from a complete view only.
   */
  readonly onUnreadable?: ((m: UnreadableManifest) => void) | undefined;
}

/** Reads and writes manifests. */
export class SnapshotStore {
  constructor(
    private readonly storage: Storage,
    private readonly options: SnapshotStoreOptions = {},
  ) {}

  /** The store of a repository, reporting unreadable manifests as the repository was opened to (see Repository.open). */
  static of(repo: Repository): SnapshotStore {
    return new SnapshotStore(repo.storage, { onUnreadable: repo.options.onUnreadableManifest });
  }

  /** Commits a snapshot. Fails if the id exists (never overwrites a snapshot). */
  async commit(manifest: SnapshotManifest): Promise<void> {
    // (A manifest made from a read one carries its checksum: not part of the body.)
    const { checksum: _, ...body } = manifest;
    const checksum = `${manifest.id}:${manifestChecksum(body)}`;
    const written = await this.storage.writeIfAbsent(
      manifestKey(manifest.id),
      Buffer.from(`${JSON.stringify({ ...body, checksum })}\n`),
    );
    if (!written) throw new RepositoryError('exists', `snapshot ${manifest.id} already exists`);
  }

  /**
   * Deletes a snapshot: removing its manifest makes it disappear atomically
   * (its chunks become unreferenced, for prune to collect). Only prune calls
   * this, under the exclusive lock. Deleting a missing snapshot is not an error.
   * A tombstone (`snapshots/<id>.pruned`) marks it as removed by prune: a
   * manifest gone without one was not, and status says so (`catalog`). It is
   * written first, so a prune killed between the two leaves a snapshot with
   * a tombstone (still there, and removed by the next prune), never one gone
   * without (a critical finding for good: written after, a kill in between
   * did that). On a full disk (what prune is run for) the tombstone may not
   * fit until the manifest is gone: then it is written after, and one that
   * still cannot be is kept for `writeTombstones`, which prune calls again
   * once chunks are freed.
   */
  async delete(id: string): Promise<void> {
    const marked = await this.storage
      .write(tombstoneKey(id), tombstone())
      .then(() => true)
      .catch(() => false);
    await this.storage.delete(manifestKey(id));
    if (marked) return;
    this.unmarked.add(id);
    await this.writeTombstones().catch(() => {});
  }

  /** Removed snapshots whose tombstone is not written yet (see delete). */
  private readonly unmarked = new Set<string>();

  /** Writes the tombstones delete could not; throws if one still cannot be. */
  async writeTombstones(): Promise<void> {
    for (const id of [...this.unmarked]) {
      await this.storage.write(tombstoneKey(id), tombstone());
      this.unmarked.delete(id);
    }
  }

  /** Reads one manifest; rejects a newer format version. */
  async read(id: string): Promise<SnapshotManifest> {
    let bytes: Buffer;
    try {
      bytes = await this.storage.read(manifestKey(id));
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw unknownSnapshot(id);
      throw err;
    }
    let m: SnapshotManifest;
    try {
      m = JSON.parse(bytes.toString('utf8')) as SnapshotManifest;
    } catch {
      throw new DamagedError('snapshot.damaged', `snapshot ${id}: manifest is not valid JSON`, {
        hint: DAMAGED_HINT,
      });
    }
    if (
      m === null ||
      typeof m !== 'object' ||
      m.format !== 'flashback-snapshot' ||
      typeof m.version !== 'number' ||
      !Array.isArray(m.tables)
    ) {
      throw new DamagedError('snapshot.damaged', `snapshot ${id}: not a snapshot manifest`, {
        hint: DAMAGED_HINT,
      });
    }
    if (m.version > SNAPSHOT_FORMAT_VERSION) {
      throw new RepositoryError(
        'version',
        `snapshot ${id} has format version ${m.version}; this Flashback reads up to ${SNAPSHOT_FORMAT_VERSION}`,
        {
          hint: 'upgrade Flashback to read it',
        },
      );
    }
    const { checksum, ...body } = m;
    const sum = typeof checksum === 'string' ? /^(.*):([0-9a-f]{64})$/.exec(checksum) : null;
    if (
      checksum !== undefined &&
      (sum === null || (sum[1] === m.id && sum[2] !== manifestChecksum(body)))
    ) {
      throw new DamagedError(
        'snapshot.damaged',
        `snapshot ${id}: manifest does not match its checksum (changed or damaged since it was written)`,
        { hint: DAMAGED_HINT },
      );
    }
    const defect = manifestDefect(m as unknown as Record<string, unknown>);
    if (defect !== undefined) {
      throw new DamagedError(
        'snapshot.damaged',
        `snapshot ${id}: manifest is incomplete (${defect})`,
        {
          hint: DAMAGED_HINT,
        },
      );
    }
    return body as SnapshotManifest;
  }

  /** Every snapshot id, oldest first. */
  async ids(): Promise<string[]> {
    return (await this.catalog()).ids;
  }

  /**
   * Every snapshot id, oldest first (see ids), and the ids prune removed
   * (those with a tombstone: see delete), from one listing of `snapshots/`.
   */
  async catalog(): Promise<{ ids: string[]; pruned: Set<string> }> {
    const ids: string[] = [];
    const pruned = new Set<string>();
    for await (const obj of this.storage.list('snapshots/')) {
      const m = /^snapshots\/(.+)\.(json|pruned)$/.exec(obj.key);
      if (m === null || !ID.test(m[1]!)) continue;
      if (m[2] === 'json') ids.push(m[1]!);
      else pruned.add(m[1]!);
    }
    ids.sort();
    // Ids sort by the second their snapshot started; two of the same second
    // (the rest of the id is random) are ordered by when they started, from
    // their manifests (as prune orders them).
    for (let i = 0; i < ids.length; ) {
      let j = i + 1;
      while (j < ids.length && ids[j]!.slice(0, 15) === ids[i]!.slice(0, 15)) j++;
      if (j - i > 1) {
        const group = await Promise.all(
          ids.slice(i, j).map(async (id) => ({ id, at: await this.startedAt(id) })),
        );
        group.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.id < b.id ? -1 : 1));
        ids.splice(i, j - i, ...group.map((g) => g.id));
      }
      i = j;
    }
    return { ids, pruned };
  }

  /** A manifest's startedAt, or '' when it is damaged (`check` reports that); storage errors pass. */
  private async startedAt(id: string): Promise<string> {
    try {
      return (await this.read(id)).startedAt;
    } catch (err) {
      if (unreadable(err) || err instanceof UsageError) return ''; // damaged, or gone meanwhile
      throw err;
    }
  }

  /**
   * Every readable manifest, oldest data first (byDataTime), optionally of one target, and
   * every unreadable one (of any target: its target cannot be read either).
   * Storage errors pass.
   */
  async scan(
    target?: string,
  ): Promise<{ manifests: SnapshotManifest[]; unreadable: UnreadableManifest[] }> {
    const manifests: SnapshotManifest[] = [];
    const bad: UnreadableManifest[] = [];
    for (const id of await this.ids()) {
      let m: SnapshotManifest;
      try {
        m = await this.read(id);
      } catch (err) {
        if (err instanceof UsageError) continue; // removed (by prune) since listed
        if (!unreadable(err)) throw err;
        bad.push({ id, error: err });
        continue;
      }
      if (target === undefined || m.target === target) manifests.push(m);
    }
    manifests.sort(byDataTime);
    return { manifests, unreadable: bad };
  }

  /**
   * Every manifest, oldest data first (byDataTime), optionally of one
   * target. An unreadable one goes to `onUnreadable` and is left out, or
   * without that option is thrown.
   */
  async all(target?: string): Promise<SnapshotManifest[]> {
    const { manifests, unreadable } = await this.scan(target);
    const first = unreadable[0];
    if (first !== undefined && this.options.onUnreadable === undefined) throw first.error;
    for (const u of unreadable) this.options.onUnreadable?.(u);
    return manifests;
  }

  /**
   * Resolves what a user typed: a full id, a unique prefix of one, or
   * `latest` (optionally of one target): the newest data, byDataTime.
   * Throws UsageError naming the problem.
   */
  async resolve(ref: string, target?: string): Promise<SnapshotManifest> {
    const ids = await this.ids();
    if (ref === 'latest') {
      const all = await this.all(target);
      const last = all[all.length - 1];
      if (last === undefined) {
        throw new UsageError(
          `no snapshots${target === undefined ? '' : ` of target "${target}"`} in the repository`,
          {
            hint: 'take one with `flashback backup TARGET`',
          },
        );
      }
      return last;
    }
    if (ids.includes(ref)) return this.read(ref);
    const matches = ids.filter((id) => id.startsWith(ref));
    if (matches.length === 1) return this.read(matches[0]!);
    if (matches.length > 1) {
      throw new UsageError(
        `snapshot "${ref}" is ambiguous: ${matches.slice(0, 5).join(', ')}${matches.length > 5 ? ', …' : ''}`,
        {
          hint: 'give more of the id',
        },
      );
    }
    throw unknownSnapshot(ref);
  }
}

const DAMAGED_HINT =
  'this snapshot cannot be restored: copy the manifest back from a copy of the repository; `flashback check` shows what else is affected';

/** Whether `err` is a manifest this build cannot read (damaged, or of a newer format). */
function unreadable(err: unknown): err is DamagedError | RepositoryError {
  return (
    (err instanceof DamagedError && err.code === 'snapshot.damaged') ||
    (err instanceof RepositoryError && err.code === 'repository.version')
  );
}

function unknownSnapshot(ref: string): UsageError {
  return new UsageError(`unknown snapshot "${ref}"`, {
    hint: '`flashback list` shows the snapshots in the repository',
  });
}

/** Whether any of `manifests` has a table of this name (in this schema, when given). */
export function inSnapshots(
  manifests: ReadonlyArray<{
    readonly tables: ReadonlyArray<{ readonly schema: string; readonly name: string }>;
  }>,
  n: { readonly schema: string | undefined; readonly name: string },
): boolean {
  return manifests.some((m) =>
    m.tables.some((t) => t.name === n.name && (n.schema === undefined || t.schema === n.schema)),
  );
}
