/**
 * Opening connections to targets. Every value comes back in PostgreSQL's text
 * form (no type parsing: nothing is lost to a JavaScript Date or number), and
 * every connection failure becomes a TargetUnreachableError that names the
 * target and host and never contains a password.
 */
import net from 'node:net';
import pg from 'pg';
import type { ConnectionParams, ResolvedTarget } from '../config/targets.js';
import { OperationError, TargetUnreachableError } from '../errors.js';
import { redact } from '../secrets.js';

/** A connected client. Values of every type are returned as strings (or null). */
export type PgClient = pg.Client;

/** Options for `connect`. */
export interface ConnectOptions {
  /** Seconds to wait for the server; default 10. */
  readonly timeoutSeconds?: number | undefined;
  /** `application_name` shown in pg_stat_activity. */
  readonly applicationName?: string | undefined;
  /** Open a logical replication connection (`replication=database`). */
  readonly replication?: boolean | undefined;
}

/**
 * Settings of every session Flashback opens, set first thing after it
 * connects, so a setting of the database, role or server cannot change what
 * values look like in text (what a backup stores, capture logs, and a
 * restore parses), nor stop the work half-way. Without them:
 * - a database with `DateStyle = 'SQL, DMY'` backs up 10 March as
 *   "10/03/2024" and restores it, under ISO, as 3 October; a TimeZone
 *   changed between a snapshot and the log makes the same timestamptz key
 *   two texts; `extra_float_digits = 0` rounds floats; `IntervalStyle =
 *   sql_standard` reads "-1 day +02:00" otherwise; lc_monetary changes
 *   money's text; `bytea_output = escape` stores bytea in another text (and
 *   verify then finds the restored bytes "different");
 * - `xmloption = document` on the target refuses an xml value that is
 *   content; `standard_conforming_strings = off` reads backslashes in
 *   literals;
 * - a regclass or regtype value is printed unqualified when search_path
 *   finds it, and read back through the target's search_path: with
 *   `search_path = app, public` on the source, `app.items` came back as
 *   `public.items`. Every session uses `public` alone (pg_catalog is then
 *   searched first, as by default, and objects are created in public;
 *   listing pg_catalog first would make it the schema unqualified CREATEs
 *   go to). The schema model is read with an empty one
 *   (src/pg/schema/read.ts);
 * - `row_security = on` lets a role under a policy read only the rows the
 *   policy shows: a backup would miss rows without a word. Off, such a read
 *   is an error instead (owners, superusers and BYPASSRLS roles are not
 *   affected), as pg_dump does;
 * - a role's `statement_timeout`, `lock_timeout` or
 *   `idle_in_transaction_session_timeout` (common on application roles)
 *   would cancel a long COPY, or the session that holds a backup's
 *   exported snapshot while the workers read.
 * The replication session gets them too: pgoutput writes the log's values
 * with the walsender's settings (PostgreSQL's own subscriptions pin the
 * first three the same way).
 *
 * They are SET statements, not the startup parameter `options`: PgBouncer
 * refuses a connection that sends `options` ("unsupported startup
 * parameter") unless its ignore_startup_parameters lists it, and then drops
 * the settings. One round trip, once per connection. Values are SQL as SET
 * takes them (a list, such as search_path's, unquoted).
 */
export const SESSION_SETTINGS: ReadonlyArray<readonly [name: string, value: string]> = [
  // The timeouts first: the settings are one simple query, whose statements
  // each run under the timeout in force (PostgreSQL 13+), the database's
  // until these are set. Last, every SET ran under a database's 1 ms
  // statement_timeout, and a busy server cancelled the connection's setup.
  ['statement_timeout', '0'],
  ['lock_timeout', '0'],
  ['idle_in_transaction_session_timeout', '0'],
  ['DateStyle', "'ISO, YMD'"],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '3'],
  ['TimeZone', "'UTC'"],
  ['lc_monetary', "'C'"],
  ['bytea_output', 'hex'],
  ['xmloption', 'content'],
  ['standard_conforming_strings', 'on'],
  ['search_path', 'public'],
  ['row_security', 'off'],
];

/**
 * Within the open transaction, gives these settings back the values the
 * database (and role) set for its own sessions, in place of
 * SESSION_SETTINGS': for the statements that write into a live database,
 * whose triggers and assignment casts must act as the application's own
 * writes do. With Flashback's search_path an unqualified table name in a
 * trigger function went to another schema's table; with UTC, a timestamptz
 * of the snapshot put into a column retyped to timestamp since took UTC's
 * wall clock, not the database's. Transaction-local (set_config's
 * is_local): the session's settings are back after it.
 */
export async function asTheDatabase(
  client: PgClient,
  names: ReadonlyArray<'search_path' | 'TimeZone'>,
): Promise<void> {
  // (reset_val: what RESET would give, the database's or role's value, or
  // the server's; SESSION_SETTINGS are SETs, not startup parameters.)
  await client.query(
    'SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name = ANY($1::text[])',
    [names],
  );
}

/** The settings as one simple-protocol query (accepted by a replication session too). */
const SET_SESSION = SESSION_SETTINGS.map(([name, value]) => `SET ${name} = ${value}`).join('; ');

/** Returns every value as its text form. */
const rawTypes = { getTypeParser: () => (value: string) => value };

/** Opens a connection to a target; throws TargetUnreachableError on any connection failure. */
export async function connect(
  target: ResolvedTarget,
  options: ConnectOptions = {},
): Promise<PgClient> {
  return connectParams(target.name, target.connection, options);
}

/** Opens a connection from bare parameters; `label` names it in errors. */
export async function connectParams(
  label: string,
  params: ConnectionParams,
  options: ConnectOptions = {},
): Promise<PgClient> {
  const timeout = options.timeoutSeconds ?? 10;
  const config: pg.ClientConfig & { replication?: string } = {
    host: params.host,
    port: params.port,
    database: params.database,
    user: params.user,
    connectionTimeoutMillis: timeout * 1000,
    application_name: options.applicationName ?? 'flashback',
    types: rawTypes,
    ssl: sslOption(params.sslmode),
  };
  if (params.password !== undefined) config.password = params.password;
  if (options.replication === true) {
    config.replication = 'database';
    // A small read buffer: when the replication stream pauses reading (a
    // consumer batching, or behind), the socket stops reading at once and the
    // kernel accumulates what the server sends; resumed, it is read in large
    // blocks instead of one small read per message.
    // (net.Socket passes stream options on to its Duplex; the types omit them.)
    config.stream = () =>
      new net.Socket({ readableHighWaterMark: 1024 } as net.SocketConstructorOpts);
  }
  const client = new pg.Client(config);
  // An idle connection dropped by the server must not crash the process.
  client.on('error', () => {});
  // The server reports its encoding as the session starts (no query needed).
  let serverEncoding: string | undefined;
  (client as unknown as { connection: NodeJS.EventEmitter }).connection.on(
    'parameterStatus',
    (m: { parameterName: string; parameterValue: string }) => {
      if (m.parameterName === 'server_encoding') serverEncoding = m.parameterValue;
    },
  );
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw unreachable(label, params, err, timeout);
  }
  try {
    // A SQL_ASCII database holds bytes in no encoding: a UTF8 session has
    // the server check every value it sends, and a byte past 127 that is not
    // UTF-8 stops the backup ("invalid byte sequence"). Such a session takes
    // the bytes as they are, as pg_dump does; COPY data is handled as bytes
    // throughout. Not the replication session: values the change log holds
    // are read as text, so capture keeps refusing what is not UTF-8 rather
    // than store it.
    const settings =
      serverEncoding === 'SQL_ASCII' && options.replication !== true
        ? `${SET_SESSION}; SET client_encoding = SQL_ASCII`
        : SET_SESSION;
    // Even the first SET runs under the database's statement_timeout: a tiny
    // one can cancel it on a busy server (57014). The query is one implicit
    // transaction, so a cancel undoes all of it: it is run again (it takes
    // microseconds; a cancel is a scheduling accident).
    for (let attempt = 1; ; attempt++) {
      try {
        await client.query(settings);
        break;
      } catch (err) {
        if ((err as { code?: unknown }).code !== '57014' || attempt >= 5) throw err;
      }
    }
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return client;
}

function sslOption(mode: ConnectionParams['sslmode']): pg.ClientConfig['ssl'] {
  switch (mode) {
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
    case 'verify-full':
      return { rejectUnauthorized: true };
    default:
      // pg has no "prefer": like disable, no TLS is attempted. Documented in docs/CONFIG.md.
      return false;
  }
}

/** `user@host:port/database`: how a connection is named in messages (never with a password). */
export function describeConnection(p: ConnectionParams): string {
  return `${p.user}@${p.host}:${p.port}/${p.database}`;
}

function unreachable(
  label: string,
  p: ConnectionParams,
  err: unknown,
  timeout: number,
): TargetUnreachableError {
  const e = err as { code?: string; message?: string };
  const where = `target "${label}" (${describeConnection(p)})`;
  let why: string;
  let hint: string;
  switch (e.code) {
    case 'ECONNREFUSED':
      why = 'connection refused';
      hint = `is PostgreSQL running and listening on ${p.host}:${p.port}?`;
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      why = `host "${p.host}" not found`;
      hint = 'check the host name in the target or URL';
      break;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      why = `network unreachable (${e.code})`;
      hint = 'check the host, port and any firewall between here and the server';
      break;
    case '28P01':
      why = `password authentication failed for user "${p.user}"`;
      hint = 'check the password in the variable named by password_env (or PGPASSWORD)';
      break;
    case '28000':
      why = redact(e.message ?? 'authorization rejected');
      hint = 'check the user name, and that pg_hba.conf allows this host, user and database';
      break;
    case '3D000':
      why = `database "${p.database}" does not exist`;
      hint = 'check the database name in the target or URL';
      break;
    case '57P03':
      why = 'the server is starting up or shutting down';
      hint = 'try again in a moment';
      break;
    default: {
      const msg = e.message ?? String(err);
      if (/unsupported startup parameter: replication/.test(msg)) {
        // PgBouncer before 1.23 refuses replication connections outright.
        why = 'it does not accept replication connections (a connection pooler such as PgBouncer?)';
        hint =
          'backups and capture need a replication connection: point the target at PostgreSQL itself, not at the pooler (restore, undo and doctor work through a pooler in session mode)';
      } else if (/timeout/i.test(msg)) {
        why = `no answer within ${timeout} s`;
        hint = 'check the host, port and any firewall between here and the server';
      } else if (/SASL|password must be a string|client password/i.test(msg)) {
        why = 'the server asks for a password and none was given';
        hint = 'set password_env on the target (or PGPASSWORD for a one-off target)';
      } else {
        why = redact(msg);
        hint =
          "check the target's connection settings (`flashback doctor TARGET` when it connects)";
      }
    }
  }
  return new TargetUnreachableError(label, `cannot connect to ${where}: ${why}`, {
    hint,
    cause: err,
  });
}

/**
 * Runs SQL with the extended query protocol, which accepts exactly one
 * statement: user-supplied SQL (a --where predicate) can never smuggle in a
 * second statement. (`queryMode` is node-postgres API missing from @types/pg.)
 */
export function queryOne(
  client: PgClient,
  text: string,
): Promise<pg.QueryResult<Record<string, string | null>>> {
  return client.query({ text, queryMode: 'extended' } as pg.QueryConfig);
}

/**
 * A server error as a user needs it: the message and, where the server
 * gives one, its detail, which names the row ("Key (email)=(a@x) already
 * exists."): without it a unique violation says which constraint, not which
 * value.
 */
export function serverErrorText(err: unknown): string {
  const e = err as { message?: string; detail?: string };
  const message = e.message ?? String(err);
  return e.detail === undefined || e.detail === '' ? message : `${message}: ${e.detail}`;
}

/**
 * A server error that reached the top of a command unhandled, as the
 * failure it is when it says something about the environment, not about
 * Flashback: the role lacks a privilege (42501), the server is short of a
 * resource (class 53: disk, memory, connections), was shut down or
 * cancelled the statement (57), failed an I/O (58), lost the connection
 * (08), gave up on a lock or a conflicting transaction (55P03, 40), or is
 * read-only (25006: a standby). An OperationError (exit 1) with a hint;
 * undefined for anything else (a statement Flashback built wrong stays an
 * internal error, exit 70, to be reported).
 */
export function serverRefusal(err: unknown): OperationError | undefined {
  if (!(err instanceof pg.DatabaseError) || typeof err.code !== 'string') return undefined;
  const state = err.code;
  const hint = refusalHint(state, err.message);
  if (hint === undefined) return undefined;
  return new OperationError(
    'server.refused',
    `the server refused: ${serverErrorText(err)} (SQLSTATE ${state})`,
    { hint, cause: err },
  );
}

function refusalHint(state: string, message: string): string | undefined {
  if (state === '42501') {
    if (/row-level security/.test(message)) {
      return 'row-level security applies to the role Flashback connects as, and Flashback never reads or writes past it silently: ALTER ROLE <role> BYPASSRLS, or connect as a role that has it';
    }
    if (/create database/.test(message)) {
      return 'the role needs CREATEDB (ALTER ROLE <role> CREATEDB), or create the database first and restore without --create';
    }
    return 'grant the role Flashback connects as that privilege, or connect as a role that has it (`flashback doctor TARGET` lists what backups and capture need)';
  }
  if (state === '25006')
    return 'the server is read-only (a standby, or default_transaction_read_only): write to the primary';
  if (state === '55P03' || state.startsWith('40'))
    return 'another transaction was in the way: run the command again';
  if (state.startsWith('53'))
    return 'the server ran out of a resource (disk space, memory or connections): free it and run the command again';
  if (state === '57014')
    return "the statement was cancelled (statement_timeout, or pg_cancel_backend): raise the role's statement_timeout for Flashback, or run the command again";
  if (state.startsWith('57')) return 'the server shut down: run the command again once it is up';
  if (state.startsWith('58'))
    return "the server's system failed (an I/O error): see the server's log";
  // (Not 08P01, a protocol violation: what Flashback sent was wrong, a bug.)
  if (state.startsWith('08') && state !== '08P01')
    return 'the connection to the server failed: run the command again once it is reachable';
  return undefined;
}
