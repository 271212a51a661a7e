/**
 * `verify`: prove that a snapshot restores, by restoring it.
 *
 * 1. restore the snapshot into a new database on a scratch server (the same
 *    code path as `restore --create`: chunks are hash-checked as they are read);
 * 2. read the restored database's schema model and compare it with the one
 *    the manifest recorded at backup time, object by object;
 * 3. read every table back with the backup's own COPY statement, cut it with
 *    the backup's own chunker and parameters, and compare each chunk's sha256
 *    and row count with the manifest's. Equal hashes mean every value of every
 *    row came back byte for byte in its PostgreSQL text form.
 *
 * The result is plain data: what differed, by snapshot, table and chunk. The
 * scratch database is dropped afterwards, pass or fail.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { Chunker, MAX_CHUNK_BYTES } from '../backup/chunker.js';
import type { ResolvedTarget } from '../config/targets.js';
import { InterruptedError, OperationError } from '../errors.js';
import { connect, type PgClient } from '../pg/connect.js';
import { CopyOut, tableCopySql } from '../pg/copy-out.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { qualify } from '../pg/schema/quote.js';
import { readSchema } from '../pg/schema/read.js';
import { ChunkError } from '../repo/chunks.js';
import type { Repository } from '../repo/repository.js';
import type { RunProblem } from '../repo/runs.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import { restore } from '../restore/restore.js';
import { runWorkers } from '../util/workers.js';
import type { Scratch } from './scratch.js';

/** What to verify, where. */
export interface VerifyOptions {
  readonly manifest: SnapshotManifest<SchemaModel>;
  readonly repo: Repository;
  readonly scratch: Scratch;
  /** Parallel connections for the restore and the read-back. */
  readonly workers?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((p: VerifyProgress) => void) | undefined;
}

/** Where a verification is. */
export interface VerifyProgress {
  readonly phase: 'restore' | 'schema' | 'data';
  readonly tablesDone: number;
  readonly tablesTotal: number;
  /** COPY bytes read back so far (data phase). */
  readonly bytes: number;
}

/** One table's comparison. */
export interface TableVerification {
  readonly table: string;
  readonly rows: number;
  readonly expectedRows: number;
  readonly chunks: number;
  readonly badChunks: number;
}

/** The outcome: `ok` only if nothing differed. */
export interface VerifyReport {
  readonly snapshot: string;
  readonly target: string;
  readonly ok: boolean;
  readonly scratch: string;
  readonly restoreSeconds: number;
  readonly compareSeconds: number;
  readonly seconds: number;
  readonly bytes: number;
  readonly tables: readonly TableVerification[];
  readonly problems: readonly RunProblem[];
}

/** Differences listed per table before the rest is only counted. */
const MAX_PROBLEMS_PER_TABLE = 10;

/** Restore-tests one snapshot. Infrastructure failures throw; differences are reported. */
export async function verifySnapshot(options: VerifyOptions): Promise<VerifyReport> {
  const { manifest, scratch } = options;
  const started = Date.now();
  const dbName = `flashback_verify_${manifest.id.replace(/-/g, '_')}`;
  const target = scratch.database(dbName);
  const workers = options.workers ?? 2;
  const problems: RunProblem[] = [];
  const report = (
    ok: boolean,
    restoreSeconds: number,
    tables: readonly TableVerification[],
    bytes: number,
  ): VerifyReport => ({
    snapshot: manifest.id,
    target: manifest.target,
    ok,
    scratch: scratch.description,
    restoreSeconds,
    compareSeconds: (Date.now() - started) / 1000 - restoreSeconds,
    seconds: (Date.now() - started) / 1000,
    bytes,
    tables,
    problems,
  });

  // A database left by a verify that was killed would make --create refuse.
  await scratch.drop(dbName);
  await scratch.prepareRoles(manifest.schema);
  options.onProgress?.({
    phase: 'restore',
    tablesDone: 0,
    tablesTotal: manifest.tables.length,
    bytes: 0,
  });
  try {
    try {
      await restore({
        manifest,
        repo: options.repo,
        target,
        create: true,
        workers,
        io: { input: emptyInput(), output: { write: () => true } },
        signal: options.signal,
      });
    } catch (err) {
      if (snapshotFault(err)) {
        // The snapshot's own DDL or rows fail to restore (an object it needs
        // was not reproducible, say): it cannot be restored, whatever the
        // scratch server. A FAIL, not a verification that could not run.
        problems.push({ message: `the snapshot does not restore: ${err.message}` });
        return report(false, (Date.now() - started) / 1000, [], 0);
      }
      if (!(err instanceof ChunkError)) throw err;
      // A damaged or missing chunk: the snapshot does not restore. Name every place it is used.
      problems.push(...chunkProblems(manifest, err));
      return report(false, (Date.now() - started) / 1000, [], 0);
    }
    const restoreSeconds = (Date.now() - started) / 1000;
    if (options.signal?.aborted === true) throw new InterruptedError('verify interrupted');

    options.onProgress?.({
      phase: 'schema',
      tablesDone: 0,
      tablesTotal: manifest.tables.length,
      bytes: 0,
    });
    problems.push(...(await compareSchema(target, manifest.schema)));

    const tables = await compareData(target, manifest, workers, options, problems);
    const bytes = tables.reduce((a, t) => a + t.bytes, 0);
    return report(
      problems.length === 0,
      restoreSeconds,
      tables.map(({ bytes: _b, ...t }) => t),
      bytes,
    );
  } finally {
    await scratch.drop(dbName).catch(() => {});
  }
}

/**
 * Whether a restore failed because of what the snapshot holds: a statement
 * of its schema, or its rows, refused by the server for what they are
 * (SQLSTATE classes such as 42, undefined object, or 22, data), not for the
 * scratch server's state (08 connection, 53 resources such as a full disk,
 * 57 operator intervention, 58 system, XX internal).
 */
function snapshotFault(err: unknown): err is OperationError {
  if (!(err instanceof OperationError)) return false;
  if (err.code !== 'restore.ddl' && err.code !== 'restore.load') return false;
  const state = (err.cause as { code?: unknown } | undefined)?.code;
  return (
    typeof state === 'string' && /^[0-9A-Z]{5}$/.test(state) && !/^(08|53|57|58|XX)/.test(state)
  );
}

/** Unsupported-list kinds of tables that are restored, but otherwise than on the source (src/pg/schema/read.ts). */
const RESTORED_OTHERWISE = new Set([
  'inherited column order',
  'typed table',
  'table access method',
  'tablespace placement',
]);

/** Every table and chunk position that references a chunk that failed to read. */
function chunkProblems(manifest: SnapshotManifest, err: ChunkError): RunProblem[] {
  const out: RunProblem[] = [];
  // (As check names them: src/monitor/damage.ts tells the two apart.)
  const kind = /\bis missing\b/.test(err.message) ? 'chunk-missing' : 'chunk-damaged';
  for (const t of manifest.tables) {
    t.chunks.forEach((c, i) => {
      if (c.id === err.chunkId) {
        out.push({
          table: `${t.schema}.${t.name}`,
          chunk: i,
          chunkId: c.id,
          kind,
          message: `${err.message} (chunk ${i + 1} of ${t.chunks.length} of ${t.schema}.${t.name}, rows ${describeRange(c.first, c.last)})`,
        });
      }
    });
  }
  if (out.length === 0) out.push({ chunkId: err.chunkId, kind, message: err.message });
  return out;
}

function describeRange(
  first: ReadonlyArray<string | null> | null,
  last: ReadonlyArray<string | null> | null,
): string {
  if (first === null || last === null) return 'of a table without a key';
  return `(${first.join(', ')}) to (${last.join(', ')})`;
}

/** The restored schema model against the manifest's, as a list of objects that differ. */
async function compareSchema(target: ResolvedTarget, expected: SchemaModel): Promise<RunProblem[]> {
  const c = await connect(target, { applicationName: 'flashback verify' });
  let actual: SchemaModel;
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    actual = await readSchema(c);
    await c.query('ROLLBACK');
  } finally {
    await c.end().catch(() => {});
  }
  return diffSchemas(expected, actual);
}

/**
 * Objects present in one model and not equal in the other, named by kind and
 * name. The manifest's model went through JSON; so does the restored one, so
 * absent and undefined fields compare equal. Not compared: the server version
 * (the scratch may be a newer minor) and the unsupported list (those objects
 * are, by definition, not restored).
 */
export function diffSchemas(expected: SchemaModel, actual: SchemaModel): RunProblem[] {
  // Tables the backup said are restored otherwise (their column order, OF
  // type, access method or tablespace): they and what hangs on them differ
  // by design, and their rows are still compared. Failing on them would
  // keep the status critical for what the backup already reported.
  const excused = new Set(
    expected.unsupported.filter((u) => RESTORED_OTHERWISE.has(u.kind)).map((u) => u.name),
  );
  const on = (o: unknown): boolean => {
    const r = o as Record<string, unknown>;
    const table = typeof r.table === 'string' ? r.table : r.name;
    return (
      typeof r.schema === 'string' &&
      typeof table === 'string' &&
      excused.has(qualify(r.schema, table))
    );
  };
  const strip = (m: SchemaModel): Record<string, unknown> => {
    const copy = JSON.parse(JSON.stringify(m)) as Record<string, unknown>;
    if (excused.size === 0) return copy;
    for (const [kind, list] of Object.entries(copy)) {
      if (Array.isArray(list) && kind !== 'schemas') copy[kind] = list.filter((o) => !on(o));
    }
    return copy;
  };
  const a = strip(expected);
  const b = strip(actual);
  const problems: RunProblem[] = [];
  for (const kind of Object.keys({ ...a, ...b })) {
    if (kind === 'serverVersionNum' || kind === 'unsupported') continue;
    // What the snapshot did not record (a part of the model added since it
    // was taken, such as `database`) was not restored either.
    if (!(kind in a)) continue;
    const x = a[kind];
    const y = b[kind];
    if (!Array.isArray(x) || !Array.isArray(y)) {
      if (!isDeepStrictEqual(x, y)) {
        problems.push({ message: `schema: ${kind} differs after restore` });
      }
      continue;
    }
    const left = new Map(x.map((o) => [stableJson(o), o]));
    const right = new Map(y.map((o) => [stableJson(o), o]));
    for (const [k, o] of left) {
      if (!right.has(k))
        problems.push({ message: `schema: ${label(kind, o)} differs or is missing after restore` });
    }
    for (const [k, o] of right) {
      if (!left.has(k))
        problems.push({
          message: `schema: ${label(kind, o)} appears after restore but was not in the snapshot`,
        });
    }
  }
  return problems;
}

const SINGULAR: Readonly<Record<string, string>> = {
  schemas: 'schema',
  extensions: 'extension',
  collations: 'collation',
  types: 'type',
  functions: 'function',
  aggregates: 'aggregate',
  tables: 'table',
  sequences: 'sequence',
  constraints: 'constraint',
  indexes: 'index',
  views: 'view',
  triggers: 'trigger',
  rules: 'rule',
  policies: 'policy',
  statistics: 'statistics object',
};

function label(kind: string, o: unknown): string {
  const r = o as Record<string, unknown>;
  const name = [r.schema, r.name ?? r.table].filter((v) => typeof v === 'string').join('.');
  const of =
    typeof r.table === 'string' && typeof r.name === 'string' ? ` on ${String(r.table)}` : '';
  return `${SINGULAR[kind] ?? kind} ${name || JSON.stringify(o).slice(0, 80)}${of}`;
}

/** JSON with object keys sorted, so equal values give equal text. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Reads every table back and compares chunk by chunk; appends differences to `problems`. */
async function compareData(
  target: ResolvedTarget,
  manifest: SnapshotManifest,
  workers: number,
  options: VerifyOptions,
  problems: RunProblem[],
): Promise<Array<TableVerification & { bytes: number }>> {
  const queue = [...manifest.tables].sort((a, b) => b.bytes - a.bytes);
  const results = new Map<TableSnapshot, TableVerification & { bytes: number }>();
  const n = Math.max(1, Math.min(workers, queue.length));
  const clients: PgClient[] = [];
  let bytes = 0;
  try {
    for (let i = 0; i < n; i++) {
      const c = await connect(target, { applicationName: 'flashback verify' });
      clients.push(c);
      await c.query('SET synchronize_seqscans = off');
    }
    await runWorkers(
      n,
      async (i, signal) => {
        for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
          const r = await compareTable(clients[i]!, t, signal, (b) => {
            bytes += b;
          });
          results.set(t, r.result);
          problems.push(...r.problems);
          options.onProgress?.({
            phase: 'data',
            tablesDone: results.size,
            tablesTotal: manifest.tables.length,
            bytes,
          });
        }
      },
      options.signal,
    );
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
  return manifest.tables.map((t) => results.get(t)!);
}

async function compareTable(
  client: PgClient,
  t: TableSnapshot,
  signal: AbortSignal,
  onBytes: (n: number) => void,
): Promise<{ result: TableVerification & { bytes: number }; problems: RunProblem[] }> {
  const name = `${t.schema}.${t.name}`;
  const chunker = new Chunker({
    keyColumns: t.key.length,
    boundaryBits: t.boundaryBits,
    maxBytes: MAX_CHUNK_BYTES,
  });
  const problems: RunProblem[] = [];
  let position = 0;
  let rows = 0;
  let bytes = 0;
  let bad = 0;
  const check = (content: Buffer, chunkRows: number): void => {
    const expected = t.chunks[position];
    const id = createHash('sha256').update(content).digest('hex');
    rows += chunkRows;
    if (expected === undefined || expected.id !== id || expected.rows !== chunkRows) {
      bad++;
      if (problems.length < MAX_PROBLEMS_PER_TABLE) {
        problems.push({
          table: name,
          chunk: position,
          ...(expected === undefined ? {} : { chunkId: expected.id }),
          message:
            expected === undefined
              ? `${name}: the restored table has more data than the snapshot (an extra chunk at position ${position + 1})`
              : `${name}: chunk ${position + 1} of ${t.chunks.length} (${expected.id.slice(0, 12)}, rows ${describeRange(expected.first, expected.last)}) differs after restore: ${chunkRows} rows hashing to ${id.slice(0, 12)}, expected ${expected.rows} rows`,
        });
      }
    }
    position++;
  };
  const stream = client.query(new CopyOut(tableCopySql(t)));
  try {
    for await (const data of stream as AsyncIterable<Buffer>) {
      if (signal.aborted) throw new InterruptedError('verify interrupted');
      bytes += data.length;
      onBytes(data.length);
      for (const c of chunker.push(data)) check(c.content, c.rows);
    }
    for (const c of chunker.end()) check(c.content, c.rows);
  } catch (err) {
    stream.destroy();
    throw err;
  }
  if (position < t.chunks.length) {
    bad += t.chunks.length - position;
    problems.push({
      table: name,
      chunk: position,
      chunkId: t.chunks[position]!.id,
      message: `${name}: the restored table ends after chunk ${position} of ${t.chunks.length}: ${t.rows - rows} row(s) missing`,
    });
  }
  if (rows !== t.rows) {
    problems.push({
      table: name,
      message: `${name}: ${rows.toLocaleString('en-US')} rows after restore, ${t.rows.toLocaleString('en-US')} in the snapshot`,
    });
  }
  if (bad > MAX_PROBLEMS_PER_TABLE) {
    problems.push({
      table: name,
      message: `${name}: ${bad} chunks differ in all (the first ${MAX_PROBLEMS_PER_TABLE} are listed)`,
    });
  }
  return {
    result: {
      table: name,
      rows,
      expectedRows: t.rows,
      chunks: t.chunks.length,
      badChunks: bad,
      bytes,
    },
    problems,
  };
}

/** A stdin that is not a terminal: the scratch target is unprotected, so nothing is asked. */
function emptyInput(): NodeJS.ReadableStream & { isTTY?: boolean } {
  return Readable.from([]);
}
