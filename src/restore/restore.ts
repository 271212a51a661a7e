import type { ResolvedTarget } from '../config/targets.js';
import {
  FlashbackError,
  GuardRefusedError,
  InterruptedError,
  OperationError,
  UsageError,
} from '../errors.js';
import { compareFingerprint, FingerprintStore } from '../guard/fingerprints.js';
import { type GuardIO, guard, refuseWrongIdentity } from '../guard/guard.js';
import { identityRefusal } from '../guard/identity.js';
import {
  asTheDatabase,
  connect,
  connectParams,
  type PgClient,
  queryOne,
  serverErrorText,
} from '../pg/connect.js';
import { databaseDdl, generateDdl } from '../pg/schema/ddl.js';
import type { ConstraintModel, SchemaModel, TableModel } from '../pg/schema/model.js';
import { qualify, quoteIdent, quoteLiteral } from '../pg/schema/quote.js';
import { INTERNAL_SCHEMA_FILTER } from '../pg/schema/shapes.js';
import { readIdentity } from '../pg/server-info.js';
import { ChunkStore } from '../repo/chunks.js';
import { RepositoryLock } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import { type ColumnsNow, columnsNow } from './columns-now.js';
import { copyChunks, countedSource, loadTable, snapshotSource, type TableSource } from './load.js';
import { parallelFullRestore } from './parallel.js';
import {
  describePlan,
  type OnConflict,
  orderByForeignKeys,
  type RestorePlan,
  selectTables,
  type TablePlan,
} from './plan.js';
import { checkRoles } from './roles.js';
import { type RaisedSequence, raiseSequences } from './sequences.js';
import { columnList } from './sql.js';
import { disableStatements, enableTriggers, firingTriggers, switchTriggers } from './triggers.js';

/** The interruption message of the single-transaction path. */
const ROLLED_BACK = 'restore interrupted: rolled back, nothing was written';

/** A restore request. */
export interface RestoreOptions {
  readonly manifest: SnapshotManifest<SchemaModel>;
  readonly repo: Repository;
  readonly target: ResolvedTarget;
  /** Table patterns (`name`, `schema.name`, `*` wildcards). */
  readonly tables?: readonly string[] | undefined;
  /** SQL predicate over the table's columns; needs `tables`. */
  readonly where?: string | undefined;
  readonly onConflict?: OnConflict | undefined;
  /** Connections for a full restore into a database created by `create` (default 2). */
  readonly workers?: number | undefined;
  /** Restore ownership of objects (default true; `--no-owner` turns it off). */
  readonly owners?: boolean | undefined;
  /** Restore grants and policy roles (default true; `--no-acl` turns it off). */
  readonly grants?: boolean | undefined;
  /** Create the target database first (it must not exist). */
  readonly create?: boolean | undefined;
  /** Compute and return the plan; write nothing. */
  readonly dryRun?: boolean | undefined;
  /** `--confirm` for the guard. */
  readonly confirm?: string | undefined;
  readonly io: GuardIO;
  readonly signal?: AbortSignal | undefined;
  /**
   * Where table rows come from; default the snapshot's chunks. Point-in-time
   * restores pass the snapshot merged with the change log (src/history).
   */
  readonly source?: TableSource | undefined;
  /**
   * Switch off the user triggers of the tables merged into, inside the
   * transaction (src/restore/triggers.ts). A whole restore needs none: its
   * triggers are created after the rows are in.
   */
  readonly disableTriggers?: boolean | undefined;
  /** Called as rows are read and as tables and post-data statements finish (often: throttle). */
  readonly onProgress?: ((p: RestoreProgress) => void) | undefined;
}

/** What restore() tells its progress about, besides rows read. */
interface ProgressEvents {
  /** The number of post-data statements, once known. */
  statements(n: number): void;
  table(): void;
  statement(): void;
}

/** How far a restore is. */
export interface RestoreProgress {
  readonly tablesDone: number;
  readonly tablesTotal: number;
  readonly rows: number;
  /** COPY text sent so far, of about `bytesTotal` (the snapshot's; a moment's rows differ a little). */
  readonly bytes: number;
  readonly bytesTotal: number;
  /** Post-data statements (indexes, keys, foreign keys, grants, …) run, of `statementsTotal`. */
  readonly statementsDone: number;
  readonly statementsTotal: number;
}

/** What was done (or, for a dry run, what would be). */
export interface RestoreResult {
  readonly plan: RestorePlan;
  readonly applied: boolean;
  readonly seconds: number;
  /** A dry run whose merge was tried and failed: why the restore would fail (nothing was written). */
  readonly failure?: string | undefined;
  /** A whole restore to a moment: the sequences raised past their columns' rows (sequences.ts). */
  readonly sequencesRaised?: readonly RaisedSequence[] | undefined;
  /**
   * What the restore could not set and went on without (the rows are in):
   * a database property refused (a setting only a superuser may make), or
   * privileges on built-in and extension objects, which only a superuser
   * can change.
   */
  readonly warnings?: readonly string[] | undefined;
}

/** Plans and (unless dry-run) applies a restore. */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const started = Date.now();
  const { manifest, target } = options;
  const selective = (options.tables?.length ?? 0) > 0 || options.where !== undefined;
  if (options.where !== undefined && (options.tables?.length ?? 0) === 0) {
    throw new UsageError(
      "--where needs --table: a predicate is written against one table's columns",
      {
        hint: 'name the table(s) the predicate applies to with --table',
      },
    );
  }
  let selected = orderByForeignKeys(selectTables(manifest, options.tables ?? []), manifest.schema);
  const lock = await RepositoryLock.acquire(options.repo.storage, {
    exclusive: false,
    reader: true,
    command: `restore ${manifest.id} to ${target.name}`,
  });
  let created = false;
  try {
    if (options.create === true && options.dryRun === true) {
      // Nothing to connect to yet, and creating it would be a write: plan from the manifest.
      await assertNoDatabase(target);
      const plan = initialPlan(
        manifest,
        target,
        selected,
        selective,
        options,
        'load',
        options.where === undefined,
      );
      if (options.source === undefined || options.where !== undefined) {
        return { plan, applied: false, seconds: (Date.now() - started) / 1000 };
      }
      // At a moment the rows are the snapshot's merged with the log: counted
      // by reading them as the restore would (the manifest's are the snapshot's).
      const tables = [];
      for (const [i, t] of plan.tables.entries()) {
        let rows = 0;
        for await (const block of options.source.blocks(selected[i]!)) {
          if (options.signal?.aborted === true) throw new InterruptedError('nothing was written');
          rows += block.rows;
        }
        tables.push({ ...t, insert: rows });
      }
      return { plan: { ...plan, tables }, applied: false, seconds: (Date.now() - started) / 1000 };
    }
    if (options.create === true)
      created = await createDatabase(target, manifest, new FingerprintStore(options.repo));
    const client = await connect(target, { applicationName: 'flashback restore' });
    try {
      // A dry run tries its merges in the database (and rolls them back): the
      // wrong database is refused before that, as for a restore.
      if (options.dryRun === true) {
        await refuseWrongIdentity(target, new FingerprintStore(options.repo), client);
      }
      const existing = await existingTables(client);
      const empty = existing.size === 0;
      const warnings: string[] = [];
      // (Objects are created only into an empty database.)
      const ddlSchema =
        empty && (options.grants ?? true)
          ? await schemaForRole(client, manifest.schema, warnings)
          : manifest.schema;
      if (!selective && !empty) {
        throw new UsageError(
          `database "${target.connection.database}" of target "${target.name}" is not empty (${existing.size} tables, e.g. ${[...existing].slice(0, 3).join(', ')}): a full restore needs an empty database`,
          {
            hint: 'restore into a new database with --create, or restore chosen tables or rows with --table/--where',
          },
        );
      }
      // Tables renamed since the snapshot, in the database it was taken of:
      // followed by their OID, so their rows go into them under the names
      // they have now (as undo does). The snapshot's rows are read under
      // the old name (`source` below); everything else uses the new one.
      const renamed = empty
        ? new Map<TableSnapshot, TableSnapshot>()
        : await renamedSince(
            client,
            manifest,
            selected.filter((t) => !existing.has(`${t.schema}.${t.name}`)),
          );
      selected = selected.map((t) => renamed.get(t) ?? t);
      const missing = selected.filter((t) => !existing.has(`${t.schema}.${t.name}`));
      if (!empty && missing.length > 0) {
        throw new UsageError(
          `table(s) ${missing.map((t) => `${t.schema}.${t.name}`).join(', ')} do not exist in "${target.connection.database}"`,
          {
            hint: 'a selective restore into a non-empty database merges into existing tables; restore into an empty database to create them',
          },
        );
      }
      if (!empty) {
        // Parents before children as the live tables' foreign keys say too:
        // one added since the snapshot put a child's rows first, and the
        // merge failed on it.
        selected = orderByForeignKeys(selected, {
          ...manifest.schema,
          constraints: [...manifest.schema.constraints, ...(await liveForeignKeys(client))],
        });
        await refuseRowSecurity(client, selected);
      }
      if (options.where !== undefined)
        await validateWhere(
          client,
          selected.filter((t) => existing.has(`${t.schema}.${t.name}`)),
          options.where,
          manifest,
        );
      if (empty) {
        // (The database's own owner and grantees only when it is ours to set;
        // the policies only of the tables restored, the only ones created.)
        const restored = new Set(selected.map((t) => `${t.schema}.${t.name}`));
        const schema = created ? manifest.schema : withoutDatabase(manifest.schema);
        await checkRoles(
          client,
          {
            ...schema,
            // (As the DDL takes them: a selective restore's tables alone.)
            policies: selective
              ? schema.policies.filter((p) => restored.has(`${p.schema}.${p.table}`))
              : schema.policies,
          },
          { owners: options.owners ?? true, grants: options.grants ?? true },
        );
      }
      const progress = {
        tablesDone: 0,
        tablesTotal: selected.length,
        rows: 0,
        bytes: 0,
        bytesTotal: selected.reduce((a, t) => a + t.bytes, 0),
        statementsDone: 0,
        statementsTotal: 0,
      };
      const report = options.onProgress;
      const tick = (change: (p: typeof progress) => void): void => {
        if (report === undefined) return;
        change(progress);
        report({ ...progress });
      };
      const events: ProgressEvents = {
        statements: (n) =>
          tick((p) => {
            p.statementsTotal = n;
          }),
        table: () =>
          tick((p) => {
            p.tablesDone++;
          }),
        statement: () =>
          tick((p) => {
            p.statementsDone++;
          }),
      };
      const stored = options.source ?? snapshotSource(new ChunkStore(options.repo.storage));
      const from: TableSource =
        renamed.size === 0 ? stored : { blocks: (t) => stored.blocks(originOf(t)) };
      const chunks =
        report === undefined
          ? from
          : countedSource(from, (rows, bytes) =>
              tick((p) => {
                p.rows += rows;
                p.bytes += bytes;
              }),
            );
      const base = initialPlan(
        manifest,
        target,
        selected,
        selective,
        options,
        empty ? 'load' : 'merge',
        empty && options.where === undefined,
      );
      const fingerprints = new FingerprintStore(options.repo);
      const workers = options.workers ?? 2;
      if (created && !selective && workers > 1) {
        // Fast path: a database made for this restore is loaded in parallel;
        // on any failure the catch below drops it, so nothing partial remains.
        await guard({
          target,
          action: describePlan(base),
          confirm: options.confirm,
          fingerprints,
          io: options.io,
          client,
        });
        const ddl = generateDdl(ddlSchema, {
          includeOwnership: options.owners ?? true,
          includeGrants: options.grants ?? true,
        });
        events.statements(ddl.postData.length);
        const rows = await parallelFullRestore({
          target,
          source: chunks,
          tables: selected,
          preData: ddl.preData,
          postData: ddl.postData,
          workers,
          signal: options.signal,
          onTable: events.table,
          onStatement: events.statement,
        });
        const tables = base.tables.map((t, i) => ({
          ...t,
          insert: rows[i] ?? 0,
          update: 0,
          skip: 0,
        }));
        warnings.push(...(await applyDatabaseProperties(client, target, manifest, options)));
        return {
          plan: { ...base, tables },
          applied: true,
          seconds: (Date.now() - started) / 1000,
          ...(await atMoment(client, options, selected)),
          ...(warnings.length > 0 ? { warnings } : {}),
        };
      }
      const forDdl =
        ddlSchema === manifest.schema
          ? options
          : { ...options, manifest: { ...manifest, schema: ddlSchema } };
      const result = await run(client, chunks, selected, base, empty, forDdl, events, (plan) =>
        guard({
          target,
          action: describePlan(plan),
          confirm: options.confirm,
          fingerprints,
          io: options.io,
          client,
        }),
      );
      if (created && result.applied)
        warnings.push(...(await applyDatabaseProperties(client, target, manifest, options)));
      return {
        ...result,
        seconds: (Date.now() - started) / 1000,
        // Tables this restore created (into an empty database): their sequences too.
        ...(result.applied && empty ? await atMoment(client, options, selected) : {}),
        ...(result.applied && warnings.length > 0 ? { warnings } : {}),
      };
    } finally {
      await client.end().catch(() => {});
    }
  } catch (err) {
    // A database we created for this restore and could not fill is removed: nothing half-written stays.
    if (created) await dropDatabase(target).catch(() => {});
    throw err;
  } finally {
    await lock.release();
  }
}

/**
 * The plan before anything is counted: one entry per table, with counts
 * only where the snapshot alone determines them (every row loaded).
 */
function initialPlan(
  manifest: SnapshotManifest<SchemaModel>,
  target: ResolvedTarget,
  tables: readonly TableSnapshot[],
  selective: boolean,
  options: RestoreOptions,
  action: TablePlan['action'],
  countsKnown: boolean,
): RestorePlan {
  return {
    snapshot: manifest.id,
    target: target.name,
    mode: selective ? 'selective' : 'full',
    where: options.where,
    onConflict: options.onConflict ?? 'skip',
    tables: tables.map((t) => ({
      schema: t.schema,
      name: t.name,
      ...(originOf(t) === t ? {} : { renamedFrom: `${originOf(t).schema}.${originOf(t).name}` }),
      action,
      snapshotRows: t.rows,
      chunks: t.chunks.length,
      ...(countsKnown ? { insert: t.rows, update: 0, skip: 0 } : {}),
    })),
  };
}

/** After a whole restore to a moment (a source other than the snapshot's chunks): the sequences raised. */
async function atMoment(
  client: PgClient,
  options: RestoreOptions,
  tables: readonly TableSnapshot[],
): Promise<Pick<RestoreResult, 'sequencesRaised'>> {
  if (options.source === undefined) return {};
  const restored = new Set(tables.map((t) => `${t.schema}.${t.name}`));
  return { sequencesRaised: await raiseSequences(client, restored) };
}

/**
 * Renamed copies of tables made by renamedSince, to the snapshot's own: the
 * snapshot's rows and schema model are found under the old name.
 */
const ORIGIN = new WeakMap<TableSnapshot, TableSnapshot>();

/** The snapshot's table behind `t` (itself, unless renamedSince made `t`). */
function originOf(t: TableSnapshot): TableSnapshot {
  return ORIGIN.get(t) ?? t;
}

/** The schema model of `t`'s table in the snapshot. */
function modelOf(
  manifest: SnapshotManifest<SchemaModel>,
  t: TableSnapshot,
): TableModel | undefined {
  const o = originOf(t);
  return manifest.schema.tables.find((m) => m.schema === o.schema && m.name === o.name);
}

/** Whether the connected database is the one the snapshot was taken of (same system identifier and name). */
async function isSnapshotDatabase(client: PgClient, manifest: SnapshotManifest): Promise<boolean> {
  // (Values come back as text: src/pg/connect.ts.)
  const same = await client.query<{ same: string }>(
    'SELECT (system_identifier::text = $1 AND current_database() = $2)::text AS same FROM pg_control_system()',
    [manifest.systemIdentifier, manifest.database],
  );
  return same.rows[0]?.same === 'true';
}

/**
 * Of `missing` (snapshot tables absent from the target by name), those
 * renamed since: when the target is the database the snapshot was taken of
 * (same system identifier and name), a table whose OID is still there under
 * another name is the same table. Each maps to a copy under its name now.
 */
async function renamedSince(
  client: PgClient,
  manifest: SnapshotManifest<SchemaModel>,
  missing: readonly TableSnapshot[],
): Promise<Map<TableSnapshot, TableSnapshot>> {
  const out = new Map<TableSnapshot, TableSnapshot>();
  const withOid = missing.filter((t) => t.oid !== undefined);
  if (withOid.length === 0) return out;
  if (!(await isSnapshotDatabase(client, manifest))) return out;
  const r = await client.query<{ oid: string; schema: string; name: string }>(
    `SELECT c.oid::text AS oid, n.nspname AS schema, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = ANY($1::oid[]) AND c.relkind IN ('r', 'p')`,
    [withOid.map((t) => t.oid)],
  );
  const now = new Map(r.rows.map((x) => [Number(x.oid), x]));
  for (const t of withOid) {
    const n = now.get(t.oid!);
    if (n === undefined) continue;
    const copy: TableSnapshot = { ...t, schema: n.schema, name: n.name };
    ORIGIN.set(copy, t);
    out.set(t, copy);
  }
  return out;
}

/**
 * Relations that hold or show rows (tables, views, materialized views,
 * foreign tables) in user schemas, as `schema.name`: not capture's own
 * `_flashback`, which a database that was captured keeps (and snapshots
 * leave out).
 */
async function existingTables(client: PgClient): Promise<Set<string>> {
  const r = await client.query<{ t: string }>(
    `SELECT n.nspname || '.' || c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${INTERNAL_SCHEMA_FILTER}`,
  );
  return new Set(r.rows.map((row) => row.t));
}

/** The live database's foreign keys, as the schema model's constraints (for their order only). */
async function liveForeignKeys(client: PgClient): Promise<ConstraintModel[]> {
  const r = await client.query<{ cs: string; ct: string; ps: string; pt: string; n: string }>(
    `SELECT cn.nspname AS cs, c.relname AS ct, pn.nspname AS ps, p.relname AS pt, k.conname AS n
       FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
       JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
      WHERE k.contype = 'f'`,
  );
  return r.rows.map((x) => ({
    schema: x.cs,
    table: x.ct,
    name: x.n,
    type: 'foreign-key',
    definition: '',
    references: { schema: x.ps, name: x.pt },
    dependsOn: [],
  }));
}

/**
 * Refuses, before anything is read, a live table whose row-level security
 * applies to this role: Flashback's sessions run with row_security off (a
 * merge must see every row, or it would insert rows that exist), so the
 * server would fail every query on it ("query would be affected by
 * row-level security policy"), which surfaced as an internal error or as
 * an invalid --where. It applies unless the role is a superuser or has
 * BYPASSRLS, or owns the table and the table does not FORCE it.
 */
async function refuseRowSecurity(
  client: PgClient,
  tables: readonly TableSnapshot[],
): Promise<void> {
  if (tables.length === 0) return;
  const r = await client.query<{ t: string; forced: string }>(
    `SELECT n.nspname || '.' || c.relname AS t, c.relforcerowsecurity::text AS forced
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) x)
        AND c.relrowsecurity
        AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
        AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))`,
    [tables.map((t) => qualify(t.schema, t.name))],
  );
  if (r.rows.length === 0) return;
  const list = r.rows.map(
    (x) => `${x.t}${x.forced === 'true' ? ' (FORCE ROW LEVEL SECURITY)' : ''}`,
  );
  throw new OperationError(
    'restore.row-security',
    `row-level security applies to this role on ${list.join(', ')}: a restore must see every row of the tables it merges into, and the server would hide some; nothing was restored`,
    {
      hint: 'connect as a role with BYPASSRLS (or a superuser) for the restore; for a table that forces it, its owner can also run ALTER TABLE … NO FORCE ROW LEVEL SECURITY for the duration',
    },
  );
}

/** Runs the predicate against each target table with LIMIT 0, so a bad predicate fails before anything is written, with the server's message. */
async function validateWhere(
  client: PgClient,
  tables: readonly TableSnapshot[],
  where: string,
  manifest: SnapshotManifest<SchemaModel>,
): Promise<void> {
  for (const t of tables) {
    // Against the rows it will filter: the snapshot's columns (a column
    // added since is not in them), in a relation named as the table (so a
    // qualified `orders.tenant_id` works), as stage() runs it. Planned only
    // (LIMIT 0, rolled back): a function it calls is not run.
    const columns = stageColumns(t, modelOf(manifest, t));
    await client.query('BEGIN');
    try {
      let relation = `ONLY ${qualify(t.schema, t.name)}`;
      if (columns !== undefined) {
        // (A type dropped since: the live table's columns, as before.)
        await client.query('SAVEPOINT flashback_where');
        try {
          await client.query(`CREATE TEMP TABLE flashback_where_check (${columns})`);
          relation = `pg_temp.flashback_where_check AS ${quoteIdent(t.name)}`;
        } catch {
          await client.query('ROLLBACK TO SAVEPOINT flashback_where');
        }
      }
      await queryOne(client, `SELECT 1 FROM ${relation} WHERE (${where}) LIMIT 0`);
    } catch (err) {
      throw invalidWhere(t, err);
    } finally {
      await client.query('ROLLBACK').catch(() => {});
    }
  }
}

/** An invalid --where, with the server's message. */
function invalidWhere(t: TableSnapshot, err: unknown): UsageError {
  return new UsageError(
    `invalid --where for table ${t.schema}.${t.name}: ${(err as Error).message}`,
    {
      hint: 'the predicate is SQL over the columns the table had in the snapshot, e.g. --where "tenant_id = 42"',
    },
  );
}

/**
 * The restore in one transaction: create the schema (into an empty
 * database), stage rows that need filtering or merging in temporary tables
 * and count exactly what will happen, then ask the guard with those counts,
 * then write. A dry run stops after counting and rolls back; so does a
 * refusal. Rows that need no filtering are streamed straight into their table.
 */
async function run(
  client: PgClient,
  chunks: TableSource,
  tables: readonly TableSnapshot[],
  base: RestorePlan,
  empty: boolean,
  options: RestoreOptions,
  events: ProgressEvents,
  confirm: (plan: RestorePlan) => Promise<unknown>,
): Promise<{ plan: RestorePlan; applied: boolean; failure?: string | undefined }> {
  const only =
    base.mode === 'selective' ? new Set(tables.map((t) => `${t.schema}.${t.name}`)) : undefined;
  const ddl = empty
    ? generateDdl(options.manifest.schema, {
        ...(only === undefined ? {} : { tables: only }),
        includeOwnership: options.owners ?? true,
        includeGrants: options.grants ?? true,
      })
    : undefined;
  events.statements(ddl?.postData.length ?? 0);
  await client.query('BEGIN');
  try {
    for (const s of ddl?.preData ?? []) await runDdl(client, s);
    const staged: Array<Staged | undefined> = [];
    const planned: TablePlan[] = [];
    // (Asked once, at the first table merged into.)
    let sameDatabase: boolean | undefined;
    for (const [i, t] of tables.entries()) {
      if (empty && options.where === undefined) {
        staged.push(undefined);
        planned.push({ ...base.tables[i]!, insert: t.rows, update: 0, skip: 0 });
        continue;
      }
      const model = modelOf(options.manifest, t);
      sameDatabase ??= empty ? false : await isSnapshotDatabase(client, options.manifest);
      const live = empty ? undefined : await columnsNow(client, t, sameDatabase);
      if (live !== undefined) assertColumnsLive(t, model, live);
      const shape = mergeShape(t, model, live);
      const st = await stage(client, chunks, t, model, i, options.where, options.signal).catch(
        (err: unknown) => {
          // The server refused (a type dropped since, a predicate failing on a
          // row): a plain failure naming the table, not an internal error.
          if (typeof (err as { code?: unknown }).code !== 'string' || err instanceof FlashbackError)
            throw err;
          // (The whole table is staged before --where filters it, in the
          // types as they are now: a domain's check or an enum value
          // changed since refuses a row the predicate would leave out too.)
          const code = (err as { code: string }).code;
          throw new OperationError(
            'restore.stage',
            `reading the snapshot's rows of ${t.schema}.${t.name} into a staging table failed: ${(err as Error).message}; nothing was restored`,
            {
              cause: err,
              ...(code.startsWith('22') || code.startsWith('23')
                ? {
                    hint: `a value in the snapshot does not fit ${t.schema}.${t.name}'s types as they are now (a domain's constraint or an enum changed since): restore the table into another database (--to OTHER --create) and copy the rows you need from there`,
                  }
                : {}),
            },
          );
        },
      );
      const { existing, differing } =
        shape.key.length === 0
          ? { existing: await countIdentical(client, t, st, shape), differing: 0 }
          : await countExisting(client, t, st, shape);
      const update = options.onConflict === 'update' ? differing : 0;
      staged.push({ ...st, existing, shape });
      planned.push({
        ...base.tables[i]!,
        insert: st.rows - existing,
        update,
        skip: existing - update,
      });
    }
    // Switched off for the merges only, after the confirmation: the lock
    // it takes would hold writers back while a prompt waits. The dry run
    // tries the merges as the restore will run them.
    const off =
      options.disableTriggers === true && base.mode === 'selective' && !empty
        ? await firingTriggers(client, tables)
        : [];
    const plan: RestorePlan = {
      ...base,
      tables: planned,
      ...(options.disableTriggers === true
        ? { triggersOff: off.map((t) => ({ table: t.table, name: t.name })) }
        : {}),
    };
    // Rows merged into a live database are written as its applications
    // write them: their triggers and casts in its search_path and time zone.
    if (!empty) await asTheDatabase(client, ['search_path', 'TimeZone']);
    if (options.dryRun === true) {
      // The merges tried, then rolled back: exact counts, and a merge that
      // would fail (a key already there under --on-conflict fail, a foreign
      // key, a unique value) says so now. (Rows loaded whole into an empty
      // database are not: their counts are the snapshot's.)
      const tried = [...planned];
      let failure: string | undefined;
      await switchTriggers(client, disableStatements(off), 'nothing was restored');
      for (const [i, t] of tables.entries()) {
        const st = staged[i];
        if (st === undefined) continue;
        try {
          tried[i] = { ...planned[i]!, ...(await mergeTable(client, t, st, options)) };
        } catch (err) {
          if (!(err instanceof OperationError)) throw err;
          failure = err.message.replace(/; nothing was restored$/, '');
          break;
        }
      }
      // Deferred constraints are checked at COMMIT, which a dry run never
      // reaches: checked now, as the restore's COMMIT would.
      if (failure === undefined) failure = await deferredFailure(client);
      await client.query('ROLLBACK');
      return { plan: { ...plan, tables: tried }, applied: false, failure };
    }
    await confirm(plan);
    await switchTriggers(client, disableStatements(off), 'nothing was restored');
    const done: TablePlan[] = [];
    for (const [i, t] of tables.entries()) {
      const st = staged[i];
      const counts =
        st === undefined
          ? {
              insert: await loadTable(
                client,
                chunks,
                t,
                options.signal,
                ROLLED_BACK,
                'nothing was restored',
              ),
              update: 0,
              skip: 0,
            }
          : await mergeTable(client, t, st, options);
      done.push({ ...planned[i]!, ...counts });
      events.table();
    }
    // (A deferred constraint refusing the rows: a failure naming it, before
    // the triggers' ALTERs, which PostgreSQL refuses with checks pending.)
    const deferred =
      base.mode === 'selective' && !empty ? await deferredFailure(client) : undefined;
    if (deferred !== undefined) {
      throw new OperationError('restore.merge', `${deferred}; nothing was restored`);
    }
    await enableTriggers(client, off, 'nothing was restored');
    for (const s of ddl?.postData ?? []) {
      await runDdl(client, s);
      events.statement();
    }
    if (options.signal?.aborted === true) throw new InterruptedError(ROLLED_BACK);
    try {
      await client.query('COMMIT');
    } catch (err) {
      if (typeof (err as { code?: unknown }).code !== 'string') throw err;
      throw new OperationError(
        'restore.commit',
        `the restore's transaction did not commit: ${serverErrorText(err)}; nothing was restored`,
        { cause: err },
      );
    }
    return { plan: { ...plan, tables: done }, applied: true };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Checks the deferred constraints (a foreign key `DEFERRABLE INITIALLY
 * DEFERRED`) now, in a savepoint, and says what refuses the rows, or
 * undefined when nothing does. Their checks are otherwise left to COMMIT.
 */
async function deferredFailure(client: PgClient): Promise<string | undefined> {
  await client.query('SAVEPOINT flashback_deferred');
  try {
    await client.query('SET CONSTRAINTS ALL IMMEDIATE');
    await client.query('RELEASE SAVEPOINT flashback_deferred');
    return undefined;
  } catch (err) {
    if (typeof (err as { code?: unknown }).code !== 'string') throw err;
    await client.query('ROLLBACK TO SAVEPOINT flashback_deferred');
    return `a deferred constraint refuses the rows: ${serverErrorText(err)}`;
  }
}

async function runDdl(
  client: PgClient,
  s: { kind: string; name: string; sql: string },
): Promise<void> {
  try {
    await client.query(s.sql);
  } catch (err) {
    throw new OperationError(
      'restore.ddl',
      `creating ${s.kind} ${s.name} failed: ${(err as Error).message}; nothing was restored`,
      {
        hint: `the statement was: ${s.sql.slice(0, 300)}`,
        cause: err,
      },
    );
  }
}

/** Snapshot rows of one table staged in a temporary table, and how many of them already exist in the target. */
interface Staged {
  readonly name: string;
  readonly rows: number;
  readonly existing: number;
  readonly shape: MergeShape;
}

/**
 * How staged rows are written into a live table: decided by the table as
 * it is now, not as the snapshot had it (it may have been partitioned,
 * given a key, or had a column's kind changed since).
 */
interface MergeShape {
  /** `ONLY ` for an ordinary table (not its inheritance children); '' for a partitioned one, whose rows are in its partitions. */
  readonly only: string;
  /** Columns that identify a row: the snapshot's key, else the live primary key; empty for none (rows compared whole). */
  readonly key: readonly string[];
  /** Columns written, all in the staging table. */
  readonly insert: readonly string[];
  /** Written with OVERRIDING SYSTEM VALUE (a GENERATED ALWAYS identity among them). */
  readonly overriding: boolean;
  /**
   * Columns an update sets and compares (not an identity the server refuses
   * to update). The key's too: a key equal by its type's `=` can differ in
   * text (citext, a nondeterministic collation: `User1` and `user1`), and
   * the snapshot's is put back.
   */
  readonly update: readonly string[];
}

function mergeShape(
  t: TableSnapshot,
  model: TableModel | undefined,
  live: ColumnsNow | undefined,
): MergeShape {
  // Columns generated in the snapshot and plain now: their values are in
  // the stage (computed there), and the table no longer computes them.
  const wasGenerated = (model?.columns ?? [])
    .filter((c) => c.generated !== undefined && !t.columns.includes(c.name))
    .map((c) => c.name)
    .filter((c) => live?.names.has(c) === true && !live.generated.has(c));
  const insert = [...t.columns.filter((c) => live?.generated.has(c) !== true), ...wasGenerated];
  const livePk = live?.primaryKey ?? [];
  const key =
    t.key.length > 0
      ? t.key
      : livePk.length > 0 && livePk.every((c) => insert.includes(c))
        ? livePk
        : [];
  const always =
    live === undefined
      ? new Set(model?.columns.filter((c) => c.identity === 'always').map((c) => c.name) ?? [])
      : live.identityAlways;
  return {
    only: live?.relkind === 'p' ? '' : 'ONLY ',
    key,
    insert,
    overriding: insert.some((c) => always.has(c)),
    update: insert.filter((c) => !always.has(c)),
  };
}

/**
 * A temp table holding the snapshot rows of `t` that match `where`. Named by
 * the table's position in the plan, not its name: every table is staged
 * before any is merged, and tables of the same name in different schemas
 * (or long names cut to the identifier limit) must not share a stage.
 */
async function stage(
  client: PgClient,
  chunks: TableSource,
  t: TableSnapshot,
  model: TableModel | undefined,
  position: number,
  where: string | undefined,
  signal: AbortSignal | undefined,
): Promise<{ name: string; rows: number }> {
  const name = `flashback_restore_${position}`;
  await client.query(`DROP TABLE IF EXISTS pg_temp.${name}`);
  // The snapshot's columns, not the live table's: a column added since (NOT
  // NULL with a default) is not in the snapshot's rows, and LIKE of the live
  // table copied its NOT NULL without its default. Without a model naming
  // every column (an older manifest), LIKE, which copies names and types only.
  const columns = stageColumns(t, model);
  await client.query(
    `CREATE TEMP TABLE ${name} (${columns ?? `LIKE ${qualify(t.schema, t.name)}`}) ON COMMIT DROP`,
  );
  let rows = await copyChunks(client, chunks, t, `pg_temp.${name}`, signal, ROLLED_BACK);
  if (where !== undefined) {
    // (Named as the table: a predicate may qualify its columns with it.)
    const r = await queryOne(
      client,
      `DELETE FROM pg_temp.${name} AS ${quoteIdent(t.name)} WHERE NOT coalesce((${where}), false)`,
    ).catch((err: unknown) => {
      // A predicate the server refuses (into an empty database it was not
      // checked before): the user's input, not a failure of the restore.
      // One failing on a row (a division by zero) is the same.
      if (typeof (err as { code?: unknown }).code !== 'string') throw err;
      throw invalidWhere(t, err);
    });
    rows -= r.rowCount ?? 0;
  }
  return { name: `pg_temp.${name}`, rows };
}

/**
 * The staging table's column definitions: each stored column of the
 * snapshot with its type and collation, then its generated columns computed
 * from them (the chunks do not hold them, and a --where may name them: they
 * were NULL in the stage, so `total > 500` matched nothing). Undefined when
 * the model does not describe every column.
 */
function stageColumns(t: TableSnapshot, model: TableModel | undefined): string | undefined {
  if (model === undefined) return undefined;
  const byName = new Map(model.columns.map((c) => [c.name, c]));
  const defs: string[] = [];
  for (const name of t.columns) {
    const c = byName.get(name);
    if (c === undefined || c.generated !== undefined) return undefined;
    defs.push(
      `${quoteIdent(name)} ${c.type}${c.collation === undefined ? '' : ` COLLATE ${c.collation}`}`,
    );
  }
  for (const c of model.columns) {
    if (c.generated === undefined || t.columns.includes(c.name)) continue;
    // Stored in the stage whatever the source's kind: it only serves the predicate.
    defs.push(`${quoteIdent(c.name)} ${c.type} GENERATED ALWAYS AS (${c.generated}) STORED`);
  }
  return defs.join(', ');
}

/**
 * Refuses, before anything is staged, a live table that lacks a column the
 * snapshot's rows hold (dropped or renamed since): putting the rows back
 * would lose that column's values, and the INSERT failed as an internal error.
 */
function assertColumnsLive(t: TableSnapshot, model: TableModel | undefined, now: ColumnsNow): void {
  // A partition then, a table of its own now (detached): its rows would
  // land outside the table they belonged to.
  if (model?.partitionOf !== undefined && now.relkind !== undefined && !now.isPartition) {
    const parent = qualify(model.partitionOf.schema, model.partitionOf.name);
    throw new OperationError(
      'restore.partition-detached',
      `${t.schema}.${t.name} was a partition of ${parent} in the snapshot and is not one now (detached since): its rows would go into the detached table, not into ${parent}; nothing was restored`,
      {
        hint: `attach it again for the restore, or restore the rows into another database (--to OTHER --create) and copy them into ${parent}`,
      },
    );
  }
  // By attnum where known: a column dropped and added again under its old
  // name, or another renamed to it, is not the column the rows hold.
  const gone = t.columns.filter((c, j) => {
    const col = now.columns[j]!;
    return !now.names.has(c) || (now.byNumber && !(col.kind === 'present' && col.name === c));
  });
  if (gone.length === 0) return;
  const reused = gone.filter((c) => now.names.has(c));
  // The same table as the snapshot's (its OID): a column's attnum tells a
  // rename from a drop. Adding a column back under the old name after a
  // rename would restore into the new, empty column and leave the renamed
  // one as it is: the hint must not say so.
  const same = now.byNumber;
  const renamed = new Map<string, string>();
  for (const c of gone) {
    const col = now.columns[t.columns.indexOf(c)]!;
    if (col.kind === 'present') renamed.set(c, col.name);
  }
  // (A name another column has taken cannot be added back.)
  const dropped = gone.filter((c) => !renamed.has(c) && !reused.includes(c));
  const s = gone.length > 1 ? 's' : '';
  const ways = [
    'restore the table into another database (--to OTHER --create) and copy what you need from it',
  ];
  if (renamed.size > 0) {
    ways.push(
      `rename ${[...renamed.values()].join(', ')} back to ${[...renamed.keys()].join(', ')} for the restore (restore does not follow renames)`,
    );
  }
  if (dropped.length > 0 && same) {
    // (Added back, it is another column, with another number: refused as
    // reused, below. Restoring elsewhere is the way.)
  } else if (dropped.length > 0) {
    // No column numbers to tell: adding a column of the old name after a
    // rename would take the values, and the renamed one keep its own.
    ways.push(
      `add ${dropped.join(', ')} back first if dropped, or rename back if renamed (a new column of the old name would take the values, the renamed one keep its own)`,
    );
  }
  const why =
    (renamed.size > 0
      ? ` (renamed since: ${[...renamed].map(([c, n]) => `${c} is now ${n}`).join(', ')})`
      : '') +
    (reused.length > 0
      ? ` (${reused.join(', ')} now name${reused.length > 1 ? '' : 's'} ${reused.length > 1 ? 'other columns' : 'another column'})`
      : '');
  throw new OperationError(
    'restore.columns-changed',
    `${t.schema}.${t.name} no longer has column${s} ${gone.join(', ')}, which the snapshot's rows hold${why}: they cannot be put back as they were; nothing was restored`,
    { hint: `${ways.slice(0, -1).join('; ')}${ways.length > 1 ? '; or ' : ''}${ways.at(-1)}` },
  );
}

function keyMatch(key: readonly string[], a: string, b: string): string {
  return key.map((k) => `${a}.${quoteIdent(k)} = ${b}.${quoteIdent(k)}`).join(' AND ');
}

/**
 * Staged rows of a keyless table that the target has already, copy for
 * copy: two identical rows in the snapshot and one in the table is one
 * present and one absent (a row of a keyless table has no identity but its
 * values, and a DELETE ... LIMIT of duplicates removes some of them).
 */
async function countIdentical(
  client: PgClient,
  t: TableSnapshot,
  staged: { name: string },
  shape: MergeShape,
): Promise<number> {
  const r = await client.query<{ n: string }>(
    `${copiesOf(t, staged, shape)} SELECT count(*) AS n FROM numbered s JOIN live l ON l.r = s."fb row" WHERE s."fb copy" <= l.n`,
  );
  return Number(r.rows[0]?.n ?? 0);
}

/**
 * For a keyless table: `numbered`, the staged rows with each row's text
 * and its copy number among identical staged rows; `live`, how many copies
 * of each such row the target holds. Rows compare as the text of the row
 * of their columns' texts (json has no = operator; NULL equal to NULL: a
 * NULL field prints empty, an empty string as ""), which the planner can
 * hash: column by column, IS NOT DISTINCT FROM can only be a nested loop,
 * and putting back 10 rows of a 40,000-row table took 52 s.
 */
function copiesOf(t: TableSnapshot, staged: { name: string }, shape: MergeShape): string {
  const target = `${shape.only}${qualify(t.schema, t.name)}`;
  const row = (x: string) => (t.columns.length === 0 ? `''` : `${textRow(t.columns, x)}::text`);
  return `WITH numbered AS (
      SELECT s.*, ${row('s')} AS "fb row", row_number() OVER (PARTITION BY ${row('s')}) AS "fb copy"
        FROM ${staged.name} s),
    live AS (
      SELECT ${row('d')} AS r, count(*) AS n FROM ${target} d
       WHERE ${row('d')} IN (SELECT "fb row" FROM numbered) GROUP BY 1)`;
}

/**
 * Of the staged rows of a keyed table: how many have their key in the
 * target (`existing`), and how many of those differ from it in a column an
 * update writes (`differing`: what `--on-conflict update` updates; the
 * others are identical and skipped).
 */
async function countExisting(
  client: PgClient,
  t: TableSnapshot,
  staged: { name: string },
  shape: MergeShape,
): Promise<{ existing: number; differing: number }> {
  // (EXISTS, not a join: a key held by several live rows, its constraint
  // dropped since, counts once, as the merge treats it.)
  const live = `${shape.only}${qualify(t.schema, t.name)} d WHERE ${keyMatch(shape.key, 'd', 's')}`;
  const r = await client.query<{ n: string; d: string }>(
    `SELECT count(*) AS n,
            count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ${live} AND ${differs(shape.update, 'd', 's')})) AS d
       FROM ${staged.name} s WHERE EXISTS (SELECT 1 FROM ${live})`,
  );
  return { existing: Number(r.rows[0]?.n ?? 0), differing: Number(r.rows[0]?.d ?? 0) };
}

/**
 * True where row `a` differs from row `b` in any of `columns`, compared as
 * the text of each value (json has no = operator, and numerically equal
 * values like 1.0 and 1.00 are still not the snapshot's), NULL equal to
 * NULL. False for no columns.
 */
function differs(columns: readonly string[], a: string, b: string): string {
  if (columns.length === 0) return 'false';
  return `${textRow(columns, a)} IS DISTINCT FROM ${textRow(columns, b)}`;
}

/**
 * `ROW(x.c1::text, …)`: a row of `columns` of alias `x`, each value as its
 * text, compared byte for byte (COLLATE "C": a column's nondeterministic
 * collation would call `User1` and `user1` the same).
 */
function textRow(columns: readonly string[], x: string): string {
  return `ROW(${columns.map((c) => `${x}.${quoteIdent(c)}::text COLLATE "C"`).join(', ')})`;
}

/** Writes staged rows into their table per --on-conflict; returns what was done. */
async function mergeTable(
  client: PgClient,
  t: TableSnapshot,
  staged: Staged,
  options: RestoreOptions,
): Promise<{ insert: number; update: number; skip: number }> {
  const target = qualify(t.schema, t.name);
  const { shape } = staged;
  const cols = columnList(shape.insert);
  const select = shape.insert.map(quoteIdent).join(', ');
  const onConflict = options.onConflict ?? 'skip';
  const overriding = shape.overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  const from = `${shape.only}${target}`;
  if (shape.key.length === 0 && onConflict === 'fail' && staged.existing > 0) {
    // Without a key a row is "there" when an identical copy is.
    throw new OperationError(
      'restore.conflict',
      `restoring ${t.schema}.${t.name}: ${staged.existing.toLocaleString('en-US')} of its row(s) are already there (the table has no key: rows are matched whole, copy for copy); nothing was restored`,
      {
        hint: 'use --on-conflict skip to put back only the copies that are missing',
      },
    );
  }
  try {
    if (shape.key.length === 0) {
      // No key: a snapshot row is present when the table holds as many
      // identical rows (copy for copy: see countIdentical).
      const r = await client.query(
        `${copiesOf(t, staged, shape)} INSERT INTO ${target}${cols}${overriding} SELECT ${shape.insert.map((c) => `s.${quoteIdent(c)}`).join(', ')} FROM numbered s LEFT JOIN live l ON l.r = s."fb row" WHERE s."fb copy" > coalesce(l.n, 0)`,
      );
      const insert = r.rowCount ?? 0;
      const dropped = Math.max(0, staged.rows - staged.existing - insert);
      return {
        insert,
        update: 0,
        skip: staged.rows - insert - dropped,
        ...(dropped > 0 ? { dropped } : {}),
      };
    }
    let update = 0;
    if (onConflict === 'update') {
      const rest = shape.update;
      if (rest.length > 0) {
        // Only rows that differ: an identical row is not written (its
        // triggers would fire, and a BEFORE UPDATE one setting updated_at
        // would change it), and counts as skipped.
        const r = await client.query(
          `UPDATE ${from} d SET ${rest.map((c) => `${quoteIdent(c)} = s.${quoteIdent(c)}`).join(', ')} FROM ${staged.name} s WHERE ${keyMatch(shape.key, 'd', 's')} AND ${differs(rest, 'd', 's')}`,
        );
        update = r.rowCount ?? 0;
      }
    }
    const absent =
      onConflict === 'fail'
        ? ''
        : ` WHERE NOT EXISTS (SELECT 1 FROM ${from} d WHERE ${keyMatch(shape.key, 'd', 's')})`;
    // With 'update', the rows just updated exist and are excluded here.
    const r = await client.query(
      `INSERT INTO ${target}${cols}${overriding} SELECT ${select} FROM ${staged.name} s${absent}`,
    );
    const insert = r.rowCount ?? 0;
    // The rows whose key was absent, less those written: not skipped, dropped.
    const absentRows = onConflict === 'fail' ? staged.rows : staged.rows - staged.existing;
    const dropped = Math.max(0, absentRows - insert);
    return {
      insert,
      update,
      skip: staged.rows - insert - update - dropped,
      ...(dropped > 0 ? { dropped } : {}),
    };
  } catch (err) {
    const e = err as { code?: string; detail?: string; message: string };
    if (onConflict === 'fail' && e.code === '23505') {
      throw new OperationError(
        'restore.conflict',
        `restoring ${t.schema}.${t.name}: a row with the same key already exists (${e.detail ?? e.message}); nothing was restored`,
        {
          hint: "use --on-conflict skip to keep existing rows, or update to overwrite them with the snapshot's values",
          cause: err,
        },
      );
    }
    throw new OperationError(
      'restore.merge',
      `restoring ${t.schema}.${t.name} failed: ${serverErrorText(err)}; nothing was restored`,
      { cause: err },
    );
  }
}

/** The model without the database's own properties (not set on a database the restore did not create). */
function withoutDatabase(model: SchemaModel): SchemaModel {
  const { database: _database, ...rest } = model;
  return rest;
}

/**
 * The snapshot's database properties (owner, connection limit, comment,
 * privileges, settings) on a database this restore created, once its
 * contents are in. A failure fails the restore (the database is dropped).
 */
async function applyDatabaseProperties(
  client: PgClient,
  target: ResolvedTarget,
  manifest: SnapshotManifest<SchemaModel>,
  options: RestoreOptions,
): Promise<string[]> {
  const refused: string[] = [];
  for (const st of databaseDdl(manifest.schema, target.connection.database, {
    includeOwnership: options.owners ?? true,
    includeGrants: options.grants ?? true,
  })) {
    try {
      await client.query(st.sql);
    } catch (err) {
      // The rows are in: a property the role may not set (a superuser-only
      // setting, an owner it is not a member of) is said, as pg_restore
      // does, not a reason to drop the restored database.
      refused.push(`the database's ${st.kind} was not set (${st.sql}): ${serverErrorText(err)}`);
    }
  }
  return refused;
}

/**
 * The model to create objects from: without the privileges of built-in and
 * extension objects when the restoring role is not a superuser (their
 * GRANTs and REVOKEs would only raise warnings and change nothing), with a
 * warning naming what was left as the target has it.
 */
async function schemaForRole(
  client: PgClient,
  model: SchemaModel,
  warnings: string[],
): Promise<SchemaModel> {
  const changes = model.initialPrivilegesChanged ?? [];
  if (changes.length === 0) return model;
  const r = await client.query<{ s: string }>(
    'SELECT rolsuper::text AS s FROM pg_roles WHERE rolname = current_user',
  );
  if (r.rows[0]?.s === 'true') return model;
  warnings.push(
    `privileges changed on ${changes.length} built-in or extension object(s) were not applied (only a superuser can change them; restore as one to apply them): ${changes
      .slice(0, 5)
      .map((c) => `${c.kind} ${c.name}`)
      .join(', ')}${changes.length > 5 ? ', …' : ''}`,
  );
  const { initialPrivilegesChanged: _left, ...rest } = model;
  return rest;
}

function maintenance(target: ResolvedTarget): ResolvedTarget {
  return { ...target, connection: { ...target.connection, database: 'postgres' } };
}

/** Throws UsageError if the target's database exists (for --create). */
async function assertNoDatabase(target: ResolvedTarget): Promise<void> {
  const admin = await connectParams(target.name, maintenance(target).connection);
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [
      target.connection.database,
    ]);
    if ((exists.rowCount ?? 0) > 0) {
      throw new UsageError(
        `database "${target.connection.database}" already exists on target "${target.name}"; --create makes a new one`,
        {
          hint: 'drop --create to restore into it (a full restore needs it empty), or name a new database',
        },
      );
    }
  } finally {
    await admin.end().catch(() => {});
  }
}

/** Creates the target's database with the snapshot's encoding and locale (it must not exist). Returns true when created. */
async function createDatabase(
  target: ResolvedTarget,
  manifest: SnapshotManifest,
  fingerprints: FingerprintStore,
): Promise<boolean> {
  await assertNoDatabase(target);
  const admin = await connectParams(target.name, maintenance(target).connection);
  try {
    // The guard's identity check comes after the database exists; a server
    // that is not the one recorded for the target gets no database at all.
    const record = target.kind === 'config' ? await fingerprints.get(target.name) : undefined;
    if (record !== undefined) {
      const server = await readIdentity(admin, target.connection);
      const identity = { ...server, database: target.connection.database };
      const changes = compareFingerprint(record, identity);
      const refusal =
        changes.length === 0
          ? undefined
          : identityRefusal(target, { status: 'changed', identity, record, changes, sameAs: [] });
      if (refusal !== undefined) {
        // (`targets accept` connects to the database, which is not there yet.)
        throw new GuardRefusedError(refusal.reason, target.name, refusal.message, {
          hint: `if the target moved deliberately (a new cluster): create database "${target.connection.database}" there, accept the target with \`flashback targets accept ${target.name}\`, then restore into it without --create`,
        });
      }
    }
    const name = target.connection.database;
    await admin
      .query(
        `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0 ENCODING ${quoteLiteral(manifest.encoding)} LC_COLLATE ${quoteLiteral(manifest.collate)} LC_CTYPE ${quoteLiteral(manifest.ctype)}${localeClause(manifest)}`,
      )
      .catch((err: unknown) => {
        throw createFailed(name, manifest, err);
      });
    return true;
  } finally {
    await admin.end().catch(() => {});
  }
}

/**
 * CREATE DATABASE refused: most often the server lacks the source's locale
 * (or its encoding does not go with it), which only the server's
 * administrator can change; or the role may not create databases.
 */
function createFailed(name: string, m: SnapshotManifest, err: unknown): unknown {
  const state = (err as { code?: unknown }).code;
  if (typeof state !== 'string' || !/^[0-9A-Z]{5}$/.test(state)) return err;
  const locale = `encoding ${m.encoding}, LC_COLLATE ${m.collate}, LC_CTYPE ${m.ctype}${m.localeProvider === undefined ? '' : `, ${m.localeProvider} locale ${m.locale ?? ''}`}`;
  const hint =
    state === '42501'
      ? 'the role needs CREATEDB (ALTER ROLE <role> CREATEDB), or create the database first and restore without --create'
      : /locale|encoding|collat/i.test((err as Error).message)
        ? `the target server lacks what the source's database uses (${locale}): install that locale on the server's machine (e.g. locale-gen) and restart PostgreSQL, or create the database yourself with a locale the server has and restore into it without --create`
        : undefined;
  return new OperationError(
    'restore.create-database',
    `creating database "${name}" failed: ${serverErrorText(err)}`,
    { hint, cause: err },
  );
}

/**
 * The source's locale provider, when not libc: without it text would sort
 * by libc's rules, in another order than the source's (and its indexes').
 */
function localeClause(m: SnapshotManifest): string {
  if (m.localeProvider === undefined) return '';
  const locale =
    m.locale === undefined
      ? ''
      : ` ${m.localeProvider === 'icu' ? 'ICU_LOCALE' : 'BUILTIN_LOCALE'} ${quoteLiteral(m.locale)}`;
  const rules = m.icuRules === undefined ? '' : ` ICU_RULES ${quoteLiteral(m.icuRules)}`;
  return ` LOCALE_PROVIDER ${m.localeProvider}${locale}${rules}`;
}

async function dropDatabase(target: ResolvedTarget): Promise<void> {
  const admin = await connectParams(target.name, maintenance(target).connection);
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(target.connection.database)}`);
  } finally {
    await admin.end().catch(() => {});
  }
}
