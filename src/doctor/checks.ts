/**
 * `doctor`: checks that a target is ready for what Flashback does to it
 * (consistent backups, logical decoding, restores by key), each finding with
 * a severity and how to fix it. Findings are plain data; cli/ prints them.
 */
import { judgeSlot, type SlotLog, slotState } from '../capture/slot-health.js';
import { formatSize } from '../config/size.js';
import type { PgClient } from '../pg/connect.js';
import { ownSlotInfo, readPublication } from '../pg/replication/slot.js';
import { DEFAULT_PUBLICATION, ReplicationError } from '../pg/replication/stream.js';
import { INTERNAL_SCHEMA_FILTER } from '../pg/schema/shapes.js';
import type { ServerInfo } from '../pg/server-info.js';
import { lsnText } from '../repo/changelog.js';

/** How bad a finding is. `critical`: a capability will not work; `warning`: it works with a gap. */
export type Severity = 'ok' | 'warning' | 'critical';

/** One check's result. */
export interface Finding {
  /** Stable identifier, e.g. `wal-level`. */
  readonly check: string;
  readonly severity: Severity;
  /** One line: what was found. */
  readonly summary: string;
  /** Objects the finding is about (tables, settings), one per line. */
  readonly details?: readonly string[] | undefined;
  /** What to do about it (absent when ok). */
  readonly fix?: string | undefined;
}

/** The oldest major version Flashback supports: pgoutput logical messages (heartbeats) arrived in 14. */
export const MIN_SERVER_VERSION = 140000;

const RANK: Record<Severity, number> = { ok: 0, warning: 1, critical: 2 };

/** The worst severity among findings (`ok` for none). */
export function worstSeverity(findings: readonly Finding[]): Severity {
  return findings.reduce<Severity>((w, f) => (RANK[f.severity] > RANK[w] ? f.severity : w), 'ok');
}

/** What the slot check needs: which slot is Flashback's, and how much WAL it may hold. */
export interface SlotCheckOptions {
  /** The target's name, for messages and fixes. */
  readonly target: string;
  /** Flashback's slot of this target (`flashback_<scope>`). */
  readonly slot: string;
  /** `capture.max_retained_wal`, in bytes. */
  readonly maxRetainedWal: number;
  /** The target's change log in the repository, when it has one (ChangeLogEnd). */
  readonly log?: ChangeLogEnd | undefined;
}

/** Where a change log in the repository ends, and since when its slot is acknowledged only to there. */
export type ChangeLogEnd = SlotLog;

/** Runs every check against a connected target; the slot check only with `slot`. */
export async function runChecks(
  client: PgClient,
  server: ServerInfo,
  options: { readonly slot?: SlotCheckOptions | undefined } = {},
): Promise<Finding[]> {
  const settings = await readSettings(client);
  return [
    checkVersion(server),
    checkWalLevel(settings),
    checkCapacity(
      'replication-slots',
      'replication slots',
      settings.max_replication_slots,
      await count(client, 'SELECT count(*) FROM pg_replication_slots'),
      'max_replication_slots',
    ),
    checkCapacity(
      'wal-senders',
      'WAL senders',
      settings.max_wal_senders,
      await count(client, 'SELECT count(*) FROM pg_stat_replication'),
      'max_wal_senders',
    ),
    await checkReplicationRole(client),
    await checkSelectPrivilege(client),
    await checkRowSecurity(client),
    await checkReplicaIdentity(client),
    await checkIdentityNotKey(client),
    await checkUnlogged(client),
    await checkLargeObjects(client),
    ...(options.slot === undefined ? [] : [await checkCaptureSlot(client, options.slot)]),
  ];
}

/**
 * Flashback's own slot: a slot keeps WAL until it is read, so one that no
 * capture reads, or that has fallen far behind, fills the server's disk; one
 * whose WAL was removed (wal_status lost) means a gap in the change log.
 */
async function checkCaptureSlot(client: PgClient, o: SlotCheckOptions): Promise<Finding> {
  let info: Awaited<ReturnType<typeof ownSlotInfo>>;
  try {
    info = await ownSlotInfo(client, o.slot);
  } catch (err) {
    if (!(err instanceof ReplicationError)) throw err;
    return {
      check: 'capture-slot',
      severity: 'warning',
      summary: `${err.message}; capture of "${o.target}" cannot create its slot`,
      fix: err.hint ?? 'rename the target',
    };
  }
  if (info === undefined && o.log !== undefined) {
    return {
      check: 'capture-slot',
      severity: 'critical',
      summary: `no replication slot "${o.slot}", but the repository has a change log of "${o.target}" that continues from it: capture cannot resume, and changes after ${lsnText(o.log.end)} (where the log ends) are not in it`,
      fix: `begin a new log: \`flashback capture ${o.target} --new-log\`, then take a backup; the old log stays readable for the moments it covers (docs/CAPTURE.md, "Recovery point and slot safety")`,
    };
  }
  if (info === undefined) {
    return {
      check: 'capture-slot',
      severity: 'ok',
      summary: `no replication slot "${o.slot}": capture of "${o.target}" has not been started`,
    };
  }
  const state = slotState(info);
  const problems = judgeSlot(o.target, state, o.maxRetainedWal, o.log);
  const first = problems[0];
  if (first === undefined) {
    const held =
      state.retainedWalBytes === undefined
        ? ''
        : `, holds ${formatSize(state.retainedWalBytes)} of WAL`;
    return {
      check: 'capture-slot',
      severity: 'ok',
      summary: `replication slot "${o.slot}" is read by a running capture${held}`,
    };
  }
  return {
    check: 'capture-slot',
    severity: problems.some((p) => p.severity === 'critical') ? 'critical' : 'warning',
    summary: first.message,
    ...(problems.length > 1 ? { details: problems.slice(1).map((p) => p.message) } : {}),
    fix: first.fix,
  };
}

interface Settings {
  readonly wal_level: string;
  readonly max_replication_slots: number;
  readonly max_wal_senders: number;
}

async function readSettings(client: PgClient): Promise<Settings> {
  const r = await client.query<{ wl: string; slots: string; senders: string }>(
    `SELECT current_setting('wal_level') AS wl, current_setting('max_replication_slots') AS slots,
            current_setting('max_wal_senders') AS senders`,
  );
  const row = r.rows[0]!;
  return {
    wal_level: row.wl,
    max_replication_slots: Number(row.slots),
    max_wal_senders: Number(row.senders),
  };
}

async function count(client: PgClient, sql: string): Promise<number> {
  return Number((await client.query<{ count: string }>(sql)).rows[0]?.count ?? 0);
}

function checkVersion(server: ServerInfo): Finding {
  if (server.versionNum >= MIN_SERVER_VERSION) {
    return {
      check: 'server-version',
      severity: 'ok',
      summary: `PostgreSQL ${server.version} (14 or newer is supported)`,
    };
  }
  return {
    check: 'server-version',
    severity: 'critical',
    summary: `PostgreSQL ${server.version} is too old: Flashback needs 14 or newer`,
    fix: 'upgrade the server to PostgreSQL 14 or newer',
  };
}

function checkWalLevel(s: Settings): Finding {
  if (s.wal_level === 'logical')
    return { check: 'wal-level', severity: 'ok', summary: 'wal_level is logical' };
  return {
    check: 'wal-level',
    severity: 'critical',
    summary: `wal_level is ${s.wal_level}: consistent backups and change capture need logical`,
    fix: 'ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on managed services: enable logical replication in the parameter group)',
  };
}

/**
 * Flashback needs one replication slot and one WAL sender for continuous
 * capture, and one more of each while a backup creates its snapshot.
 */
function checkCapacity(
  check: string,
  what: string,
  max: number,
  used: number,
  setting: string,
): Finding {
  const free = max - used;
  const summary = `${free} of ${max} ${what} free`;
  if (free >= 2) return { check, severity: 'ok', summary };
  return {
    check,
    severity: free <= 0 ? 'critical' : 'warning',
    summary: `${summary}: Flashback needs 1 for capture and 1 more while a backup starts`,
    fix: `raise ${setting} by at least ${2 - free} (ALTER SYSTEM SET ${setting} = ${max + 2 - free}; then restart), or drop unused slots`,
  };
}

async function checkReplicationRole(client: PgClient): Promise<Finding> {
  const r = await client.query<{ usr: string; ok: string }>(
    `SELECT current_user AS usr, (rolreplication OR rolsuper)::text AS ok FROM pg_roles WHERE rolname = current_user`,
  );
  const row = r.rows[0]!;
  if (row.ok === 'true') {
    return {
      check: 'replication-privilege',
      severity: 'ok',
      summary: `role "${row.usr}" may open replication connections`,
    };
  }
  return {
    check: 'replication-privilege',
    severity: 'critical',
    summary: `role "${row.usr}" lacks REPLICATION: no consistent snapshot or change capture`,
    fix: `ALTER ROLE ${quoteIdent(row.usr)} REPLICATION; (on RDS: GRANT rds_replication TO ${quoteIdent(row.usr)})`,
  };
}

/**
 * The user's relations: not the catalogs, not extension members, and not
 * capture's own schema `_flashback` (its unlogged table, unreadable by other
 * roles), which backups leave out too.
 */
const USER_RELATIONS = `
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ${INTERNAL_SCHEMA_FILTER}
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

async function checkSelectPrivilege(client: PgClient): Promise<Finding> {
  // (SELECT on a table is not enough: without USAGE on its schema the
  // backup's LOCK TABLE is refused all the same.)
  const r = await client.query<{ name: string; kind: string; usage: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind::text AS kind,
            has_schema_privilege(n.oid, 'USAGE') AS usage ${USER_RELATIONS}
       AND c.relkind IN ('r', 'p', 'm', 'S')
       AND NOT (has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE'))
     ORDER BY 1`,
  );
  if (r.rows.length === 0) {
    return {
      check: 'select-privilege',
      severity: 'ok',
      summary: 'the role can read every table and sequence',
    };
  }
  return {
    check: 'select-privilege',
    severity: 'critical',
    summary: `the role cannot read ${r.rows.length} table(s) or sequence(s): a backup would fail`,
    details: r.rows.map(
      (row) =>
        `${row.name}${row.kind === 'S' ? ' (sequence)' : ''}${row.usage === 't' ? '' : ' (no USAGE on its schema)'}`,
    ),
    fix: 'GRANT pg_read_all_data TO <role>; or GRANT USAGE ON SCHEMA <schema> TO <role> and GRANT SELECT ON ALL TABLES IN SCHEMA <schema> TO <role> (and ON ALL SEQUENCES)',
  };
}

/**
 * Tables whose row-level security applies to the role: a backup reads with
 * row_security off, so the server refuses them rather than hide rows, and
 * the backup fails. Owners are exempt unless the table forces it.
 */
async function checkRowSecurity(client: PgClient): Promise<Finding> {
  const r = await client.query<{ name: string; forced: string; usr: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relforcerowsecurity AS forced,
            current_user AS usr ${USER_RELATIONS}
       AND c.relkind IN ('r', 'p') AND c.relrowsecurity
       AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
     ORDER BY 1`,
  );
  if (r.rows.length === 0) {
    return {
      check: 'row-security',
      severity: 'ok',
      summary: 'no row-level security applies to the role',
    };
  }
  return {
    check: 'row-security',
    severity: 'critical',
    summary: `row-level security applies to the role on ${r.rows.length} table(s): a backup would fail on them (Flashback reads every row or none, never the rows a policy lets through)`,
    details: r.rows.map(
      (row) => `${row.name}${row.forced === 't' ? ' (FORCE ROW LEVEL SECURITY)' : ''}`,
    ),
    fix: `ALTER ROLE ${quoteIdent(r.rows[0]!.usr)} BYPASSRLS`,
  };
}

async function checkReplicaIdentity(client: PgClient): Promise<Finding> {
  // Leaf tables only: a partitioned parent holds no rows; its partitions are checked.
  const r = await client.query<{ name: string; ident: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relreplident::text AS ident ${USER_RELATIONS}
       AND c.relkind = 'r' AND c.relpersistence = 'p'
       AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                         AND ((i.indisprimary AND i.indimmediate) OR i.indisreplident))
     ORDER BY 1`,
  );
  if (r.rows.length === 0) {
    return {
      check: 'replica-identity',
      severity: 'ok',
      summary: 'every table has a primary key or replica identity index',
    };
  }
  // With capture's publication (FOR ALL TABLES) in place, a table without
  // any replica identity is not a capture problem but an outage: the
  // server refuses UPDATE and DELETE on it.
  const refused = r.rows.filter((row) => row.ident === 'd' || row.ident === 'n');
  if (refused.length > 0 && (await readPublication(client)) === true) {
    return {
      check: 'replica-identity',
      severity: 'critical',
      summary: `${refused.length} table(s) have no replica identity while the publication "${DEFAULT_PUBLICATION}" publishes every table: the server refuses UPDATE and DELETE on them`,
      details: refused.map((row) => row.name),
      fix: `ALTER TABLE <t> ADD PRIMARY KEY (...); or ALTER TABLE <t> REPLICA IDENTITY FULL; or, if no capture of this database runs any more, DROP PUBLICATION ${DEFAULT_PUBLICATION}`,
    };
  }
  // REPLICA IDENTITY FULL is the fix this check offers last: a table that
  // has it is captured (matched by whole row), and no longer a warning.
  const full = r.rows.filter((row) => row.ident === 'f');
  const open = r.rows.filter((row) => row.ident !== 'f');
  if (open.length === 0) {
    return {
      check: 'replica-identity',
      severity: 'ok',
      summary: `every table has a primary key or replica identity index, or REPLICA IDENTITY FULL (${full.length} table(s), captured and matched by whole row)`,
      details: full.map((row) => row.name),
    };
  }
  return {
    check: 'replica-identity',
    severity: 'warning',
    summary: `${open.length} table(s) have neither a primary key nor a replica identity index: rows cannot be found by key, and their updates and deletes cannot be captured unless REPLICA IDENTITY FULL`,
    details: open.map((row) => row.name),
    fix: 'ALTER TABLE <t> ADD PRIMARY KEY (...); or ALTER TABLE <t> REPLICA IDENTITY USING INDEX <unique index>; or, as a last resort, REPLICA IDENTITY FULL',
  };
}

/**
 * Tables with a primary key whose replica identity is something else: an
 * index on other columns (the log identifies their rows by those, and a
 * restore to a moment, which matches rows by the key, refuses the table:
 * restore.identity-not-key), or NOTHING (the log has no old row at all, and
 * with the publication in place the server refuses their UPDATE and DELETE).
 */
async function checkIdentityNotKey(client: PgClient): Promise<Finding> {
  const r = await client.query<{ name: string; ident: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relreplident::text AS ident ${USER_RELATIONS}
       AND c.relkind = 'r' AND c.relpersistence = 'p'
       AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND NOT i.indisreplident)
       AND c.relreplident IN ('i', 'n')
     ORDER BY 1`,
  );
  if (r.rows.length === 0) {
    return {
      check: 'identity-key',
      severity: 'ok',
      summary:
        'every table with a primary key is identified in the change log by it (or by the whole row)',
    };
  }
  const nothing = r.rows.filter((row) => row.ident === 'n');
  const published = nothing.length > 0 && (await readPublication(client)) === true;
  return {
    check: 'identity-key',
    severity: published ? 'critical' : 'warning',
    summary: `${r.rows.length} table(s) with a primary key have another replica identity (an index on other columns, or NOTHING): the change log does not identify their rows by the key, so a restore to a moment refuses them${published ? `; with the publication "${DEFAULT_PUBLICATION}" in place the server refuses UPDATE and DELETE on those set to NOTHING` : ''}`,
    details: r.rows.map(
      (row) =>
        `${row.name} (${row.ident === 'n' ? 'REPLICA IDENTITY NOTHING' : 'replica identity index'})`,
    ),
    fix: 'ALTER TABLE <t> REPLICA IDENTITY DEFAULT (the primary key); or REPLICA IDENTITY FULL',
  };
}

async function checkUnlogged(client: PgClient): Promise<Finding> {
  const r = await client.query<{ name: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS name ${USER_RELATIONS}
       AND c.relkind IN ('r', 'p') AND c.relpersistence = 'u' ORDER BY 1`,
  );
  if (r.rows.length === 0)
    return { check: 'unlogged-tables', severity: 'ok', summary: 'no unlogged tables' };
  return {
    check: 'unlogged-tables',
    severity: 'warning',
    summary: `${r.rows.length} unlogged table(s): they are not in the WAL, so the change log cannot capture their changes (backups still copy them)`,
    details: r.rows.map((row) => row.name),
    fix: 'ALTER TABLE <t> SET LOGGED; if their changes matter between backups',
  };
}

async function checkLargeObjects(client: PgClient): Promise<Finding> {
  const n = await count(client, 'SELECT count(*) FROM pg_largeobject_metadata');
  if (n === 0) return { check: 'large-objects', severity: 'ok', summary: 'no large objects' };
  return {
    check: 'large-objects',
    severity: 'warning',
    summary: `${n} large object(s): Flashback does not back them up (a backup names them as not reproducible), and logical decoding does not carry them into the change log`,
    fix: 'store such data in bytea columns, or back large objects up with another tool (pg_dump --blobs)',
  };
}

function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
