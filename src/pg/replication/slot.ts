/**
 * The server-side objects continuous capture needs: the `flashback`
 * publication (which tables' changes pgoutput sends) and a permanent
 * logical replication slot (which keeps WAL until its changes are
 * acknowledged, across disconnects and restarts).
 *
 * Order matters: create the publication before the slot. pgoutput looks the
 * publication up as of each change's position in the WAL, so a change made
 * before the publication existed can fail to decode.
 *
 * Statements go through the simple query protocol with quoted literals, so
 * every function here works on an ordinary connection and on a
 * replication connection alike (the latter rejects the extended protocol).
 */
import { InterruptedError } from '../../errors.js';
import { connectParams, type PgClient } from '../connect.js';
import { quoteIdent, quoteLiteral } from '../schema/quote.js';
import { Lsn } from './pgoutput.js';
import { type SlotWait, watchSlotCommand } from './slot-wait.js';
import {
  checkSlotName,
  DEFAULT_PUBLICATION,
  ReplicationError,
  type ReplicationTarget,
} from './stream.js';

/** What `ensurePublication` found or did. */
export interface PublicationState {
  /** True when this call created it. */
  readonly created: boolean;
  /**
   * FOR ALL TABLES. False when someone created the publication for chosen
   * tables: only those tables' changes are captured.
   */
  readonly allTables: boolean;
}

/**
 * Creates the publication `FOR ALL TABLES` unless one of that name exists
 * (an existing one is left as it is). May be called any number of times,
 * also concurrently. FOR ALL TABLES needs a superuser; a role that is not
 * can use a publication a superuser created once (docs/CAPTURE.md).
 */
export async function ensurePublication(
  client: PgClient,
  name: string = DEFAULT_PUBLICATION,
): Promise<PublicationState> {
  const existing = await readPublication(client, name);
  if (existing !== undefined) return { created: false, allTables: existing };
  try {
    await client.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR ALL TABLES`);
    return { created: true, allTables: true };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '42710') {
      // duplicate_object: created concurrently by another process.
      const now = await readPublication(client, name);
      if (now !== undefined) return { created: false, allTables: now };
    }
    if (code === '42501') {
      throw new ReplicationError(
        'replication.privilege',
        `cannot create publication "${name}": ${(err as Error).message}`,
        {
          hint: `a publication FOR ALL TABLES needs a superuser: have one run \`CREATE PUBLICATION ${quoteIdent(name)} FOR ALL TABLES\` once in this database`,
          cause: err,
          serverCode: code,
        },
      );
    }
    throw new ReplicationError(
      'replication.publication',
      `cannot create publication "${name}": ${(err as Error).message}`,
      { cause: err, serverCode: code },
    );
  }
}

/** puballtables of the named publication, or undefined when there is none. */
/** Whether the publication exists: undefined if not, else whether it is FOR ALL TABLES. */
export async function readPublication(
  client: PgClient,
  name: string = DEFAULT_PUBLICATION,
): Promise<boolean | undefined> {
  const r = await client.query<{ puballtables: string }>(
    `SELECT puballtables FROM pg_publication WHERE pubname = ${quoteLiteral(name)}`,
  );
  const row = r.rows[0];
  return row === undefined ? undefined : row.puballtables === 't';
}

/** Flashback's capture slots (logical, `flashback_*`) of the connected database, but `except`. */
export async function otherCaptureSlots(client: PgClient, except: string): Promise<string[]> {
  const r = await client.query<{ slot_name: string }>(
    `SELECT slot_name FROM pg_replication_slots
      WHERE slot_type = 'logical' AND database = current_database()
        AND slot_name LIKE 'flashback\\_%' AND slot_name <> $1
      ORDER BY slot_name`,
    [except],
  );
  return r.rows.map((x) => x.slot_name);
}

/** Drops the publication if it exists; returns whether it did. */
export async function dropPublication(
  client: PgClient,
  name: string = DEFAULT_PUBLICATION,
): Promise<boolean> {
  if ((await readPublication(client, name)) === undefined) return false;
  await client.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  return true;
}

/** A newly created slot. */
export interface CreatedSlot {
  readonly slotName: string;
  /**
   * The slot's consistent point: the first change the slot will stream
   * commits after it. With `snapshotName`, a transaction that imports the
   * snapshot sees exactly the database as of this point: no gap, no overlap.
   */
  readonly consistentPoint: Lsn;
  /** For SET TRANSACTION SNAPSHOT; only with `exportSnapshot`, until `release()`. */
  readonly snapshotName: string | undefined;
  /**
   * Ends the exported snapshot (closes the connection that holds it). The
   * slot stays. Import the snapshot in every worker before calling this.
   * A no-op without `exportSnapshot`. Safe to call more than once.
   */
  release(): Promise<void>;
}

/** Options for `createSlot`. */
export interface CreateSlotOptions {
  /**
   * Export a snapshot at the consistent point, for a backup that must end
   * exactly where the slot's changes begin. The replication connection stays
   * open (and the snapshot importable) until `release()`.
   */
  readonly exportSnapshot?: boolean | undefined;
  /** Told which transactions the creation waits for (src/pg/replication/slot-wait.ts). */
  readonly onWait?: ((w: SlotWait) => void) | undefined;
  /** Aborting cancels the creation (InterruptedError): no slot is left. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Creates a permanent logical slot with the pgoutput plugin on `target`'s
 * database. Waits until every transaction running on the server has ended
 * (the slot's consistent point). Throws ReplicationError with code
 * `replication.slot-exists` when the name is taken.
 */
export async function createSlot(
  target: ReplicationTarget,
  slotName: string,
  options: CreateSlotOptions = {},
): Promise<CreatedSlot> {
  checkSlotName(slotName);
  const exportSnapshot = options.exportSnapshot === true;
  const repl = await connectParams(target.name, target.connection, {
    replication: true,
    applicationName: 'flashback capture',
  });
  try {
    // The pre-15 spelling; 15-18 accept it, and without a keyword the server exports.
    const rows = await watchSlotCommand<{ consistent_point: string; snapshot_name: string | null }>(
      repl,
      `CREATE_REPLICATION_SLOT ${slotName} LOGICAL pgoutput ${exportSnapshot ? 'EXPORT_SNAPSHOT' : 'NOEXPORT_SNAPSHOT'}`,
      {
        label: target.name,
        connection: target.connection,
        signal: options.signal,
        onWait: options.onWait,
        interrupted: `interrupted while creating replication slot "${slotName}" (waiting for transactions to end): no slot was created`,
      },
    );
    const row = rows[0];
    if (row === undefined) throw new Error('CREATE_REPLICATION_SLOT returned no row');
    const consistentPoint = Lsn.parse(row.consistent_point);
    if (!exportSnapshot) {
      await repl.end().catch(() => {});
      return { slotName, consistentPoint, snapshotName: undefined, release: async () => {} };
    }
    return {
      slotName,
      consistentPoint,
      snapshotName: row.snapshot_name ?? undefined,
      release: async () => {
        await repl.end().catch(() => {});
      },
    };
  } catch (err) {
    await repl.end().catch(() => {});
    if (err instanceof InterruptedError) throw err;
    const code = (err as { code?: string }).code;
    const msg = `cannot create replication slot "${slotName}" on target "${target.name}": ${(err as Error).message}`;
    if (code === '42710') {
      throw new ReplicationError('replication.slot-exists', msg, {
        hint: 'use the existing slot, or drop it first (it holds WAL until dropped)',
        cause: err,
        serverCode: code,
      });
    }
    throw new ReplicationError('replication.slot-create', msg, {
      hint: 'check `flashback doctor` for wal_level=logical, free replication slots and WAL senders, and the REPLICATION privilege',
      cause: err,
      serverCode: code,
    });
  }
}

/** Options for `dropSlot`. */
export interface DropSlotOptions {
  /**
   * Seconds to keep retrying while the slot is still active: a walsender
   * releases its slot a moment after its stream closed. Default 5.
   */
  readonly waitSeconds?: number | undefined;
}

/**
 * Drops the slot if it exists; returns whether it did. Dropping a slot
 * frees the WAL it holds and forgets its position: changes not yet
 * acknowledged are gone for good. Throws ReplicationError with code
 * `replication.slot-in-use` while a stream still uses it after the wait.
 */
export async function dropSlot(
  client: PgClient,
  slotName: string,
  options: DropSlotOptions = {},
): Promise<boolean> {
  checkSlotName(slotName);
  const deadline = Date.now() + (options.waitSeconds ?? 5) * 1000;
  for (;;) {
    try {
      const r = await client.query(
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ${quoteLiteral(slotName)}`,
      );
      return (r.rowCount ?? 0) > 0;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '55006' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (code === '42704') return false; // dropped concurrently
      throw new ReplicationError(
        code === '55006' ? 'replication.slot-in-use' : 'replication.slot-drop',
        `cannot drop replication slot "${slotName}": ${(err as Error).message}`,
        {
          hint:
            code === '55006'
              ? 'stop the process streaming from it first (see active_pid in pg_replication_slots)'
              : undefined,
          cause: err,
          serverCode: code,
        },
      );
    }
  }
}

/** A slot as pg_replication_slots shows it. */
export interface SlotInfo {
  readonly slotName: string;
  /** Output plugin; undefined for a physical slot. */
  readonly plugin: string | undefined;
  readonly slotType: 'logical' | 'physical';
  /** The database of a logical slot. */
  readonly database: string | undefined;
  readonly temporary: boolean;
  /** A walsender is streaming from it now. */
  readonly active: boolean;
  readonly activePid: number | undefined;
  /** The oldest WAL the slot needs: everything from here on is kept. */
  readonly restartLsn: Lsn | undefined;
  /** What was last acknowledged: a new stream starts after it. */
  readonly confirmedFlushLsn: Lsn | undefined;
  /**
   * reserved, extended, unreserved, or lost; `lost` means WAL the slot needed
   * was removed (max_slot_wal_keep_size): its change stream has a gap.
   */
  readonly walStatus: string | undefined;
  /** Bytes of WAL held back by the slot: the server's current WAL position minus restart_lsn. */
  readonly retainedWalBytes: bigint | undefined;
}

/** The slot's state, or undefined when there is no such slot. */
export async function slotInfo(client: PgClient, slotName: string): Promise<SlotInfo | undefined> {
  checkSlotName(slotName);
  // On a standby pg_current_wal_lsn() raises; there the replayed position is the current one.
  const r = await client.query<Record<string, string | null>>(
    `SELECT slot_name, plugin, slot_type, database, temporary, active, active_pid,
       restart_lsn, confirmed_flush_lsn, wal_status,
       pg_wal_lsn_diff(
         CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
         restart_lsn) AS retained
     FROM pg_replication_slots WHERE slot_name = ${quoteLiteral(slotName)}`,
  );
  const row = r.rows[0];
  if (row === undefined) return undefined;
  const lsn = (v: string | null | undefined) => (v == null ? undefined : Lsn.parse(v));
  return {
    slotName: row.slot_name ?? slotName,
    plugin: row.plugin ?? undefined,
    slotType: row.slot_type === 'physical' ? 'physical' : 'logical',
    database: row.database ?? undefined,
    temporary: row.temporary === 't',
    active: row.active === 't',
    activePid: row.active_pid == null ? undefined : Number(row.active_pid),
    restartLsn: lsn(row.restart_lsn),
    confirmedFlushLsn: lsn(row.confirmed_flush_lsn),
    walStatus: row.wal_status ?? undefined,
    // pg_wal_lsn_diff returns numeric; its text is a plain integer.
    retainedWalBytes: row.retained == null ? undefined : BigInt(row.retained),
  };
}

/**
 * The slot of this name if it belongs to the database `client` is connected
 * to; undefined when there is none. Slot names are per server, not per
 * database: a slot of the same name for another database is not this
 * database's, and is reported (ReplicationError `replication.slot-other-database`)
 * rather than read, streamed or dropped by mistake.
 */
export async function ownSlotInfo(
  client: PgClient,
  slotName: string,
): Promise<SlotInfo | undefined> {
  const info = await slotInfo(client, slotName);
  if (info === undefined) return undefined;
  const here = (await client.query<{ d: string }>('SELECT current_database() AS d')).rows[0]!.d;
  if (info.database !== undefined && info.database !== here) {
    throw new ReplicationError(
      'replication.slot-other-database',
      `replication slot "${slotName}" on this server belongs to database "${info.database}", not "${here}": slot names are per server, so two targets of the same name on one server collide`,
      {
        hint: 'give one of the targets another name in flashback.yaml (the slot is named after the target)',
      },
    );
  }
  return info;
}
