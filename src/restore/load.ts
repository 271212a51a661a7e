/** Streaming a table's chunks into COPY FROM: the one loop both restore paths use. */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { DamagedError, InterruptedError, OperationError } from '../errors.js';
import type { PgClient } from '../pg/connect.js';
import { qualify } from '../pg/schema/quote.js';
import type { ChunkStore } from '../repo/chunks.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';
import { inFlight } from '../util/workers.js';
import { columnList } from './sql.js';

/** A block of a table's rows: whole COPY text lines, and how many. */
export interface RowBlock {
  readonly content: Buffer;
  readonly rows: number;
}

/**
 * Where a table's rows come from: a snapshot's chunks, or (src/history) a
 * snapshot's chunks with the change log up to a moment merged in. Blocks
 * come in order, a few at a time: memory holds at most about two.
 */
export interface TableSource {
  blocks(t: TableSnapshot): AsyncIterable<RowBlock>;
}

/** The same rows as `source`, telling `onBlock` of each block as it is read (for progress). */
export function countedSource(
  source: TableSource,
  onBlock: (rows: number, bytes: number) => void,
): TableSource {
  return {
    async *blocks(t) {
      for await (const block of source.blocks(t)) {
        onBlock(block.rows, block.content.length);
        yield block;
      }
    },
  };
}

/** A snapshot's own rows: its chunks, each fetched (and hash-verified) while the previous one is sent. */
export function snapshotSource(
  chunks: ChunkStore,
  /** Only the chunks this accepts (e.g. those that can hold some keys); default all. */
  include?: (t: TableSnapshot, chunk: ChunkRef) => boolean,
): TableSource {
  return {
    async *blocks(t) {
      const refs = include === undefined ? t.chunks : t.chunks.filter((c) => include(t, c));
      const fetch = (i: number): Promise<Buffer> | undefined =>
        refs[i] === undefined ? undefined : inFlight(chunks.get(refs[i].id));
      let next = fetch(0);
      for (let i = 0; i < refs.length; i++) {
        const content = await next!;
        next = fetch(i + 1);
        yield { content, rows: refs[i]!.rows };
      }
    },
  };
}

/** COPY text lines held by the caller, handed out in blocks of at most 10,000 lines. */
export function linesSource(lines: readonly string[]): TableSource {
  return {
    async *blocks() {
      for (let i = 0; i < lines.length; i += 10_000) {
        const part = lines.slice(i, i + 10_000);
        yield { content: Buffer.from(`${part.join('\n')}\n`, 'utf8'), rows: part.length };
      }
    },
  };
}

/**
 * Sends every block of `t` from `source` to `COPY <into> FROM STDIN`.
 * Returns the rows sent. `interrupted` is the message used when `signal` aborts.
 */
export async function copyChunks(
  client: PgClient,
  source: TableSource,
  t: TableSnapshot,
  into: string,
  signal: AbortSignal | undefined,
  interrupted: string,
  freeze = false,
  /** The COPY's column list, one per field of the source's lines; default t's columns. */
  columns: readonly string[] = t.columns,
): Promise<number> {
  const ws = client.query(
    copyFrom(`COPY ${into}${columnList(columns)} FROM STDIN${freeze ? ' (FREEZE)' : ''}`),
  );
  const done = inFlight(finished(ws));
  let rows = 0;
  try {
    for await (const block of source.blocks(t)) {
      if (signal?.aborted === true) throw new InterruptedError(interrupted);
      if (!ws.write(block.content)) await Promise.race([once(ws, 'drain'), done]);
      rows += block.rows;
    }
    ws.end();
    await done;
    return rows;
  } catch (err) {
    ws.destroy();
    await done.catch(() => {});
    throw err;
  }
}

/**
 * Loads all of a table's rows into the table itself; any failure other than
 * an interruption becomes an OperationError naming the table, ending with
 * `consequence` (what the caller guarantees happened to the target).
 */
export async function loadTable(
  client: PgClient,
  chunks: TableSource,
  t: TableSnapshot,
  signal: AbortSignal | undefined,
  interrupted: string,
  consequence: string,
  freeze = false,
): Promise<number> {
  try {
    return await copyChunks(
      client,
      chunks,
      t,
      qualify(t.schema, t.name),
      signal,
      interrupted,
      freeze,
    );
  } catch (err) {
    if (
      err instanceof InterruptedError ||
      err instanceof OperationError ||
      err instanceof DamagedError // a chunk that cannot be read: its own message and exit code
    )
      throw err;
    throw new OperationError(
      'restore.load',
      `loading ${t.schema}.${t.name} failed: ${(err as Error).message}; ${consequence}`,
      {
        cause: err,
      },
    );
  }
}
