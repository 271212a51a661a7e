/** Streaming a table's chunks into COPY FROM: the one loop both restore paths use. */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { InterruptedError, OperationError } from '../errors.js';
import type { PgClient } from '../pg/connect.js';
import { qualify } from '../pg/schema/quote.js';
import type { ChunkStore } from '../repo/chunks.js';
import type { TableSnapshot } from '../repo/snapshots.js';
import { inFlight } from '../util/workers.js';
import { columnList } from './sql.js';

/**
 * Sends every chunk of `t` to `COPY <into> FROM STDIN`, fetching (and
 * verifying) the next chunk while one is being sent: at most two chunks are
 * in memory. Returns the rows sent. `interrupted` is the message used when
 * `signal` aborts.
 */
export async function copyChunks(
  client: PgClient,
  chunks: ChunkStore,
  t: TableSnapshot,
  into: string,
  signal: AbortSignal | undefined,
  interrupted: string,
): Promise<number> {
  const ws = client.query(copyFrom(`COPY ${into}${columnList(t.columns)} FROM STDIN`));
  const done = inFlight(finished(ws));
  const fetch = (i: number): Promise<Buffer> | undefined =>
    t.chunks[i] === undefined ? undefined : inFlight(chunks.get(t.chunks[i].id));
  let rows = 0;
  let next = fetch(0);
  try {
    for (let i = 0; i < t.chunks.length; i++) {
      if (signal?.aborted === true) throw new InterruptedError(interrupted);
      const content = await next!;
      next = fetch(i + 1);
      if (!ws.write(content)) await Promise.race([once(ws, 'drain'), done]);
      rows += t.chunks[i]!.rows;
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
  chunks: ChunkStore,
  t: TableSnapshot,
  signal: AbortSignal | undefined,
  interrupted: string,
  consequence: string,
): Promise<number> {
  try {
    return await copyChunks(client, chunks, t, qualify(t.schema, t.name), signal, interrupted);
  } catch (err) {
    if (err instanceof InterruptedError || err instanceof OperationError) throw err;
    throw new OperationError(
      'restore.load',
      `loading ${t.schema}.${t.name} failed: ${(err as Error).message}; ${consequence}`,
      {
        cause: err,
      },
    );
  }
}
