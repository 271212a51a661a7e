/**
 * A full restore into a database made for it, over several connections:
 * the pre-data (types, tables, functions) on one; then the tables' rows,
 * largest table first, each loaded in a transaction that empties it so that
 * COPY may FREEZE; then the post-data.
 *
 * The post-data's leading index, key and foreign-key statements (the kinds
 * statementTables names the tables of) run beside the loading: each starts
 * once its tables are loaded, never two at once on one table, in their
 * order among those ready (keys before the foreign keys that need them).
 * Waiting for every table instead left a connection idle while the last big
 * one loaded. The rest of the post-data runs afterwards: statements of
 * those kinds in parallel the same way (runScheduled), anything else alone,
 * in order, as a barrier.
 */
import type { ResolvedTarget } from '../config/targets.js';
import { InterruptedError, OperationError } from '../errors.js';
import { connect, type PgClient } from '../pg/connect.js';
import type { DdlStatement } from '../pg/schema/model.js';
import { qualify } from '../pg/schema/quote.js';
import type { TableSnapshot } from '../repo/snapshots.js';
import { runWorkers } from '../util/workers.js';
import { loadTable, type TableSource } from './load.js';

const DROPPED = 'restore interrupted: the new database was dropped';

/** Inputs of a parallel full restore. */
export interface ParallelRestore {
  readonly target: ResolvedTarget;
  /** Where each table's rows come from (a snapshot's chunks, or those merged with the change log). */
  readonly source: TableSource;
  readonly tables: readonly TableSnapshot[];
  readonly preData: readonly DdlStatement[];
  readonly postData: readonly DdlStatement[];
  readonly workers: number;
  readonly signal?: AbortSignal | undefined;
  readonly onTable?: ((table: string, rows: number) => void) | undefined;
  /** After each post-data statement. */
  readonly onStatement?: (() => void) | undefined;
}

/** Runs the restore; returns rows loaded per table (in `tables` order). */
export async function parallelFullRestore(p: ParallelRestore): Promise<number[]> {
  const conns: PgClient[] = [];
  try {
    for (let i = 0; i < Math.max(1, p.workers); i++) {
      const c = await connect(p.target, { applicationName: 'flashback restore' });
      // Restored data is committed once, at the end; per-transaction flushes buy nothing here.
      await c.query("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'");
      conns.push(c);
    }
    const first = conns[0]!;
    await first.query('BEGIN');
    for (const s of p.preData) await exec(first, s);
    await first.query('COMMIT');

    const rows = new Map<TableSnapshot, number>();
    // The leading index, key and foreign-key statements start as soon as
    // their tables are loaded, beside the loading of others: waiting for every
    // table left a connection idle while the last big table loaded. The rest
    // of the post-data (from its first statement of another kind) runs after.
    // Session settings the post-data opens with (SET check_function_bodies)
    // hold on every connection, as for a statement run on any of them.
    let settings = 0;
    while (settings < p.postData.length && /^SET /i.test(p.postData[settings]!.sql)) settings++;
    for (const c of conns) for (const s of p.postData.slice(0, settings)) await exec(c, s);
    for (let i = 0; i < settings; i++) p.onStatement?.();
    let early = settings;
    while (early < p.postData.length && statementTables(p.postData[early]!.sql) !== undefined)
      early++;
    await loadAndIndex({
      conns,
      tables: p.tables,
      statements: p.postData.slice(settings, early),
      signal: p.signal,
      onStatement: p.onStatement,
      async load(c, t, signal) {
        // Emptied in the loading transaction, so COPY may FREEZE: rows are
        // written frozen and all-visible, and the index builds after the
        // load do not dirty (and write) every page again to set hint bits.
        await c.query(`BEGIN; TRUNCATE ONLY ${qualify(t.schema, t.name)}`);
        const n = await loadTable(
          c,
          p.source,
          t,
          signal,
          DROPPED,
          'the new database was dropped',
          true,
        );
        await c.query('COMMIT');
        rows.set(t, n);
        p.onTable?.(`${t.schema}.${t.name}`, n);
      },
    });
    await runScheduled(conns, p.postData.slice(early), p.signal, p.onStatement);
    return p.tables.map((t) => rows.get(t) ?? 0);
  } finally {
    await Promise.all(conns.map((c) => c.end().catch(() => {})));
  }
}

/** What loadAndIndex runs. */
export interface LoadAndIndex {
  readonly conns: readonly PgClient[];
  /** The tables to load; `bytes` orders them, largest first. */
  readonly tables: ReadonlyArray<Pick<TableSnapshot, 'schema' | 'name' | 'bytes'>>;
  /** Statements statementTables understands (each names its tables). */
  readonly statements: readonly DdlStatement[];
  /** Loads one table and commits it on `c`. */
  load(c: PgClient, t: TableSnapshot, signal: AbortSignal): Promise<void>;
  readonly signal?: AbortSignal | undefined;
  /** After each statement. */
  readonly onStatement?: (() => void) | undefined;
}

/**
 * Loads the tables and runs the statements on the connections, each
 * connection taking the next thing it may do. A statement may start once
 * every table it names is loaded (a table the restore does not load, such as
 * a partitioned parent, once all are) and none of them is in use by another
 * statement; of those, the first in order goes first, so a key is built
 * before the foreign keys that need it. Loads go before statements: they
 * are what makes more statements ready. The first failure stops the others
 * (runWorkers) and is thrown.
 */
export async function loadAndIndex(o: LoadAndIndex): Promise<void> {
  const loads = [...o.tables].sort((a, b) => b.bytes - a.bytes) as TableSnapshot[];
  const ours = new Set(o.tables.map((t) => qualify(t.schema, t.name)));
  const done = new Set<string>();
  const busy = new Set<string>();
  const pending = o.statements.map((s) => {
    const tables = statementTables(s.sql);
    if (tables === undefined) throw new Error(`not a statement loadAndIndex schedules: ${s.sql}`);
    return { s, tables };
  });
  const ready = (tables: readonly string[]): boolean =>
    tables.every((t) => !busy.has(t) && (ours.has(t) ? done.has(t) : done.size === ours.size));
  let wake: (() => void) | undefined;
  const woken = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  // Set at a failure before the others wake, so none starts anything new.
  let failed = false;
  const failing = (err: unknown): never => {
    failed = true;
    throw err;
  };
  await runWorkers(
    o.conns.length,
    async (i, signal) => {
      const c = o.conns[i]!;
      const stop = () => woken();
      signal.addEventListener('abort', stop);
      try {
        while (loads.length > 0 || pending.length > 0) {
          if (signal.aborted || failed) throw new InterruptedError(DROPPED);
          const t = loads.shift();
          if (t !== undefined) {
            await o.load(c, t, signal).catch(failing);
            done.add(qualify(t.schema, t.name));
            woken();
            continue;
          }
          const k = pending.findIndex((x) => ready(x.tables));
          if (k < 0) {
            // Everything left waits for a load or a statement on another connection.
            await new Promise<void>((r) => {
              const prev = wake;
              wake = () => {
                prev?.();
                r();
              };
            });
            continue;
          }
          const next = pending.splice(k, 1)[0]!;
          for (const x of next.tables) busy.add(x);
          try {
            await exec(c, next.s).catch(failing);
            o.onStatement?.();
          } finally {
            for (const x of next.tables) busy.delete(x);
            woken();
          }
        }
      } finally {
        signal.removeEventListener('abort', stop);
      }
    },
    o.signal,
  );
}

async function exec(c: PgClient, s: DdlStatement): Promise<void> {
  try {
    await c.query(s.sql);
  } catch (err) {
    throw new OperationError(
      'restore.ddl',
      `creating ${s.kind} ${s.name} failed: ${(err as Error).message}`,
      {
        hint: `the statement was: ${s.sql.slice(0, 300)}`,
        cause: err,
      },
    );
  }
}

const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const QUALIFIED = String.raw`(${IDENT}(?:\.${IDENT})?)`;
const CREATE_INDEX = new RegExp(
  String.raw`^CREATE (?:UNIQUE )?INDEX ${IDENT} ON (?!ONLY )${QUALIFIED} `,
);
const ADD_KEY = new RegExp(
  String.raw`^ALTER TABLE ONLY ${QUALIFIED} ADD CONSTRAINT ${IDENT} (?:PRIMARY KEY|UNIQUE|EXCLUDE) `,
);
const ADD_FK = new RegExp(
  String.raw`^ALTER TABLE (?:ONLY )?${QUALIFIED} ADD CONSTRAINT ${IDENT} FOREIGN KEY .* REFERENCES ${QUALIFIED}`,
  's',
);

/**
 * Tables a statement locks, when it is one the scheduler may run beside
 * others: a plain CREATE INDEX (not ON ONLY a partitioned table), adding a
 * primary key, unique or exclusion constraint, or a foreign key. Undefined
 * for anything else: a barrier.
 */
export function statementTables(sql: string): string[] | undefined {
  const text = sql.trim();
  const fk = ADD_FK.exec(text);
  if (fk !== null) return [fk[1]!, fk[2]!];
  const idx = CREATE_INDEX.exec(text);
  if (idx !== null) return [idx[1]!];
  const key = ADD_KEY.exec(text);
  if (key !== null) return [key[1]!];
  return undefined;
}

/** Runs statements on the connections, in order, in parallel where safe (see the module comment): for the post-data after its first barrier. */
export async function runScheduled(
  conns: readonly PgClient[],
  statements: readonly DdlStatement[],
  signal?: AbortSignal,
  onStatement?: () => void,
): Promise<void> {
  let i = 0;
  while (i < statements.length) {
    // A segment: consecutive statements the scheduler understands.
    let j = i;
    while (j < statements.length && statementTables(statements[j]!.sql) !== undefined) j++;
    if (j === i) {
      await exec(conns[0]!, statements[i]!);
      onStatement?.();
      i++;
      continue;
    }
    // (No table to load: every statement is ready but for its tables' being in use.)
    await loadAndIndex({
      conns,
      tables: [],
      statements: statements.slice(i, j),
      load: () => Promise.reject(new Error('nothing to load')),
      signal,
      onStatement,
    });
    i = j;
  }
}
