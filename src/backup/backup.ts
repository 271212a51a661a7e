/**
 * `backup`: one consistent snapshot of a target into the repository.
 *
 * Order of work (docs/REPOSITORY.md, "Write ordering"):
 * 1. take a shared repository lock;
 * 2. check the target's identity (a backup of the wrong database under the
 *    target's name would poison its history);
 * 3. export a snapshot from a temporary logical slot: its LSN is exactly where
 *    a change log would begin;
 * 4. in a transaction on that snapshot: read the schema, take ACCESS SHARE
 *    locks on every table (as pg_dump does, so no DDL can drop a table mid-copy);
 * 5. workers import the same snapshot and COPY tables, largest first, in key
 *    order; the stream is cut into key-defined chunks, each compressed and
 *    stored once (identical chunks are not written again);
 * 6. the manifest is written last: the commit point.
 * Any failure or interruption before 6 leaves no snapshot, only unreferenced
 * chunks that `prune` removes.
 */
import type { ResolvedTarget } from '../config/targets.js';
import { DamagedError, InterruptedError, OperationError, RepositoryError } from '../errors.js';
import { FingerprintStore } from '../guard/fingerprints.js';
import { checkIdentity, identityRefusal } from '../guard/identity.js';
import { connect, type PgClient, serverRefusal } from '../pg/connect.js';
import { CopyOut, tableCopySql } from '../pg/copy-out.js';
import type { SlotWait } from '../pg/replication/slot-wait.js';
import type { SchemaModel, TableModel } from '../pg/schema/model.js';
import { qualify } from '../pg/schema/quote.js';
import { readSchema } from '../pg/schema/read.js';
import { readTableShapes, type TableShape } from '../pg/schema/shapes.js';
import { readServerInfo } from '../pg/server-info.js';
import { exportSnapshot, importSnapshot } from '../pg/snapshot.js';
import { ChunkStore } from '../repo/chunks.js';
import { type ChunkEncoder, createEncoder } from '../repo/compress-pool.js';
import { chunkReuseRule } from '../repo/damage.js';
import { RepositoryLock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import {
  type ChunkRef,
  type KeyKind,
  newSnapshotId,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { faultpoint } from '../util/faultpoint.js';
import { inFlight, runWorkers } from '../util/workers.js';
import { Chunker, chooseBoundaryBits, MAX_CHUNK_BYTES, type RawChunk } from './chunker.js';

/** What to back up, and how. */
export interface BackupOptions {
  readonly target: ResolvedTarget;
  readonly repo: Repository;
  /** Parallel COPY connections; default 2 (one per core of a small machine). */
  readonly workers?: number | undefined;
  /** Aborting stops the backup; nothing is committed. */
  readonly signal?: AbortSignal | undefined;
  /** Called as work progresses (at most a few times per second is up to the caller). */
  readonly onProgress?: ((p: BackupProgress) => void) | undefined;
  /** Told while the snapshot waits for running transactions to end (src/pg/replication/slot-wait.ts). */
  readonly onWait?: ((w: SlotWait) => void) | undefined;
}

/** Running totals while a backup runs. */
export interface BackupProgress {
  readonly tablesDone: number;
  readonly tablesTotal: number;
  readonly rows: number;
  /** COPY bytes read so far. */
  readonly bytes: number;
  /** Estimated COPY bytes in all (from table sizes); 0 if unknown. */
  readonly estimatedBytes: number;
  readonly newBytes: number;
}

/** The committed snapshot. */
export interface BackupResult {
  readonly manifest: SnapshotManifest<SchemaModel>;
  readonly seconds: number;
  /**
   * Chunks that were in the repository but damaged (cut short, or named by
   * the newest \`check\` or \`verify\`), written again: the snapshots that
   * used them restore again.
   */
  readonly rewrittenChunks: number;
}

/** Chunk writes in flight per worker: enough to overlap compression with COPY, bounded for memory. */
const IN_FLIGHT = 4;

/** True for a write that failed because the disk or quota is full (the lock's included: src/repo/lock.ts). */
function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'repository.full';
}

function diskFull(location: string, cause: unknown): OperationError {
  return new OperationError(
    'backup.disk-full',
    `no space left in the repository (${location}): nothing was committed`,
    {
      hint: 'free space or move the repository, then run the backup again: chunks already written are reused',
      cause,
    },
  );
}

/** Runs a backup; throws on any failure, leaving no snapshot behind. */
export async function backup(options: BackupOptions): Promise<BackupResult> {
  try {
    return await runBackup(options);
  } catch (err) {
    // A full disk can strike any write: a chunk, the lock, the manifest.
    if (isDiskFull(err)) throw diskFull(options.repo.storage.location, err);
    throw err;
  }
}

async function runBackup(options: BackupOptions): Promise<BackupResult> {
  const started = new Date();
  const { target, repo } = options;
  const lock = await RepositoryLock.acquire(repo.storage, {
    exclusive: false,
    command: `backup ${target.name}`,
    run: { kind: 'backup', target: target.name },
  });
  try {
    const coordinator = await connect(target, { applicationName: 'flashback backup' });
    const workers: PgClient[] = [];
    let snapshot: Awaited<ReturnType<typeof exportSnapshot>> | undefined;
    let encoder: ChunkEncoder | undefined;
    try {
      const info = await readServerInfo(coordinator, target.connection);
      const identity = await checkIdentity(target, info.identity, new FingerprintStore(repo));
      const refusal = identityRefusal(target, identity);
      if (refusal !== undefined) throw refusal;

      snapshot = await exportSnapshot(target, { signal: options.signal, onWait: options.onWait });
      // The server's clock once the snapshot exists: every transaction the
      // snapshot sees committed before this, so a restore to a later moment
      // may start from it (src/history/state.ts).
      const consistentAt = (
        await coordinator.query<{ t: string }>(
          `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
        )
      ).rows[0]!.t;
      await importSnapshot(coordinator, snapshot);
      const schema = await readSchema(coordinator);
      const tables = schema.tables.filter((t) => t.hasData);
      if (tables.length > 0) {
        await coordinator.query(
          `LOCK TABLE ${tables.map((t) => `ONLY ${qualify(t.schema, t.name)}`).join(', ')} IN ACCESS SHARE MODE`,
        );
      }
      const estimates = await estimateSizes(coordinator, tables);
      const db = (
        await coordinator.query<{ enc: string; collate: string; ctype: string; d: string }>(
          // (to_jsonb: the provider's columns differ by version: daticulocale 15-16, datlocale 17+.)
          `SELECT pg_encoding_to_char(encoding) AS enc, datcollate AS collate, datctype AS ctype, to_jsonb(d)::text AS d
             FROM pg_database d WHERE datname = current_database()`,
        )
      ).rows[0]!;
      const locale = databaseLocale(JSON.parse(db.d) as Record<string, string | null | undefined>);
      const { tables: previous } = await previousTables(repo, target.name);

      const n = Math.max(1, Math.min(options.workers ?? 2, tables.length));
      for (let i = 0; i < n; i++) {
        const w = await connect(target, { applicationName: 'flashback backup' });
        workers.push(w);
        await importSnapshot(w, snapshot);
      }
      encoder = createEncoder();
      const chunks = new ChunkStore(repo.storage, encoder);
      chunks.distrust = await chunkReuseRule(repo.storage, previous.values());
      const progress = {
        tablesDone: 0,
        tablesTotal: tables.length,
        rows: 0,
        bytes: 0,
        newBytes: 0,
        newChunks: 0,
        rewrittenChunks: 0,
        estimatedBytes: [...estimates.values()].reduce((a, e) => a + e.bytes, 0),
      };
      const report = (): void => options.onProgress?.({ ...progress });
      // Largest first, so the last table to finish is a small one.
      const queue = [...tables].sort(
        (a, b) => (estimates.get(key(b))?.bytes ?? 0) - (estimates.get(key(a))?.bytes ?? 0),
      );
      const results = new Map<string, TableSnapshot>();
      await runWorkers(
        workers.length,
        async (i, signal) => {
          const client = workers[i]!;
          for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
            const prev = previous.get(key(t));
            const bits =
              prev?.boundaryBits ?? chooseBoundaryBits(estimates.get(key(t))?.rowBytes ?? 100);
            const snap = await copyTable(
              client,
              t,
              bits,
              chunks,
              signal,
              (rows, bytes, newBytes, isNew, rewritten) => {
                progress.rows += rows;
                progress.bytes += bytes;
                progress.newBytes += newBytes;
                progress.newChunks += isNew ? 1 : 0;
                progress.rewrittenChunks += rewritten ? 1 : 0;
                report();
              },
            );
            results.set(key(t), snap);
            progress.tablesDone++;
            report();
          }
        },
        options.signal,
      );
      // OIDs and attnums let a restore follow each table across later schema
      // changes in the change log (src/history/schema-changes.ts).
      const shapes = await readTableShapes(coordinator);
      const tableSnaps = tables.map((t) => withShape(results.get(key(t))!, shapes.get(key(t))));
      const manifest: SnapshotManifest<SchemaModel> = {
        format: 'flashback-snapshot',
        version: 1,
        id: newSnapshotId(started),
        target: target.name,
        database: info.identity.database,
        encoding: db.enc,
        collate: db.collate,
        ctype: db.ctype,
        ...locale,
        systemIdentifier: info.identity.systemIdentifier,
        host: info.identity.host,
        serverVersion: info.version,
        serverVersionNum: info.versionNum,
        lsn: snapshot.lsn,
        consistentAt,
        startedAt: started.toISOString(),
        finishedAt: new Date().toISOString(),
        schema,
        tables: tableSnaps,
        totals: {
          tables: tableSnaps.length,
          rows: sum(tableSnaps, (t) => t.rows),
          bytes: sum(tableSnaps, (t) => t.bytes),
          storedBytes: sum(tableSnaps, (t) => t.storedBytes),
          newChunks: progress.newChunks,
          newBytes: progress.newBytes,
        },
      };
      if (options.signal?.aborted === true)
        throw new InterruptedError('backup interrupted: no snapshot was committed');
      // Tests SIGKILL a backup at these points (src/util/faultpoint.ts): every
      // chunk stored but no manifest; and committed but the lock still held.
      await faultpoint('backup.before-manifest');
      await new SnapshotStore(repo.storage).commit(manifest);
      await faultpoint('backup.after-manifest');
      return {
        manifest,
        seconds: (Date.now() - started.getTime()) / 1000,
        rewrittenChunks: progress.rewrittenChunks,
      };
    } finally {
      await Promise.all(workers.map((w) => w.end().catch(() => {})));
      await encoder?.close();
      await coordinator.end().catch(() => {});
      await snapshot?.close();
    }
  } finally {
    await lock.release();
  }
}

function key(t: { schema: string; name: string }): string {
  return `${t.schema}.${t.name}`;
}

function sum<T>(xs: readonly T[], f: (x: T) => number): number {
  return xs.reduce((a, x) => a + f(x), 0);
}

/** A table snapshot with its OID and the attnum of each chunk column (when all are known). */
function withShape(t: TableSnapshot, shape: TableShape | undefined): TableSnapshot {
  if (shape === undefined) return t;
  const attnums = t.columns.map((c) => shape.attnums[c]);
  if (attnums.some((n) => n === undefined)) return t;
  const types = t.columns.map((c) => shape.types?.[c]);
  return {
    ...t,
    oid: shape.oid,
    attnums: attnums as number[],
    ...(types.some((x) => x === undefined) ? {} : { types: types as [number, number][] }),
  };
}

/** How the rows of a table are keyed: primary key, else replica identity index, else none. */
export function tableKey(t: TableModel): { key: readonly string[]; kind: KeyKind } {
  if (t.primaryKey !== null && t.primaryKey.length > 0)
    return { key: t.primaryKey, kind: 'primary' };
  if (t.replicaIdentityKey !== null && t.replicaIdentityKey.length > 0) {
    return { key: t.replicaIdentityKey, kind: 'replica-identity' };
  }
  return { key: [], kind: 'none' };
}

/** Columns as stored in chunks: key columns first, then the rest; generated columns are recomputed, not stored. */
export function chunkColumns(t: TableModel): string[] {
  const { key: k } = tableKey(t);
  const stored = t.columns.filter((c) => c.generated === undefined).map((c) => c.name);
  return [...k, ...stored.filter((c) => !k.includes(c))];
}

async function copyTable(
  client: PgClient,
  t: TableModel,
  boundaryBits: number,
  chunks: ChunkStore,
  signal: AbortSignal | undefined,
  onChunk: (
    rows: number,
    bytes: number,
    newBytes: number,
    isNew: boolean,
    rewritten: boolean,
  ) => void,
): Promise<TableSnapshot> {
  const { key: k, kind } = tableKey(t);
  const columns = chunkColumns(t);
  const sql = tableCopySql({ schema: t.schema, name: t.name, columns, key: k });
  const chunker = new Chunker({
    keyColumns: k.length,
    boundaryBits,
    maxBytes: MAX_CHUNK_BYTES,
    ownMemory: true, // each chunk is handed over to the compression thread
  });
  const refs: ChunkRef[] = [];
  const inflight: Array<Promise<ChunkRef>> = [];
  const settle = async (): Promise<void> => {
    refs.push(await inflight.shift()!);
  };
  const store = (c: RawChunk): Promise<ChunkRef> => {
    const size = c.content.length; // read first: put takes the buffer over
    return chunks.put(c.content, { handOver: true }).then(async (r) => {
      // Tests SIGKILL a backup here, with data half written (src/util/faultpoint.ts).
      await faultpoint('backup.during-data', signal);
      onChunk(c.rows, size, r.isNew ? r.storedSize : 0, r.isNew, r.rewritten === true);
      return {
        id: r.id,
        rows: c.rows,
        size,
        stored: r.storedSize,
        first: c.first,
        last: c.last,
      };
    });
  };
  const stream = client.query(new CopyOut(sql));
  try {
    for await (const data of stream as AsyncIterable<Buffer>) {
      if (signal?.aborted === true)
        throw new InterruptedError('backup interrupted: no snapshot was committed');
      for (const c of chunker.push(data)) {
        inflight.push(inFlight(store(c)));
        if (inflight.length >= IN_FLIGHT) await settle();
      }
    }
    for (const c of chunker.end()) inflight.push(inFlight(store(c)));
    while (inflight.length > 0) await settle();
  } catch (err) {
    stream.destroy();
    await Promise.allSettled(inflight);
    if (err instanceof InterruptedError) throw err;
    if (isDiskFull(err)) throw diskFull(chunks.location, err);
    throw new OperationError(
      'backup.copy',
      `backup of table ${qualify(t.schema, t.name)} failed: ${(err as Error).message}`,
      // (A privilege or row-level security: what to grant.)
      { cause: err, hint: serverRefusal(err)?.hint },
    );
  }
  return {
    schema: t.schema,
    name: t.name,
    columns,
    key: k,
    keyKind: kind,
    boundaryBits,
    rows: sum(refs, (r) => r.rows),
    bytes: sum(refs, (r) => r.size),
    storedBytes: sum(refs, (r) => r.stored),
    chunks: refs,
  };
}

/** Heap size and average row width per table, from the catalog statistics visible in the snapshot. */
async function estimateSizes(
  client: PgClient,
  tables: readonly TableModel[],
): Promise<Map<string, { bytes: number; rowBytes: number }>> {
  const out = new Map<string, { bytes: number; rowBytes: number }>();
  if (tables.length === 0) return out;
  const r = await client.query<{ s: string; n: string; bytes: string; tuples: string }>(
    `SELECT n.nspname AS s, c.relname AS n, pg_relation_size(c.oid)::text AS bytes, greatest(c.reltuples, 0)::text AS tuples
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  for (const row of r.rows) {
    const bytes = Number(row.bytes);
    const tuples = Number(row.tuples);
    out.set(`${row.s}.${row.n}`, { bytes, rowBytes: tuples > 0 ? bytes / tuples : 100 });
  }
  return out;
}

/** The newest snapshot's tables of this target, to reuse their chunking parameters. */
async function previousTables(
  repo: Repository,
  target: string,
): Promise<{ tables: Map<string, TableSnapshot> }> {
  const store = new SnapshotStore(repo.storage);
  const ids = await store.ids();
  for (let i = ids.length - 1; i >= 0; i--) {
    let m: SnapshotManifest;
    try {
      m = await store.read(ids[i]!);
    } catch (err) {
      // A damaged manifest (of any target) must not stop new backups: they are
      // what replaces it. `check` reports it; here it only costs chunk reuse.
      if (err instanceof RepositoryError || err instanceof DamagedError) continue;
      throw err;
    }
    if (m.target === target) {
      return { tables: new Map(m.tables.map((t) => [key(t), t])) };
    }
  }
  return { tables: new Map() };
}

/** A database's locale provider, when not libc, with its locale and ICU rules (pg_database as JSON). */
function databaseLocale(
  d: Record<string, string | null | undefined>,
): Pick<SnapshotManifest, 'localeProvider' | 'locale' | 'icuRules'> {
  const provider =
    d.datlocprovider === 'i' ? 'icu' : d.datlocprovider === 'b' ? 'builtin' : undefined;
  if (provider === undefined) return {};
  const locale = d.datlocale ?? d.daticulocale ?? undefined;
  return {
    localeProvider: provider,
    ...(locale === undefined || locale === null ? {} : { locale }),
    ...(d.daticurules === undefined || d.daticurules === null ? {} : { icuRules: d.daticurules }),
  };
}
