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
    const queue = [...p.tables].sort((a, b) => b.bytes - a.bytes);
    await runWorkers(
      conns.length,
      async (i, signal) => {
        for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
          if (signal.aborted) throw new InterruptedError(DROPPED);
          const c = conns[i]!;
          // Emptied in the loading transaction, so COPY may FREEZE: rows are
          // written frozen and all-visible, and the index builds after the
          // load do not dirty (and write) every page again to set hint bits.
          await c.query(`BEGIN; TRUNCATE ONLY ${qualify(t.schema, t.name)}`);
          rows.set(
            t,
            await loadTable(c, p.source, t, signal, DROPPED, 'the new database was dropped', true),
          );
          await c.query('COMMIT');
          p.onTable?.(`${t.schema}.${t.name}`, rows.get(t)!);
        }
      },
      p.signal,
    );
    await runScheduled(conns, p.postData, p.signal);
    return p.tables.map((t) => rows.get(t) ?? 0);
  } finally {
    await Promise.all(conns.map((c) => c.end().catch(() => {})));
  }
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

/** Runs statements on the connections, in order, in parallel where safe (see the module comment). */
export async function runScheduled(
  conns: readonly PgClient[],
  statements: readonly DdlStatement[],
  signal?: AbortSignal,
): Promise<void> {
  let i = 0;
  while (i < statements.length) {
    // A segment: consecutive statements the scheduler understands.
    let j = i;
    while (j < statements.length && statementTables(statements[j]!.sql) !== undefined) j++;
    if (j === i) {
      await exec(conns[0]!, statements[i]!);
      i++;
      continue;
    }
    await runSegment(conns, statements.slice(i, j), signal);
    i = j;
  }
}

async function runSegment(
  conns: readonly PgClient[],
  segment: readonly DdlStatement[],
  signal?: AbortSignal,
): Promise<void> {
  const pending = segment.map((s) => ({ s, tables: statementTables(s.sql)! }));
  const busy = new Set<string>();
  let failure: unknown;
  const take = (): (typeof pending)[number] | undefined => {
    const k = pending.findIndex((p) => p.tables.every((t) => !busy.has(t)));
    return k < 0 ? undefined : pending.splice(k, 1)[0];
  };
  let wake: (() => void) | undefined;
  await Promise.all(
    conns.map(async (c) => {
      while (pending.length > 0 && failure === undefined) {
        if (signal?.aborted === true) throw new InterruptedError(DROPPED);
        const next = take();
        if (next === undefined) {
          // Everything left touches a busy table: wait for a statement to finish.
          await new Promise<void>((r) => {
            const prev = wake;
            wake = () => {
              prev?.();
              r();
            };
          });
          continue;
        }
        for (const t of next.tables) busy.add(t);
        try {
          await exec(c, next.s);
        } catch (err) {
          failure ??= err;
        } finally {
          for (const t of next.tables) busy.delete(t);
          const w = wake;
          wake = undefined;
          w?.();
        }
      }
    }),
  );
  if (failure !== undefined) throw failure;
}
