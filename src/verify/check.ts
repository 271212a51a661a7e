/**
 * `check`: the repository's integrity, without a database server.
 *
 * 1. every manifest under `snapshots/` is read and validated: JSON, a
 *    manifest, a version this build reads, a chunk list that adds up;
 * 2. every chunk a manifest uses exists, with the stored size the manifest
 *    recorded (so a truncated chunk is found without reading it);
 * 3. with `readDataPercent` > 0, that share of the chunks (a random subset
 *    below 100, a different one each run, as restic does) is read,
 *    decompressed and hashed: what a restore would do before using it;
 * 4. chunks no manifest uses, and run records that cannot be read, are
 *    reported too (informational and warning).
 *
 * A damaged chunk is reported once, naming every snapshot, table and chunk
 * position that uses it: that is what a user needs to know what is lost.
 * Runs under a shared lock, so prune cannot delete chunks mid-check. The
 * result is plain data; cli/ prints it and maps it to exit codes.
 */

import { recordsSchema } from '../capture/schema-events.js';
import {
  DamagedError,
  FlashbackError,
  InterruptedError,
  OperationError,
  RepositoryError,
  UsageError,
} from '../errors.js';
import {
  ChangeLog,
  lsnValue,
  missingSchemaRecord,
  scanTransactions,
  schemaRecordKey,
} from '../repo/changelog.js';
import { ChunkError, ChunkStore, chunkKey } from '../repo/chunks.js';
import { HEADER_SIZE } from '../repo/codec.js';
import { readKnownDamage } from '../repo/damage.js';
import { RepositoryLock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import { type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import { formatBytes } from '../util/format.js';
import { runWorkers } from '../util/workers.js';

/** `error`: data is missing or damaged; `warning`: something else is wrong; `info`: worth knowing. */
export type CheckSeverity = 'error' | 'warning' | 'info';

/** What a finding is about. */
export type CheckKind =
  /** A manifest that cannot be read or parsed (truncated, not JSON). */
  | 'manifest-unreadable'
  /** A manifest that parses but is not a valid manifest. */
  | 'manifest-invalid'
  /** A manifest of a newer format version than this build reads. */
  | 'manifest-version'
  | 'chunk-missing'
  /** The stored object's size differs from the manifest's `stored`. */
  | 'chunk-size'
  /** The chunk does not decode or its content does not hash to its id. */
  | 'chunk-damaged'
  /** Chunks no manifest uses (left by backups that did not commit). */
  | 'chunks-unreferenced'
  | 'run-unreadable'
  /** A change-log segment missing from its sequence (its changes are lost), or a capture.json that does not parse. */
  | 'changelog-missing'
  /** A change-log segment that does not decode or parse (read-data). */
  | 'changelog-damaged'
  /** A change log of a newer format version than this build reads. */
  | 'changelog-version';

/** One place a chunk is used: a snapshot, a table in it, and the chunk's 0-based position. */
export interface ChunkUse {
  readonly snapshot: string;
  /** `schema.name`. */
  readonly table: string;
  readonly chunk: number;
}

/** One thing check found. */
export interface CheckFinding {
  readonly severity: CheckSeverity;
  readonly kind: CheckKind;
  /** The snapshots affected (every one using a damaged chunk). */
  readonly snapshots: readonly string[];
  /** The first affected table (`schema.name`) and chunk position; `uses` has them all. */
  readonly table?: string | undefined;
  readonly chunk?: number | undefined;
  readonly chunkId?: string | undefined;
  /** Every use of a damaged chunk. */
  readonly uses?: readonly ChunkUse[] | undefined;
  /** The repository object concerned (`snapshots/<id>.json`, `chunks/…`, `runs/…`). */
  readonly object?: string | undefined;
  /** One line naming what is wrong and what is affected. */
  readonly message: string;
  /** What to do about it. */
  readonly hint?: string | undefined;
}

/** Counts for the summary line and the run record. */
export interface CheckTotals {
  /** Manifests found under `snapshots/`. */
  readonly snapshots: number;
  /** Of those, manifests that were valid, so their chunks were checked. */
  readonly snapshotsChecked: number;
  /** Distinct chunks used by those snapshots, and their stored bytes. */
  readonly chunks: number;
  readonly chunkBytes: number;
  /** Chunks read, decoded and hashed (read-data), and their stored bytes. */
  readonly chunksRead: number;
  readonly bytesRead: number;
  /** Time spent reading data (for a rate). */
  readonly readSeconds: number;
  readonly unreferencedChunks: number;
  readonly unreferencedBytes: number;
  /** Run records read. */
  readonly runs: number;
  readonly errors: number;
  readonly warnings: number;
}

/** The result of a check: plain data. */
export interface CheckReport {
  /** Share of the chunks read (0: none, 100: all). */
  readonly readDataPercent: number;
  /** Errors first, then warnings, then information. */
  readonly findings: readonly CheckFinding[];
  readonly totals: CheckTotals;
  /** Ids of the chunks no manifest uses. */
  readonly unreferencedChunks: readonly string[];
  readonly seconds: number;
}

/** Progress of the long part, reading data. */
export interface CheckProgress {
  readonly chunksRead: number;
  readonly chunksToRead: number;
  readonly bytesRead: number;
  readonly bytesToRead: number;
}

/** What to check, and how. */
export interface CheckOptions {
  readonly repo: Repository;
  /** Share of the chunks to read and hash, 0–100 (default 0: existence and size only). */
  readonly readDataPercent?: number | undefined;
  /** Chunks read at a time (default 4): each holds at most two chunk-sized buffers. */
  readonly concurrency?: number | undefined;
  /** Aborting stops the check (InterruptedError). */
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((p: CheckProgress) => void) | undefined;
}

/**
 * Parses `--read-data-subset`: `N%` with 0 < N <= 100 (decimals allowed).
 * Throws UsageError otherwise.
 */
export function parseReadDataSubset(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text);
  const n = m === null ? Number.NaN : Number(m[1]);
  if (!(n > 0 && n <= 100)) {
    throw new UsageError(
      `--read-data-subset: expected a percentage above 0 and at most 100, like "10%", got "${text}"`,
      { hint: 'use --read-data to read every chunk' },
    );
  }
  return n;
}

const HEX64 = /^[0-9a-f]{64}$/;
const CHUNK_OBJECT = /^chunks\/([0-9a-f]{2})\/(\1[0-9a-f]{62})$/;
const RUN_OBJECT = /^runs\/[^/]+\/[^/]+\.json$/;
/** Small objects (manifests, run records) are read a few at a time: latency-bound on object storage. */
const SMALL_READS = 8;

const CHUNK_HINTS: Record<'chunk-missing' | 'chunk-size' | 'chunk-damaged', string> = {
  'chunk-missing':
    'restoring these tables from these snapshots fails; if the rows are unchanged in the database, a new backup stores the chunk again; otherwise copy the chunk object back from a copy of the repository',
  'chunk-size':
    'restoring these tables from these snapshots fails; if the rows are unchanged in the database, the next backup of the target writes the chunk again (a backup reuses no chunk this check found damaged) and these snapshots restore again; otherwise copy the chunk object back from a copy of the repository',
  'chunk-damaged':
    'restoring these tables from these snapshots fails; if the rows are unchanged in the database, the next backup of the target writes the chunk again (a backup reuses no chunk this check found damaged) and these snapshots restore again; otherwise copy the chunk object back from a copy of the repository',
};

/** What went wrong with one chunk. */
type ChunkProblem =
  | { readonly kind: 'chunk-missing' }
  | { readonly kind: 'chunk-size'; readonly actual: number }
  | { readonly kind: 'chunk-damaged'; readonly reason: string };

/** Checks the repository; see the module comment for what is checked. */
export async function checkRepository(options: CheckOptions): Promise<CheckReport> {
  const started = Date.now();
  const { repo } = options;
  const percent = options.readDataPercent ?? 0;
  if (!(percent >= 0 && percent <= 100)) {
    throw new RangeError(`readDataPercent must be 0–100, got ${percent}`);
  }
  const lock = await RepositoryLock.acquire(repo.storage, {
    exclusive: false,
    command: 'check',
    reader: true,
  });
  try {
    return await run(repo.storage, options, percent, started);
  } finally {
    await lock.release();
  }
}

async function run(
  storage: Storage,
  options: CheckOptions,
  percent: number,
  started: number,
): Promise<CheckReport> {
  const interrupted = (): void => {
    if (options.signal?.aborted === true) throw new InterruptedError('check interrupted');
  };
  const snapshots = new SnapshotStore(storage);
  const findings: CheckFinding[] = [];

  // 1. Manifests. Listed before the chunks: a manifest is committed only
  // after its chunks exist, so every chunk of a listed manifest is listed too.
  const ids = await snapshots.ids();
  /** Distinct chunk ids used, with the stored sizes manifests recorded (normally one). */
  const used = new Map<string, number[]>();
  const usable: string[] = [];
  const unusable: string[] = [];
  await inBatches(ids, SMALL_READS, async (id) => {
    interrupted();
    const r = await readManifest(snapshots, id);
    if (r === 'gone') return;
    if ('finding' in r) {
      findings.push(r.finding);
      if (!r.chunksUsable) {
        unusable.push(id);
        return;
      }
    }
    usable.push(id);
    for (const t of r.manifest.tables) {
      for (const c of t.chunks) {
        const sizes = used.get(c.id);
        if (sizes === undefined) used.set(c.id, [c.stored]);
        else if (!sizes.includes(c.stored)) sizes.push(c.stored);
      }
    }
  });
  // Batches finish in any order; report in snapshot order (the order of
  // ids(): by time, also within one second).
  const order = new Map(ids.map((id, i) => [`snapshots/${id}.json`, i]));
  const byOrder = (a: string, b: string) =>
    order.get(`snapshots/${a}.json`)! - order.get(`snapshots/${b}.json`)!;
  usable.sort(byOrder);
  unusable.sort(byOrder);
  findings.sort((a, b) => (order.get(a.object ?? '') ?? 0) - (order.get(b.object ?? '') ?? 0));

  // 2. Every chunk object, with its size, in one listing (not a stat per chunk).
  const listed = new Map<string, number>();
  for await (const obj of storage.list('chunks/')) {
    const m = CHUNK_OBJECT.exec(obj.key);
    if (m !== null) listed.set(m[2]!, obj.size);
  }
  interrupted();

  // 3. Existence and size of every chunk used.
  const problems = new Map<string, ChunkProblem>();
  const notListed = [...used.keys()].filter((id) => !listed.has(id));
  // A listing may lag behind writes on object storage: confirm before calling a chunk missing.
  await inBatches(notListed, SMALL_READS, async (id) => {
    const s = await storage.stat(chunkKey(id));
    if (s === undefined) problems.set(id, { kind: 'chunk-missing' });
    else listed.set(id, s.size);
  });
  let chunkBytes = 0;
  for (const [id, sizes] of used) {
    chunkBytes += sizes[0]!;
    const actual = listed.get(id);
    if (actual !== undefined && sizes.some((s) => s !== actual)) {
      problems.set(id, { kind: 'chunk-size', actual });
    }
  }

  // 4. Read data: decode and hash what a restore would, a few chunks at a time.
  const toRead = pick(
    [...used.keys()].filter((id) => !problems.has(id)),
    percent,
  );
  const read = { chunks: 0, bytes: 0, seconds: 0 };
  if (toRead.length > 0) {
    const chunkStore = new ChunkStore(storage);
    const bytesToRead = toRead.reduce((a, id) => a + (listed.get(id) ?? 0), 0);
    const readStarted = Date.now();
    let next = 0;
    await runWorkers(
      Math.max(1, Math.min(options.concurrency ?? 4, toRead.length)),
      async (_i, signal) => {
        for (let i = next++; i < toRead.length; i = next++) {
          if (signal.aborted) throw new InterruptedError('check interrupted');
          const id = toRead[i]!;
          try {
            await chunkStore.get(id);
          } catch (err) {
            if (!(err instanceof ChunkError)) {
              throw new OperationError(
                'check.read',
                `reading chunk ${id} from ${storage.location} failed: ${(err as Error).message}`,
                {
                  hint: 'run the check again; if it fails the same way, the storage needs attention',
                  cause: err,
                },
              );
            }
            // Deleted between listing and reading is still missing (nothing but prune deletes).
            const missing = (await storage.stat(chunkKey(id))) === undefined;
            problems.set(
              id,
              missing ? { kind: 'chunk-missing' } : { kind: 'chunk-damaged', reason: err.message },
            );
          }
          read.chunks++;
          read.bytes += listed.get(id) ?? 0;
          options.onProgress?.({
            chunksRead: read.chunks,
            chunksToRead: toRead.length,
            bytesRead: read.bytes,
            bytesToRead,
          });
        }
      },
      options.signal,
    );
    interrupted();
    read.seconds = (Date.now() - readStarted) / 1000;
  }

  // Damage an earlier check or verify found by reading, in chunks this check
  // did not read: still damaged as far as anyone knows (src/repo/damage.ts).
  // Without this, a plain check after `--read-data` said "no problems".
  const readNow = new Set(toRead);
  for (const d of (await readKnownDamage(storage)).values()) {
    if (d.kind !== 'damaged' || !used.has(d.chunkId) || readNow.has(d.chunkId)) continue;
    if (problems.has(d.chunkId)) continue;
    problems.set(d.chunkId, {
      kind: 'chunk-damaged',
      reason: `found damaged by ${d.foundBy} at ${d.foundAt} and not written again since (this check did not read it: --read-data reads it anew)`,
    });
  }

  // 5. Name everything a damaged chunk takes with it: a second pass over the
  // manifests, only when something is wrong, so memory holds only chunk ids.
  if (problems.size > 0) {
    const uses = await chunkUses(snapshots, usable, problems);
    for (const [id, problem] of [...problems].sort(([a], [b]) => (a < b ? -1 : 1))) {
      findings.push(chunkFinding(id, problem, uses.get(id) ?? []));
    }
  }

  // 6. Chunks nobody uses: informational (prune's work), but they may be
  // the only copy of an unreadable manifest's data.
  const unreferenced = [...listed.keys()].filter((id) => !used.has(id)).sort();
  const unreferencedBytes = unreferenced.reduce((a, id) => a + listed.get(id)!, 0);
  if (unreferenced.length > 0)
    findings.push(unreferencedFinding(unreferenced.length, unreferencedBytes, unusable));

  // 7. Run records: status and prune rely on them; a damaged one is skipped by readers.
  const runKeys: string[] = [];
  for await (const obj of storage.list('runs/'))
    if (RUN_OBJECT.test(obj.key)) runKeys.push(obj.key);
  runKeys.sort();
  await inBatches(runKeys, SMALL_READS, async (key) => {
    const problem = await runRecordProblem(storage, key);
    if (problem !== undefined) {
      findings.push({
        severity: 'warning',
        kind: 'run-unreadable',
        snapshots: [],
        object: key,
        message: `run record ${key} ${problem}`,
        hint: '`status` and `prune` skip it: the run it recorded is forgotten; delete the file once noted',
      });
    }
  });

  // 8. Change logs: every segment of a sequence present (a gap is lost
  // changes), and with read-data each one decodes and parses.
  const scopes = new Set<string>();
  for await (const obj of storage.list('changes/')) {
    const m = /^changes\/([^/]+)\//.exec(obj.key);
    if (m !== null) scopes.add(m[1]!);
  }
  for (const scope of [...scopes].sort()) {
    interrupted();
    // (A target's later logs are in changes/<scope>.<n>/: each is checked alike.)
    const log = ChangeLog.inDirectory(storage, scope) ?? new ChangeLog(storage, scope);
    let firstSegment = 1;
    let described = true;
    let startLsn: string | undefined;
    const findingsBefore = findings.length;
    try {
      const info = await log.info();
      startLsn = info?.startLsn;
      described = info !== undefined;
      firstSegment = info?.firstSegment ?? 1;
    } catch (err) {
      const newer = err instanceof RepositoryError && err.code === 'repository.version';
      findings.push({
        severity: 'error',
        kind: newer ? 'changelog-version' : 'changelog-missing',
        snapshots: [],
        object: `${log.dir}capture.json`,
        message: newer
          ? (err as Error).message
          : `the change log of ${log.label} cannot be read: ${(err as Error).message}`,
        hint: newer
          ? 'upgrade Flashback to check this change log'
          : `restore ${log.dir}capture.json from a copy of the repository`,
      });
      continue;
    }
    // Segments before the first kept one were pruned (any listed are leftovers
    // of an interrupted prune, which the next prune removes).
    const segments = (await log.segments()).filter((seg) => seg.seq >= firstSegment);
    if (!described && segments.length > 0) {
      // (A log whose slot is made and capture.json not yet written has no segment.)
      findings.push({
        severity: 'error',
        kind: 'changelog-missing',
        snapshots: [],
        object: `${log.dir}capture.json`,
        message: `the change log of ${log.label} has ${segments.length} segment(s) and no capture.json: without it the log is not found, and none of its moments can be restored`,
        hint: `restore ${log.dir}capture.json from a copy of the repository`,
      });
      continue;
    }
    // Each gap once, against the segment before it (compared with its index,
    // one missing segment made every later one look missing too).
    let expected = firstSegment;
    for (const seg of segments) {
      if (seg.seq > expected) {
        const missing =
          seg.seq - expected === 1 ? `segment ${expected}` : `segments ${expected}-${seg.seq - 1}`;
        findings.push({
          severity: 'error',
          kind: 'changelog-missing',
          snapshots: [],
          object: seg.key,
          message: `the change log of ${log.label} lacks ${missing} (the next is ${seg.seq}): the changes it held are lost, and moments after it cannot be rebuilt`,
          hint: 'restore the segment from a copy of the repository; take a new backup (moments after it rebuild from there)',
        });
      }
      expected = seg.seq + 1;
    }
    const chosen = percent >= 100 ? segments : segments.filter(() => Math.random() * 100 < percent);
    const schemas = await log.schemaRecords();
    const chosenSchemas =
      percent >= 100 ? schemas : schemas.filter(() => Math.random() * 100 < percent);
    const read = [
      ...chosen.map((seg) => ({ key: seg.key, read: () => log.readSegment(seg) })),
      // The schema after each schema change: a restore to a moment after it needs it.
      ...chosenSchemas.map((ref) => ({ key: ref.key, read: () => log.readSchema(ref) })),
    ];
    await inBatches(read, SMALL_READS, async (o) => {
      interrupted();
      try {
        await o.read();
      } catch (err) {
        if (!(err instanceof DamagedError)) throw err;
        findings.push({
          severity: 'error',
          kind: 'changelog-damaged',
          snapshots: [],
          object: o.key,
          message: err.message,
          hint: err.hint,
        });
      }
    });
    // Every transaction that changed the schema has its schema record
    // (restore --at takes the tables of a moment from it). Only a whole,
    // undamaged log can tell: its transactions are read across segments.
    if (percent >= 100 && findings.length === findingsBefore && startLsn !== undefined) {
      const recorded = new Set(schemas.map((r) => r.endLsn));
      await scanTransactions(log, { fromLsn: lsnValue(startLsn) }, (tx) => {
        interrupted();
        if (tx.schema !== undefined && !recorded.has(tx.endLsn) && recordsSchema(tx.schema)) {
          const err = missingSchemaRecord(log.dir, tx);
          findings.push({
            severity: 'error',
            kind: 'changelog-missing',
            snapshots: [],
            object: schemaRecordKey(log.dir, tx.endLsn),
            message: `the change log of ${log.label} lacks a schema record: ${err.message}`,
            hint: err.hint,
          });
        }
        return undefined;
      });
    }
  }

  const rank: Record<CheckSeverity, number> = { error: 0, warning: 1, info: 2 };
  findings.sort((a, b) => rank[a.severity] - rank[b.severity]);
  return {
    readDataPercent: percent,
    findings,
    totals: {
      snapshots: ids.length,
      snapshotsChecked: usable.length,
      chunks: used.size,
      chunkBytes,
      chunksRead: read.chunks,
      bytesRead: read.bytes,
      readSeconds: read.seconds,
      unreferencedChunks: unreferenced.length,
      unreferencedBytes,
      runs: runKeys.length,
      errors: findings.filter((f) => f.severity === 'error').length,
      warnings: findings.filter((f) => f.severity === 'warning').length,
    },
    unreferencedChunks: unreferenced,
    seconds: (Date.now() - started) / 1000,
  };
}

/**
 * A manifest as check sees it: gone since listed; fine; wrong but with a
 * chunk list still worth checking (counts that do not add up); or unusable.
 */
type ManifestRead =
  | 'gone'
  | { readonly manifest: SnapshotManifest }
  | {
      readonly manifest: SnapshotManifest;
      readonly finding: CheckFinding;
      readonly chunksUsable: true;
    }
  | { readonly finding: CheckFinding; readonly chunksUsable: false };

/** Reads and validates one manifest. */
async function readManifest(store: SnapshotStore, id: string): Promise<ManifestRead> {
  const object = `snapshots/${id}.json`;
  const bad = (
    kind: CheckKind,
    message: string,
    hint: string,
    where: Partial<CheckFinding> = {},
  ): CheckFinding => ({
    severity: 'error',
    kind,
    snapshots: [id],
    object,
    message: `snapshot ${id}: ${message} (${object})`,
    hint,
    ...where,
  });
  const lost =
    'the snapshot cannot be restored; copy the manifest back from a copy of the repository. Do not prune before: its chunks look unused';
  let manifest: SnapshotManifest;
  try {
    manifest = await store.read(id);
  } catch (err) {
    // Removed since listed (nothing but prune removes manifests, and it cannot run now).
    if (err instanceof UsageError) return 'gone';
    if (
      !(err instanceof FlashbackError) ||
      (err.code !== 'snapshot.damaged' && err.code !== 'repository.version')
    ) {
      const message = `manifest could not be read: ${(err as Error).message}`;
      return { finding: bad('manifest-unreadable', message, lost), chunksUsable: false };
    }
    const message = err.message.replace(`snapshot ${id}: `, '').replace(/^snapshot \S+ /, '');
    if (err.code === 'repository.version') {
      return {
        finding: bad('manifest-version', message, 'upgrade Flashback to check this snapshot'),
        chunksUsable: false,
      };
    }
    // SnapshotStore.read says "not valid JSON" for bytes that do not parse
    // (truncated or garbled), "not a snapshot manifest" for the wrong shape.
    const kind = /not valid JSON/.test(err.message) ? 'manifest-unreadable' : 'manifest-invalid';
    return { finding: bad(kind, message, lost), chunksUsable: false };
  }
  const structure = structureProblem(manifest, id);
  if (structure !== undefined) {
    return {
      finding: bad('manifest-invalid', structure.message, lost, structure.where),
      chunksUsable: false,
    };
  }
  const sums = sumsProblem(manifest);
  if (sums !== undefined) {
    return {
      manifest,
      finding: bad(
        'manifest-invalid',
        sums.message,
        'the manifest was altered after it was written; copy it back from a copy of the repository',
        sums.where,
      ),
      chunksUsable: true,
    };
  }
  return { manifest };
}

/** Whether the manifest has the shape readers rely on; the first problem found. */
function structureProblem(
  m: SnapshotManifest,
  id: string,
): { message: string; where?: Partial<CheckFinding> } | undefined {
  if (m.id !== id) return { message: `the manifest names itself "${String(m.id)}"` };
  for (const [ti, t] of m.tables.entries()) {
    if (
      t === null ||
      typeof t !== 'object' ||
      typeof t.schema !== 'string' ||
      typeof t.name !== 'string' ||
      !Array.isArray(t.chunks)
    ) {
      return { message: `table #${ti} is malformed` };
    }
    const table = `${t.schema}.${t.name}`;
    for (const [ci, c] of t.chunks.entries()) {
      const ok =
        c !== null &&
        typeof c === 'object' &&
        typeof c.id === 'string' &&
        HEX64.test(c.id) &&
        Number.isSafeInteger(c.stored) &&
        c.stored >= HEADER_SIZE &&
        Number.isSafeInteger(c.rows) &&
        c.rows >= 0 &&
        Number.isSafeInteger(c.size) &&
        c.size >= 0;
      if (!ok) {
        return {
          message: `table ${table}: chunk ${ci} is malformed`,
          where: { table, chunk: ci },
        };
      }
    }
  }
  return undefined;
}

/** A table's counts are sums over its chunks: a mismatch means the manifest was altered. */
function sumsProblem(
  m: SnapshotManifest,
): { message: string; where: Partial<CheckFinding> } | undefined {
  for (const t of m.tables) {
    const table = `${t.schema}.${t.name}`;
    const sum = (f: (c: (typeof t.chunks)[number]) => number): number =>
      t.chunks.reduce((a, c) => a + f(c), 0);
    for (const [field, total] of [
      ['rows', sum((c) => c.rows)],
      ['bytes', sum((c) => c.size)],
      ['storedBytes', sum((c) => c.stored)],
    ] as const) {
      if (t[field] !== total) {
        return {
          message: `table ${table}: ${field} is ${String(t[field])} but its chunks add up to ${total}`,
          where: { table },
        };
      }
    }
  }
  return undefined;
}

/** Picks `percent`% of `ids` at random (all of them at 100, none at 0). */
function pick(ids: readonly string[], percent: number): string[] {
  if (percent >= 100) return [...ids];
  if (percent <= 0) return [];
  const n = Math.min(ids.length, Math.ceil((ids.length * percent) / 100));
  const a = [...ids];
  // Partial Fisher–Yates: the first n are a uniform random sample.
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, n);
}

/** Where each problem chunk is used, from the valid manifests. For a size problem, only uses that expected another size. */
async function chunkUses(
  store: SnapshotStore,
  ids: readonly string[],
  problems: ReadonlyMap<string, ChunkProblem>,
): Promise<Map<string, ChunkUse[]>> {
  const out = new Map<string, ChunkUse[]>();
  for (const snapshot of ids) {
    let m: SnapshotManifest;
    try {
      m = await store.read(snapshot);
    } catch {
      continue; // read fine in the first pass; only a concurrent removal gets here
    }
    for (const t of m.tables) {
      for (const [chunk, c] of t.chunks.entries()) {
        const p = problems.get(c.id);
        if (p === undefined || (p.kind === 'chunk-size' && c.stored === p.actual)) continue;
        const list = out.get(c.id) ?? [];
        list.push({ snapshot, table: `${t.schema}.${t.name}`, chunk });
        out.set(c.id, list);
      }
    }
  }
  return out;
}

function chunkFinding(id: string, p: ChunkProblem, uses: readonly ChunkUse[]): CheckFinding {
  const what =
    p.kind === 'chunk-missing'
      ? `chunk ${id} is missing`
      : p.kind === 'chunk-size'
        ? `chunk ${id} is ${p.actual} bytes, not the size its snapshots recorded (truncated or overwritten)`
        : p.reason.startsWith(`chunk ${id}`)
          ? p.reason
          : `chunk ${id} is damaged: ${p.reason}`;
  const first = uses[0];
  return {
    severity: 'error',
    kind: p.kind,
    // Uses come in snapshot order (chunkUses reads the usable snapshots in order).
    snapshots: [...new Set(uses.map((u) => u.snapshot))],
    table: first?.table,
    chunk: first?.chunk,
    chunkId: id,
    uses,
    object: chunkKey(id),
    message: `${what}; used by ${describeUses(uses)}`,
    hint: CHUNK_HINTS[p.kind],
  };
}

/** `public.files chunk 3 in snapshots A, B; public.files chunk 4 in snapshot C`. */
export function describeUses(uses: readonly ChunkUse[]): string {
  const groups = new Map<string, string[]>();
  for (const u of uses) {
    // (Messages count chunks from 1, as verify's and restore's do; `chunk` is 0-based.)
    const k = `${u.table} chunk ${u.chunk + 1}`;
    groups.set(k, [...(groups.get(k) ?? []), u.snapshot]);
  }
  return [...groups]
    .map(([k, snaps]) => `${k} in snapshot${snaps.length > 1 ? 's' : ''} ${snaps.join(', ')}`)
    .join('; ');
}

function unreferencedFinding(
  count: number,
  bytes: number,
  unusable: readonly string[],
): CheckFinding {
  const caution =
    unusable.length > 0
      ? `; some may belong to the unreadable snapshot(s) ${unusable.join(', ')}`
      : '';
  return {
    severity: 'info',
    kind: 'chunks-unreferenced',
    snapshots: [],
    message: `${count} chunk(s) (${formatBytes(bytes)} stored) are used by no snapshot: written by backups that did not commit (or one still running)${caution}`,
    hint:
      unusable.length > 0
        ? 'repair the unreadable manifests before `flashback prune`: it removes unused chunks'
        : '`flashback prune` removes them when it runs, which needs a retention policy (`retention` in flashback.yaml, docs/CONFIG.md)',
  };
}

/** Why a run record cannot be used, or undefined if it can. */
async function runRecordProblem(storage: Storage, key: string): Promise<string | undefined> {
  let text: string;
  try {
    text = (await storage.read(key)).toString('utf8');
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return undefined; // removed since listed
    return `could not be read: ${(err as Error).message}`;
  }
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch {
    return 'is not valid JSON';
  }
  const rec = r as { format?: unknown; kind?: unknown; startedAt?: unknown; ok?: unknown };
  if (
    r === null ||
    typeof r !== 'object' ||
    rec.format !== 'flashback-run' ||
    typeof rec.kind !== 'string' ||
    typeof rec.startedAt !== 'string' ||
    typeof rec.ok !== 'boolean'
  ) {
    return 'is not a run record';
  }
  return undefined;
}

/** Runs `f` over `items`, `size` at a time. */
async function inBatches<T>(
  items: readonly T[],
  size: number,
  f: (item: T) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < items.length; i += size) {
    await Promise.all(items.slice(i, i + size).map(f));
  }
}
