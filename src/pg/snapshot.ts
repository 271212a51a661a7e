/**
 * Consistent snapshots from the replication protocol. A temporary logical
 * replication slot created with an exported snapshot gives the exact LSN at
 * which the snapshot's data ends and a change log would begin (no gap, no
 * overlap). Workers import the snapshot with SET TRANSACTION SNAPSHOT; the
 * snapshot stays importable while the replication connection stays open,
 * and the temporary slot disappears when it closes.
 */
import { randomBytes } from 'node:crypto';
import type { ResolvedTarget } from '../config/targets.js';
import { InterruptedError, OperationError } from '../errors.js';
import { connect, type PgClient } from './connect.js';
import { type SlotWait, watchSlotCommand } from './replication/slot-wait.js';
import { quoteLiteral } from './schema/quote.js';

/** An exported snapshot; `close()` ends it and drops the temporary slot. */
export interface ExportedSnapshot {
  /** Name to pass to SET TRANSACTION SNAPSHOT. */
  readonly name: string;
  /** The slot's consistent point, e.g. `0/14F5500`. */
  readonly lsn: string;
  close(): Promise<void>;
}

/**
 * Creates a temporary logical slot with an exported snapshot on the target.
 * It waits for the transactions running on the server to end (told to
 * `onWait`); aborting `signal` cancels it (InterruptedError). See
 * src/pg/replication/slot-wait.ts.
 */
export async function exportSnapshot(
  target: ResolvedTarget,
  o: { signal?: AbortSignal | undefined; onWait?: ((w: SlotWait) => void) | undefined } = {},
): Promise<ExportedSnapshot> {
  const repl = await connect(target, { replication: true, applicationName: 'flashback backup' });
  const slot = `flashback_tmp_${randomBytes(6).toString('hex')}`;
  try {
    // The pre-15 spelling (EXPORT_SNAPSHOT) is still accepted by 15-18; the
    // parenthesised form only from 15, so use this one for 14 support.
    const rows = await watchSlotCommand<{ consistent_point: string; snapshot_name: string }>(
      repl,
      `CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT`,
      {
        label: target.name,
        connection: target.connection,
        signal: o.signal,
        onWait: o.onWait,
        interrupted:
          'backup interrupted while waiting for a consistent snapshot: nothing was written',
      },
    );
    const row = rows[0];
    if (row === undefined) throw new Error('CREATE_REPLICATION_SLOT returned no row');
    return {
      name: row.snapshot_name,
      lsn: row.consistent_point,
      close: async () => {
        await repl.end().catch(() => {});
      },
    };
  } catch (err) {
    await repl.end().catch(() => {});
    if (err instanceof InterruptedError) throw err;
    throw new OperationError(
      'backup.snapshot',
      `cannot create a consistent snapshot on target "${target.name}": ${(err as Error).message}`,
      {
        hint: 'check `flashback doctor` for wal_level, free replication slots and WAL senders, and the REPLICATION privilege',
        cause: err,
      },
    );
  }
}

/** Starts a read-only REPEATABLE READ transaction on `client` that sees exactly `snapshot`. */
export async function importSnapshot(client: PgClient, snapshot: ExportedSnapshot): Promise<void> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  await client.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshot.name)}`);
}
