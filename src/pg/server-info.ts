/**
 * What Flashback reads about a server to identify and describe it:
 * the identity fingerprint (system identifier, database, host), version,
 * size, and the best available signal of the last write.
 */
import type { ConnectionParams } from '../config/targets.js';
import { OperationError } from '../errors.js';
import type { PgClient } from './connect.js';

/** The identity of a target: what the guard's fingerprints record and compare. */
export interface ServerIdentity {
  /** `pg_control_system().system_identifier`: unique per cluster (initdb), kept by physical replicas. */
  readonly systemIdentifier: string;
  /** `current_database()`. */
  readonly database: string;
  /** The host as configured (not resolved): part of the fingerprint. */
  readonly host: string;
  readonly port: number;
}

/** Where a last-write time came from, best first. */
export type LastWriteSource = 'commit-timestamp' | 'wal-file' | 'table-statistics';

/** A server's description, as `flashback targets` shows it. */
export interface ServerInfo {
  readonly identity: ServerIdentity;
  /** e.g. "17.10". */
  readonly version: string;
  /** e.g. 170010. */
  readonly versionNum: number;
  /** True on a standby. */
  readonly inRecovery: boolean;
  readonly sizeBytes: number;
  readonly currentUser: string;
  /** Best available signal of the last write; undefined when none is readable. */
  readonly lastWrite?: { readonly at: string; readonly source: LastWriteSource } | undefined;
}

/** Reads a server's identity. */
export async function readIdentity(
  client: PgClient,
  params: ConnectionParams,
): Promise<ServerIdentity> {
  let row: { sid: string; db: string } | undefined;
  try {
    const r = await client.query<{ sid: string; db: string }>(
      'SELECT system_identifier::text AS sid, current_database() AS db FROM pg_control_system()',
    );
    row = r.rows[0];
  } catch (err) {
    throw new OperationError(
      'target.identity',
      `cannot read the system identifier of ${params.host}:${params.port}: ${(err as Error).message}`,
      {
        hint: 'the role needs EXECUTE on pg_control_system() (granted to PUBLIC by default)',
        cause: err,
      },
    );
  }
  if (row === undefined)
    throw new OperationError('target.identity', 'pg_control_system() returned no row');
  return { systemIdentifier: row.sid, database: row.db, host: params.host, port: params.port };
}

/** Reads everything `targets` shows. */
export async function readServerInfo(
  client: PgClient,
  params: ConnectionParams,
): Promise<ServerInfo> {
  const identity = await readIdentity(client, params);
  const r = await client.query<{ v: string; vn: string; rec: string; size: string; usr: string }>(
    `SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS vn,
            pg_is_in_recovery()::text AS rec, pg_database_size(current_database())::text AS size,
            current_user AS usr`,
  );
  const row = r.rows[0]!;
  return {
    identity,
    version: row.v.split(' ')[0] ?? row.v,
    versionNum: Number(row.vn),
    inRecovery: row.rec === 'true',
    sizeBytes: Number(row.size),
    currentUser: row.usr,
    lastWrite: await readLastWrite(client),
  };
}

/**
 * The best signal of the last write that this role can read:
 * 1. commit timestamps (exact; needs track_commit_timestamp = on),
 * 2. the newest WAL file's modification time (needs pg_monitor or superuser),
 * 3. the newest vacuum/analyze in this database's statistics (a lower bound).
 * Each failure (setting off, permission denied) falls through to the next.
 */
async function readLastWrite(client: PgClient): Promise<ServerInfo['lastWrite']> {
  const attempts: Array<[LastWriteSource, string]> = [
    [
      'commit-timestamp',
      `SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
         FROM pg_last_committed_xact() WHERE current_setting('track_commit_timestamp')::bool`,
    ],
    [
      'wal-file',
      `SELECT to_char(max(modification) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at FROM pg_ls_waldir()`,
    ],
    [
      'table-statistics',
      `SELECT to_char(max(greatest(last_vacuum, last_autovacuum, last_analyze, last_autoanalyze)) AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at FROM pg_stat_user_tables`,
    ],
  ];
  for (const [source, sql] of attempts) {
    try {
      const at = (await client.query<{ at: string | null }>(sql)).rows[0]?.at;
      if (at !== undefined && at !== null) return { at, source };
    } catch {
      // Not permitted or not enabled: try the next signal.
    }
  }
  return undefined;
}
