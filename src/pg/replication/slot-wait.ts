/**
 * CREATE_REPLICATION_SLOT, watched. A logical slot's consistent point comes
 * only once every transaction that holds a transaction id on the server has
 * ended: one left open in a psql session, a long batch, a forgotten
 * PREPARE TRANSACTION. Until then the command waits, without a word, for
 * as long as that takes, and a client that closes its socket does not stop
 * it (the walsender is not reading). So:
 * - after a few seconds, and then periodically, `onWait` is told which
 *   transactions it waits for (process, user, application, since when, its
 *   state and statement, or the prepared transaction's name), read from
 *   pg_locks through a second, ordinary connection;
 * - aborting `signal` cancels the command on the server
 *   (pg_cancel_backend of the walsender: allowed for one's own role) and
 *   rejects with InterruptedError: nothing was created.
 */
import type { ConnectionParams } from '../../config/targets.js';
import { InterruptedError } from '../../errors.js';
import { connectParams, type PgClient } from '../connect.js';

/** A transaction the slot waits for. */
export interface SlotBlocker {
  readonly xid: string;
  /** The session holding it; absent for a prepared transaction. */
  readonly pid?: string | undefined;
  readonly user?: string | undefined;
  readonly application?: string | undefined;
  /** When its transaction began (UTC). */
  readonly since?: string | undefined;
  readonly state?: string | undefined;
  /** Its current or last statement, shortened. */
  readonly query?: string | undefined;
  /** A prepared transaction's name (PREPARE TRANSACTION 'gid'). */
  readonly prepared?: string | undefined;
}

/** What `onWait` is told. */
export interface SlotWait {
  readonly seconds: number;
  /** Empty when the blockers could not be read (no privilege): the wait is still reported. */
  readonly blockers: readonly SlotBlocker[];
}

export interface WatchOptions {
  /** Names the target in connection errors. */
  readonly label: string;
  readonly connection: ConnectionParams;
  readonly signal?: AbortSignal | undefined;
  readonly onWait?: ((w: SlotWait) => void) | undefined;
  /** Ends the InterruptedError's message: what was (not) done. */
  readonly interrupted: string;
  /** First report after this long, then every `everyMs`; defaults 3 s and 15 s. */
  readonly firstMs?: number | undefined;
  readonly everyMs?: number | undefined;
}

/** One line naming a blocker, for messages. */
export function describeBlocker(b: SlotBlocker): string {
  if (b.prepared !== undefined)
    return `prepared transaction '${b.prepared}' (transaction ${b.xid}; COMMIT PREPARED or ROLLBACK PREPARED ends it)`;
  const parts = [
    `pid ${b.pid ?? '?'}`,
    b.user === undefined ? '' : `user ${b.user}`,
    b.application ? `application ${b.application}` : '',
    b.since === undefined ? '' : `open since ${b.since}`,
    b.state === undefined ? '' : b.state,
  ].filter(Boolean);
  return `transaction ${b.xid} (${parts.join(', ')}${b.query ? `: ${b.query}` : ''})`;
}

/** The message for a wait: `what` waits (e.g. `backup prod`), for whom, and what ends it. */
export function slotWaitMessage(what: string, w: SlotWait): string {
  const n = w.blockers.length;
  const who =
    n === 0
      ? 'transactions running on the server to end (which ones could not be read)'
      : `${n === 1 ? 'this transaction' : `these ${n} transactions`} to end: ${w.blockers.map(describeBlocker).join('; ')}`;
  return `${what}: waiting ${Math.round(w.seconds)} s for ${who}. A consistent snapshot or a replication slot begins only after every transaction that holds a transaction id has ended; end or commit ${n === 1 ? 'it' : 'them'}, or press Ctrl-C to stop with nothing written`;
}

/** Runs `command` (a CREATE_REPLICATION_SLOT) on `repl`, watched as above. */
export async function watchSlotCommand<R extends Record<string, unknown>>(
  repl: PgClient,
  command: string,
  o: WatchOptions,
): Promise<R[]> {
  const pid = (repl as unknown as { processID: number | null }).processID;
  const started = Date.now();
  let side: Promise<PgClient | undefined> | undefined;
  let done = false;
  // One side connection, opened when first needed and closed at the end.
  const sideClient = (): Promise<PgClient | undefined> => {
    side ??= connectParams(o.label, o.connection, {
      applicationName: 'flashback (slot wait)',
      timeoutSeconds: 5,
    }).catch(() => undefined);
    return side;
  };
  let cancelled = false;
  const onAbort = (): void => {
    cancelled = true;
    void sideClient().then((c) => c?.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => {}));
  };
  let timer: NodeJS.Timeout | undefined;
  const report = async (): Promise<void> => {
    let blockers: SlotBlocker[] = [];
    const c = await sideClient();
    if (c !== undefined && pid !== null) {
      blockers = await c
        .query<Record<string, string | null>>(
          `SELECT w.transactionid::text AS xid, a.pid::text AS pid, a.usename AS user, a.application_name AS app,
                  to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"') AS since, a.state,
                  left(regexp_replace(a.query, '\\s+', ' ', 'g'), 100) AS query, p.gid
             FROM pg_locks w
             LEFT JOIN pg_locks h ON h.locktype = 'transactionid' AND h.transactionid = w.transactionid AND h.granted
             LEFT JOIN pg_stat_activity a ON a.pid = h.pid
             LEFT JOIN pg_prepared_xacts p ON p.transaction = w.transactionid
            WHERE w.pid = $1 AND w.locktype = 'transactionid' AND NOT w.granted`,
          [pid],
        )
        .then(
          (r) =>
            r.rows.map((x) => ({
              xid: x.xid ?? '?',
              ...(x.gid === null ? {} : { prepared: x.gid }),
              ...(x.pid === null ? {} : { pid: x.pid }),
              ...(x.user === null ? {} : { user: x.user }),
              ...(x.app === null ? {} : { application: x.app }),
              ...(x.since === null ? {} : { since: x.since }),
              ...(x.state === null ? {} : { state: x.state }),
              ...(x.query === null ? {} : { query: x.query }),
            })),
          () => [],
        );
    }
    if (!cancelled && !done) o.onWait?.({ seconds: (Date.now() - started) / 1000, blockers });
  };
  const schedule = (ms: number): void => {
    if (done) return;
    timer = setTimeout(() => {
      void report().finally(() => schedule(o.everyMs ?? 15_000));
    }, ms);
    timer.unref();
  };
  schedule(o.firstMs ?? 3000);
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (o.signal?.aborted === true) throw new InterruptedError(o.interrupted);
    return (await repl.query<R>(command)).rows;
  } catch (err) {
    if (cancelled) throw new InterruptedError(o.interrupted);
    throw err;
  } finally {
    done = true;
    clearTimeout(timer);
    o.signal?.removeEventListener('abort', onAbort);
    if (side !== undefined) await (await side)?.end().catch(() => {});
  }
}
