/**
 * `undo`: the inverse of a transaction or of a time window, row by row,
 * computed from the change log and the rows' history (so REPLICA IDENTITY
 * FULL is not needed: a deleted row's values come from the snapshot and the
 * log before it).
 *
 * For each table the window touched, with K its changed keys:
 * - `before`: the rows of K as they were when the window opened (the newest
 *   snapshot before it, with the log up to then merged in, src/history);
 * - `after`: the rows of K as the window left them (its net effect).
 * Both are staged in temporary tables of the live database (streamed with
 * COPY, never held in memory), and the plan is computed there:
 * - a key in `before` only was deleted by the window: **reinsert** it;
 * - a key in `after` only was inserted: **delete** it;
 * - a key in both whose row differs was updated: **revert** exactly the
 *   columns that changed, leaving the others as they are now;
 * - a row already as it was before the window (an undo run twice) needs
 *   nothing and is left out, with a note;
 * - a **conflict** is a row written again after the window: for a reinsert,
 *   the key exists now, or the log after the window wrote it (writtenAgain:
 *   re-created and deleted again leaves no trace in the table); for a
 *   delete or revert, the live row is no longer
 *   the one the window left. `--conflicts skip` (default) leaves them and
 *   lists them with their three versions; `overwrite` applies anyway; `fail`
 *   refuses the whole undo.
 * Reinserts and reverts run parent tables first, deletes children first, so
 * foreign keys hold; the whole plan runs inside a transaction even in a
 * preview (then rolled back), so a plan that cannot be applied says why
 * before anything is written.
 *
 * One shortcut: an apply of a window that only deleted rows of keyed
 * tables, with nothing to review (no --out, --by, --where), puts the
 * staged `before` rows straight back, one INSERT per table, without the
 * plan; a row written again since makes that fail with nothing written,
 * and the plan above is made instead (applyDirect). Not taken when the log
 * after the window wrote a deleted key again (the insert would succeed).
 */
import type { ResolvedTarget } from '../config/targets.js';
import { DamagedError, FlashbackError, OperationError, UsageError } from '../errors.js';
import { FingerprintStore } from '../guard/fingerprints.js';
import { type GuardIO, guard, refuseWrongIdentity } from '../guard/guard.js';
import { type SchemaView, schemaViews } from '../history/history.js';
import type { Key } from '../history/keyed-rows.js';
import { awaitLogReaches } from '../history/log-reach.js';
import {
  buildOverlay,
  closeOverlay,
  LOG_SLACK_MS,
  lineOf,
  logStopped,
  type Overlay,
  type OverlayProgress,
  type PointInTime,
  type PointInTimePlan,
  planPointInTime,
  pointInTimeSource,
  rebuildPlan,
  resolveAgainst,
  spoolSource,
  type TableOverlay,
} from '../history/state.js';
import { isoMicro } from '../history/time.js';
import {
  asTheDatabase,
  connect,
  type PgClient,
  queryOne,
  SESSION_SETTINGS,
  serverErrorText,
} from '../pg/connect.js';
import { endOfFields } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import { qualify, quoteIdent, quoteLiteral } from '../pg/schema/quote.js';
import { lsnText, lsnValue } from '../repo/changelog.js';
import { ChunkStore } from '../repo/chunks.js';
import { whileShared } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import type { SnapshotManifest, TableSnapshot } from '../repo/snapshots.js';
import { columnsNow } from '../restore/columns-now.js';
import { keysByChunk } from '../restore/key-chunks.js';
import { copyChunks, linesSource, type RowBlock, type TableSource } from '../restore/load.js';
import { type ChunkPicker, createPicker } from '../restore/pick.js';
import { orderByForeignKeys, selectTables } from '../restore/plan.js';
import { columnList } from '../restore/sql.js';
import {
  disableStatements,
  enableStatements,
  enableTriggers,
  firingTriggers,
  type SuspendedTrigger,
  switchTriggers,
  triggerList,
} from '../restore/triggers.js';
import { checkOutFile, writeWhole } from '../util/out-file.js';
import { inFlight } from '../util/workers.js';

/** What to undo. */
export type UndoSelection =
  | { readonly kind: 'tx'; readonly xid: number }
  /**
   * Every transaction committed after `since` and at or before `until` (ISO,
   * UTC, microseconds); without `until`, up to the end of the stored log.
   */
  | { readonly kind: 'window'; readonly since: string; readonly until?: string | undefined };

export type ConflictPolicy = 'skip' | 'overwrite' | 'fail';

/** How to undo. */
export interface UndoOptions {
  readonly repo: Repository;
  /** The live database the changes were captured from. */
  readonly target: ResolvedTarget;
  readonly selection: UndoSelection;
  /** Only these tables (names or patterns, as restore --table). */
  readonly tables?: readonly string[] | undefined;
  /** Only rows matching this predicate (over the row version being put back; for deletes, the inserted row). */
  readonly where?: string | undefined;
  readonly conflicts?: ConflictPolicy | undefined;
  /** preview: plan and validate (rolled back); apply: through the guard; estimate: per tenant. */
  readonly mode: 'preview' | 'apply' | 'estimate';
  /** Write the exact SQL (with the staged rows) to this file. */
  readonly out?: string | undefined;
  /** Switch off the user triggers of the tables written, inside each apply transaction (src/restore/triggers.ts). */
  readonly disableTriggers?: boolean | undefined;
  /** Tenant by tenant: the column, and the order (values in text form; the rest follow, ascending). */
  readonly by?: string | undefined;
  readonly order?: readonly string[] | undefined;
  readonly confirm?: string | undefined;
  readonly io: GuardIO;
  readonly onTenant?: ((p: TenantProgress) => void) | undefined;
  /** As each phase starts, and as the log and the rows are read. */
  readonly onProgress?: ((p: UndoProgress) => void) | undefined;
}

/**
 * How far an undo is. `log`: the change log read up to and through the
 * window (the counts start again for the window); `rows`: rows of a table
 * read from the snapshot into staging; `plan`: a table's plan made (the
 * server looks each row up in the live table); `trial`: the plan run and
 * rolled back (a preview's validation); `confirm`: waiting for the guard (a
 * progress line must not be drawn over its prompt); `apply`: the apply, of
 * this many row changes.
 */
export type UndoProgress =
  | {
      readonly phase: 'log';
      readonly transactions: number;
      readonly changes: number;
      readonly commitTime: string;
    }
  | { readonly phase: 'rows'; readonly table: string; readonly rows: number }
  | { readonly phase: 'plan'; readonly table: string }
  | { readonly phase: 'trial' }
  | { readonly phase: 'confirm' }
  | { readonly phase: 'apply'; readonly rows: number };

/**
 * One table's plan: the rows (to be) put back, reverted and deleted, and the
 * conflicts. Under `--conflicts skip` the conflicts are not among the three
 * (they are left alone); under `overwrite` they are.
 */
export interface UndoTable {
  readonly table: string;
  readonly reinsert: number;
  readonly revert: number;
  readonly delete: number;
  readonly conflicts: number;
  /**
   * Applied reports only: of `conflicts`, the rows found written again only
   * as the apply reached them (after the plan: while the confirmation
   * waited, or an earlier tenant was applied). Left alone under skip; the
   * three counts above are then what the apply did, not what was planned.
   */
  readonly lateConflicts?: number;
}

/** A row written again after the window, with its three versions (column → text). */
export interface Conflict {
  readonly table: string;
  readonly op: 'reinsert' | 'revert' | 'delete';
  readonly before: Record<string, string | null> | null;
  readonly after: Record<string, string | null> | null;
  readonly now: Record<string, string | null> | null;
  /** Why it is a conflict, where its versions do not show it (a cascade, half of a key change). */
  readonly why?: string;
}

/** Progress and result of one tenant. */
export interface TenantProgress {
  readonly value: string | null;
  readonly rows: number;
  readonly index: number;
  readonly total: number;
  readonly seconds?: number | undefined;
  readonly estimatedSeconds?: number | undefined;
  readonly xid?: number | undefined;
}

/** The outcome. */
export interface UndoReport {
  readonly target: string;
  readonly selection: string;
  readonly snapshot: string;
  readonly window: { readonly transactions: number; readonly changes: number };
  readonly tables: readonly UndoTable[];
  readonly conflicts: readonly Conflict[];
  readonly policy: ConflictPolicy;
  /**
   * preview: whether the plan applies (it was run and rolled back), or why
   * not; `tried: false` when it was not run (--estimate).
   */
  readonly validation: {
    readonly ok: boolean;
    readonly error?: string | undefined;
    readonly tried?: boolean | undefined;
  };
  readonly applied: boolean;
  /** Transactions of the apply: each can itself be undone with `undo --tx`. */
  readonly xids: readonly number[];
  readonly tenants: readonly TenantProgress[];
  readonly out?: string | undefined;
  /** With --disable-triggers: the user triggers switched off while writing (or to be). */
  readonly triggersOff?: ReadonlyArray<{ readonly table: string; readonly name: string }>;
  readonly seconds: number;
  /** What the undo leaves alone, and why (tables created in the window). */
  readonly notes: readonly string[];
}

/** Conflicts listed per table (all are counted). */
const CONFLICT_SAMPLES = 20;
/** Rows per second assumed for --estimate when no measure exists yet (set-based apply of staged rows). */
const ESTIMATE_ROWS_PER_SECOND = 20_000;

/**
 * Computes, and unless previewing applies, the undo. Under a shared lock: a
 * prune cannot remove the log or the snapshot it reads.
 */
export async function undo(o: UndoOptions): Promise<UndoReport> {
  return whileShared(o.repo.storage, `undo ${o.target.name}`, () => undoLocked(o));
}

async function undoLocked(o: UndoOptions): Promise<UndoReport> {
  const started = Date.now();
  const policy = o.conflicts ?? 'skip';
  const progress = (p: UndoProgress) => o.onProgress?.(p);
  // A path that cannot be written is refused now, not after reading the log.
  if (o.out !== undefined) await checkOutFile(o.out, '--out');
  // Connected while the log is read: the handshake (SCRAM) is not free.
  const connecting = inFlight(connect(o.target, { applicationName: 'flashback undo' }));
  let read: Awaited<ReturnType<typeof readWindow>>;
  try {
    read = await readWindow(o);
  } catch (err) {
    void connecting.then((c) => c.end()).catch(() => {});
    throw err;
  }
  const renamed = [...read.renames].map(
    ([t, now]) =>
      `${name(t)} was renamed to ${name(now)} since the window began: its rows are put back into ${name(now)}`,
  );
  const { pre, preOverlay, window, description } = underNamesNow(read);
  const manifest = pre.manifest;
  const chunks = new ChunkStore(o.repo.storage);
  const picker = createPicker(chunks);
  let client: PgClient;
  try {
    client = await connecting;
  } catch (err) {
    closeOverlay(preOverlay);
    closeOverlay(window);
    throw err;
  }
  try {
    // Staging creates tables in the database (temporary ones), for every
    // mode: not in another database than the one recorded for the target.
    await refuseWrongIdentity(o.target, new FingerprintStore(o.repo), client);
    const created = window.createdInWindow ?? new Map<string, number>();
    const chosen =
      o.tables === undefined || o.tables.length === 0
        ? undefined
        : new Set(chooseTables(manifest, o.tables, [...created.keys()], read).map(name));
    const notes = [
      ...renamed,
      ...[...created].map(
        ([t, n]) =>
          `${t} was created in the window: its ${fmt(n)} change(s) are left alone (there was no such table before the window)`,
      ),
      ...(read.again.unread === undefined
        ? []
        : [
            `rows the window deleted were not looked for in the log after it (${read.again.unread}): a row deleted in the window, written again since and deleted again, would be put back`,
          ]),
    ];
    const touched = manifest.tables.filter(
      (t) => window.tables.has(name(t)) && (chosen === undefined || chosen.has(name(t))),
    );
    const ordered = orderByForeignKeys(touched, manifest.schema);
    await refuseMissing(client, ordered, o.target.name);
    // Columns dropped or renamed since the window began: rows are staged in
    // the start's columns and put back in the table's columns now.
    const layouts = await liveLayouts(client, ordered, o.target.name);
    for (const l of layouts.values()) notes.push(...l.notes);
    const layoutOf = (t: TableSnapshot) => layouts.get(name(t))!;
    // Switched off inside each transaction that writes, after the guard:
    // the lock it takes holds writers back (src/restore/triggers.ts).
    const off =
      o.disableTriggers === true
        ? await firingTriggers(
            client,
            ordered.map((t) => layoutOf(t).live),
          )
        : [];
    const triggersOff =
      o.disableTriggers === true
        ? { triggersOff: off.map((t) => ({ table: t.table, name: t.name })) }
        : {};
    // Stage in a session of our own; temporary tables live until it ends.
    // One transaction for all of the staging: its statements (temporary
    // tables created, filled, analyzed) then wait for one commit, not one each.
    await client.query('BEGIN');
    const befores = new Map<string, Before>();
    for (const [i, t] of ordered.entries()) {
      if (t.key.length === 0) continue;
      befores.set(
        name(t),
        await stageBefore(
          client,
          chunks,
          t,
          i,
          preOverlay,
          window.tables.get(name(t))!,
          manifest.schema,
          picker,
          progress,
          layoutOf(t),
        ),
      );
    }
    // Whether the guard has confirmed already (the direct apply, given up).
    let confirmed = false;
    if (
      o.mode === 'apply' &&
      o.out === undefined &&
      o.by === undefined &&
      o.where === undefined &&
      ordered.length > 0 &&
      // (A row deleted again since would go back unseen: the plan flags it.)
      ![...read.again.keys.keys()].some((n) => ordered.some((t) => name(t) === n)) &&
      ordered.every((t) => {
        const w = window.tables.get(name(t))!;
        return t.key.length > 0 && !w.truncated && w.byKey.onlyDeletions;
      })
    ) {
      // The window only deleted rows, and nothing asks for a plan to review:
      // the rows go back straight from staging, one INSERT per table. The
      // plan's conflict check would look every key up in the live table,
      // and the insert does once more (for 100,000 rows, 0.3 s of an undo
      // of 0.9 s). A key written again since makes the insert fail (unique
      // violation): then it is rolled back and the plan is made, which
      // finds and handles such conflicts, with the confirmation given.
      await client.query('COMMIT');
      const direct = await applyDirect(
        o,
        client,
        ordered.map((t) => layoutOf(t).live),
        befores,
        manifest.schema,
        description,
        { progress, policy, off },
      );
      if (direct !== undefined) {
        return {
          target: o.target.name,
          selection: description,
          snapshot: manifest.id,
          window: { transactions: window.transactions, changes: window.changes },
          tables: direct.tables.map((t) => ({ ...t, lateConflicts: 0 })),
          conflicts: [],
          policy,
          validation: { ok: true },
          applied: true,
          xids: [direct.tenant.xid!],
          tenants: [direct.tenant],
          ...triggersOff,
          seconds: (Date.now() - started) / 1000,
          notes,
        };
      }
      confirmed = true;
      await client.query('BEGIN');
    }
    // From here on every statement names the tables' columns as they are now.
    const staged: Array<{
      t: TableSnapshot;
      u: string;
      /** Marks the rows written again since the plan as conflicts, at the apply (tables without a key); returns how many. */
      recheck?: (client: PgClient) => Promise<number>;
    }> = [];
    for (const [i, t] of ordered.entries()) {
      const win = window.tables.get(name(t))!;
      const layout = layoutOf(t);
      if (t.key.length === 0) {
        const { u, recheck } = await stageKeyless(
          client,
          chunks,
          t,
          i,
          preOverlay,
          win,
          o.where,
          progress,
          layout,
        );
        staged.push({ t: layout.live, u, recheck });
        continue;
      }
      const planned = await planTable(
        client,
        i,
        befores.get(name(t))!,
        win,
        o.where,
        progress,
        layout,
      );
      staged.push({ t: layout.live, u: planned.u });
      const again = read.again.keys.get(name(t));
      if (again !== undefined) await flagWrittenAgain(client, layout.live, planned.u, i, again);
      if (planned.already > 0) {
        notes.push(
          `${name(layout.live)}: ${fmt(planned.already)} row(s) are already as they were before the changes (put back or removed since): nothing to do for them`,
        );
      }
    }
    // A delete that would cascade to (or set null in) rows written since is a conflict too.
    const cascades = new Map<string, Cascade[]>();
    for (const st of staged)
      cascades.set(name(st.t), await cascadingReferences(client, st.t, staged, policy));
    const markCascades = async (): Promise<number> => {
      let marked = 0;
      for (const st of staged) {
        for (const ref of cascades.get(name(st.t))!) {
          const r = await client.query(
            `UPDATE ${st.u} u SET "fb conflict" = true, "fb why" = coalesce(u."fb why", $1) WHERE u."fb op" = 'delete' AND NOT u."fb conflict" AND ${ref.remains('u')}`,
            [ref.why],
          );
          marked += r.rowCount ?? 0;
        }
      }
      return marked;
    };
    await markCascades();
    // Last: a row whose key the window changed is undone whole or not at all.
    for (const [i, st] of staged.entries()) {
      const moved = window.tables.get(name(st.t))!.moved;
      if (st.t.key.length > 0 && moved.size > 0) await linkMoves(client, st.t, st.u, i, moved);
    }
    // A row put back that refers to a parent left alone as a conflict stays
    // out too (and so on down), as do key changes they are half of.
    // Each conflict can make others (a child revert left alone keeps its
    // parent's delete from being done without cascading): to a fixed point.
    if (policy === 'skip') {
      const links = await stagedForeignKeys(client, staged);
      for (;;) {
        let marked = (await holdChildren(client, links)) + (await markCascades());
        for (const [i, st] of staged.entries()) {
          const moved = window.tables.get(name(st.t))!.moved;
          if (st.t.key.length > 0 && moved.size > 0)
            marked += await spreadConflicts(client, st.t, st.u, i);
        }
        if (marked === 0) break;
      }
    }
    const tables: UndoTable[] = [];
    const conflicts: Conflict[] = [];
    for (const { t, u } of staged) {
      // Values come back as text (src/pg/connect.ts): compare the flag as text.
      const q = await client.query<{ op: string; conflict: string; n: string }>(
        `SELECT "fb op" AS op, "fb conflict"::text AS conflict, count(*)::text AS n FROM ${u} GROUP BY 1, 2`,
      );
      const r = { rows: q.rows.map((x) => ({ ...x, conflict: x.conflict === 'true' })) };
      const count = (op: string, conflict?: boolean) =>
        r.rows
          .filter((x) => x.op === op && (conflict === undefined || x.conflict === conflict))
          .reduce((a, x) => a + Number(x.n), 0);
      // What is (to be) done: under skip, conflicts are left alone and counted apart.
      const doing = (op: string) => count(op, false) + (policy === 'skip' ? 0 : count(op, true));
      tables.push({
        table: name(t),
        reinsert: doing('reinsert'),
        revert: doing('revert'),
        delete: doing('delete'),
        conflicts: r.rows.filter((x) => x.conflict).reduce((a, x) => a + Number(x.n), 0),
      });
      conflicts.push(...(await conflictSamples(client, t, u)));
    }
    await client.query('COMMIT');
    const anyConflict = tables.some((t) => t.conflicts > 0);
    if (policy === 'fail' && anyConflict) {
      throw new OperationError(
        'undo.conflict',
        `${tables.reduce((a, t) => a + t.conflicts, 0)} row(s) were written again after the changes being undone (${conflicts
          .slice(0, 3)
          .map((c) => `${c.table} ${c.op}`)
          .join(', ')}…): nothing was written`,
        {
          hint: 'preview with `--conflicts skip` to see them with their versions; `overwrite` applies anyway',
        },
      );
    }
    const statements = applyStatements(staged, manifest.schema, policy, cascades);
    // Other statement orders are tried only where no delete can reach rows
    // through a key's ON DELETE action: deleting first there could silently
    // cascade to rows the usual order would have put back or reverted.
    const reorderable = [...cascades.values()].every((c) => c.length === 0);
    const base = {
      target: o.target.name,
      selection: description,
      snapshot: manifest.id,
      window: { transactions: window.transactions, changes: window.changes },
      tables,
      conflicts,
      policy,
      notes,
      ...triggersOff,
    };
    // `--out` writes the statements in the order that applied: known after the
    // preview's trial or the apply itself (an estimate tries it, only then).
    let out: string | undefined;
    const script = async (order: readonly Statement[]): Promise<void> => {
      if (o.out === undefined) return;
      await writeScript(client, o.out, staged, order, base, off);
      out = o.out;
    };
    const movedOf = (t: TableSnapshot) => window.tables.get(name(t))?.moved ?? new Map();
    if (o.by !== undefined) await tenantGroups(client, staged, o.by, movedOf);
    const tenants =
      o.by === undefined
        ? undefined
        : await tenantValues(client, staged, TENANT_GROUP, o.order ?? [], policy);
    // Runs the plan and rolls it back: the order that applies, or why none does.
    const trial = async (): Promise<{ order: readonly Statement[]; error?: string }> => {
      // (Rolled back, but run in the database: not in the wrong one.)
      await refuseWrongIdentity(o.target, new FingerprintStore(o.repo), client);
      progress({ phase: 'trial' });
      await client.query('BEGIN');
      // Triggers find their tables through the database's search_path (not
      // Flashback's). The time zone stays UTC: the statements compare live
      // rows with the plan's as text, made in it.
      await asTheDatabase(client, ['search_path']);
      try {
        await switchTriggers(client, disableStatements(off), 'nothing was written');
        if (tenants !== undefined) {
          // Tenant by tenant, as the apply will commit them: a plan that
          // applies whole can fail in one tenant's transaction.
          await client.query('SAVEPOINT flashback_tenants');
          for (const g of tenants) {
            const tenant = { column: TENANT_GROUP, value: g.value };
            const where = `for ${o.by} = ${g.value} (the apply commits the tenants before it)`;
            try {
              if (policy === 'skip') {
                for (const [i, st] of staged.entries()) {
                  if (st.t.key.length > 0 && movedOf(st.t).size > 0)
                    await leaveSplitMoves(client, st.t, st.u, i, tenant);
                }
              }
              await runPlan(client, statements, reorderable, tenant);
            } catch (err) {
              if (err instanceof FlashbackError) throw err;
              return { order: statements, error: `${where}: ${serverErrorText(err)}` };
            }
            const split = await splitMoves(client, staged, movedOf, g.value);
            if (split !== undefined) return { order: statements, error: `${where}: ${split}` };
          }
          // The order of the whole plan matters only to the --out script
          // (one transaction): run it again only for that.
          if (o.out === undefined) return { order: statements };
          await client.query('ROLLBACK TO SAVEPOINT flashback_tenants');
        }
        return { order: (await runPlan(client, statements, reorderable)).order };
      } catch (err) {
        if (err instanceof FlashbackError) throw err;
        return { order: statements, error: serverErrorText(err) };
      } finally {
        await client.query('ROLLBACK');
      }
    };
    if (o.mode === 'estimate') {
      if (o.out !== undefined) await script((await trial()).order);
      return {
        ...base,
        validation: { ok: true, tried: false },
        applied: false,
        xids: [],
        tenants: (
          tenants ?? [
            { value: null, rows: tables.reduce((a, t) => a + t.reinsert + t.revert + t.delete, 0) },
          ]
        ).map((x, i, all) => ({
          value: x.value,
          rows: x.rows,
          index: i + 1,
          total: all.length,
          estimatedSeconds: 0.05 + x.rows / ESTIMATE_ROWS_PER_SECOND,
        })),
        ...(out === undefined ? {} : { out }),
        seconds: (Date.now() - started) / 1000,
      };
    }
    if (o.mode === 'preview') {
      // Run it and roll back: a plan that cannot be applied says why now.
      const tried = await trial();
      const validation: UndoReport['validation'] =
        tried.error === undefined ? { ok: true } : { ok: false, error: tried.error };
      await script(tried.order);
      return {
        ...base,
        validation,
        applied: false,
        xids: [],
        tenants: [],
        ...(out === undefined ? {} : { out }),
        seconds: (Date.now() - started) / 1000,
      };
    }
    const total = tables.reduce((a, t) => a + t.reinsert + t.revert + t.delete, 0);
    if (total === 0) {
      // Nothing to write (every row already as before, or every one a
      // conflict left alone): no confirmation, no empty transaction.
      return {
        ...base,
        validation: { ok: true },
        applied: true,
        xids: [],
        tenants: [],
        seconds: (Date.now() - started) / 1000,
      };
    }
    if (!confirmed) {
      progress({ phase: 'confirm' });
      await confirmUndo(o, client, description, tables, policy, tenants?.length, off);
    }
    const xids: number[] = [];
    const done: TenantProgress[] = [];
    let applied: readonly Statement[] = statements;
    // Rows each statement wrote, over all tenants: under skip, a row written
    // again after the plan is left alone as the apply reaches it, so the
    // report says what was done, not what was planned.
    const wrote = new Map<Statement, number>();
    const groups = tenants ?? [{ value: null, rows: total }];
    for (const [i, g] of groups.entries()) {
      progress({ phase: 'apply', rows: g.rows });
      const t0 = Date.now();
      let groupRows = 0;
      await client.query('BEGIN');
      await asTheDatabase(client, ['search_path']); // (as in the trial)
      try {
        const tenant = tenants === undefined ? undefined : { column: TENANT_GROUP, value: g.value };
        const rolledBack = `this transaction was rolled back${tenants === undefined ? '' : ` (${o.by} = ${g.value}; tenants done before it stay undone)`}`;
        await switchTriggers(client, disableStatements(off), rolledBack);
        // Under skip, each statement re-checks its rows against the live
        // table: a key change with one half written again since the plan
        // would be done by halves. Such pairs are left whole, first.
        if (policy === 'skip') {
          for (const [i, st] of staged.entries()) {
            if (st.t.key.length === 0 || window.tables.get(name(st.t))!.moved.size === 0) continue;
            await leaveSplitMoves(client, st.t, st.u, i, tenant);
          }
        }
        // Rows without a key are told apart by count: the statements cannot
        // re-check them one by one, so they are counted again here, before
        // the first tenant (the live table then is as planned but for what
        // was written meanwhile; later, the groups applied before count too).
        if (policy !== 'overwrite' && i === 0) {
          for (const st of staged) {
            if (st.recheck === undefined) continue;
            const late = await st.recheck(client);
            if (policy === 'fail' && late > 0) {
              throw new OperationError(
                'undo.conflict',
                `${fmt(late)} row(s) of ${name(st.t)} were written again between the plan and the apply: this transaction was rolled back`,
                {
                  hint: 'run the undo again: the new plan shows them as conflicts',
                },
              );
            }
          }
        }
        const ran = await runPlan(client, statements, reorderable, tenant);
        if (tenants !== undefined) {
          const split = await splitMoves(client, staged, movedOf, g.value);
          if (split !== undefined) {
            throw new OperationError(
              'undo.split',
              `undo failed for ${o.by} = ${g.value} (tenants done before it stay undone): ${split}; this transaction was rolled back`,
              {
                hint: 'undo without --by (one transaction), or the tables involved on their own (--table)',
              },
            );
          }
        }
        applied = ran.order;
        for (const [s, n] of ran.rows) {
          wrote.set(s, (wrote.get(s) ?? 0) + n);
          groupRows += n;
        }
        if (policy === 'fail' && groupRows !== g.rows) {
          throw new OperationError(
            'undo.conflict',
            `${fmt(g.rows - groupRows)} row(s) were written again between the plan and the apply${tenants === undefined ? '' : ` of ${o.by} = ${g.value} (tenants done before it stay undone)`}: this transaction was rolled back`,
            {
              hint: 'run the undo again: the new plan shows them as conflicts with their versions',
            },
          );
        }
        await enableTriggers(client, off, rolledBack);
        if (groupRows === 0) {
          // Every row of the group written again since the plan: nothing
          // was changed, and no transaction is reported.
          await client.query('ROLLBACK');
        } else {
          xids.push(await currentXid(client));
          await client.query('COMMIT');
        }
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        if (err instanceof FlashbackError) throw err;
        throw new OperationError(
          'undo.apply',
          `undo failed${tenants === undefined ? '' : ` for ${o.by} = ${g.value} (tenants done before it stay undone)`}: ${serverErrorText(err)}; this transaction was rolled back`,
          { cause: err },
        );
      }
      const p: TenantProgress = {
        value: g.value,
        rows: groupRows,
        index: i + 1,
        total: groups.length,
        seconds: (Date.now() - t0) / 1000,
        ...(groupRows === 0 ? {} : { xid: xids.at(-1) }),
      };
      done.push(p);
      o.onTenant?.(p);
    }
    try {
      await script(applied);
    } catch (err) {
      // Committed already: the message must not read as a failed undo.
      throw new OperationError(
        'undo.out',
        `the undo was applied (transaction${xids.length === 1 ? '' : 's'} ${xids.join(', ')}), but its SQL was not written: ${(err as Error).message}`,
        { hint: 'nothing needs to be run again; the database is undone', cause: err },
      );
    }
    return {
      ...base,
      tables: tables.map((t) => appliedCounts(t, statements, wrote, policy)),
      validation: { ok: true },
      applied: true,
      xids,
      tenants: done,
      ...(out === undefined ? {} : { out }),
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await client.end().catch(() => {});
    await picker.close();
    closeOverlay(preOverlay);
    closeOverlay(window);
  }
}

/** The guard's confirmation of an undo, naming what it will do. */
async function confirmUndo(
  o: UndoOptions,
  client: PgClient,
  description: string,
  tables: readonly UndoTable[],
  policy: ConflictPolicy,
  tenants: number | undefined,
  off: readonly SuspendedTrigger[],
): Promise<void> {
  const conflicts = sum(tables, 'conflicts');
  await guard({
    target: o.target,
    action: `undo ${description}: reinsert ${fmt(sum(tables, 'reinsert'))}, revert ${fmt(sum(tables, 'revert'))}, delete ${fmt(sum(tables, 'delete'))} row(s) in ${tables.length} table(s)${conflicts > 0 ? `; ${fmt(conflicts)} conflict(s) ${policy === 'skip' ? 'skipped' : 'overwritten'}` : ''}${tenants === undefined ? '' : `, tenant by tenant (${tenants})`}${off.length === 0 ? '' : `; user triggers off while writing (writers to those tables wait): ${triggerList(off)}`}`,
    confirm: o.confirm,
    fingerprints: new FingerprintStore(o.repo),
    io: o.io,
    client,
  });
}

/**
 * Puts back the staged rows of a window that only deleted rows, each
 * table's in one INSERT (parents first), in one transaction, after the
 * guard's confirmation. Undefined, with nothing written, when a row
 * collides with one written since (a unique or exclusion violation): the
 * caller plans instead. Any other failure is the apply's.
 */
async function applyDirect(
  o: UndoOptions,
  client: PgClient,
  ordered: readonly TableSnapshot[],
  befores: ReadonlyMap<string, Before>,
  schema: SchemaModel,
  description: string,
  {
    progress,
    policy,
    off,
  }: {
    progress: (p: UndoProgress) => void;
    policy: ConflictPolicy;
    off: readonly SuspendedTrigger[];
  },
): Promise<{ tables: UndoTable[]; tenant: TenantProgress } | undefined> {
  const tables = ordered.map((t) => ({
    table: name(t),
    reinsert: befores.get(name(t))!.rows,
    revert: 0,
    delete: 0,
    conflicts: 0,
  }));
  progress({ phase: 'confirm' });
  await confirmUndo(o, client, description, tables, policy, undefined, off);
  const rows = sum(tables, 'reinsert');
  progress({ phase: 'apply', rows });
  const t0 = Date.now();
  await client.query('BEGIN');
  let xid: number;
  try {
    await asTheDatabase(client, ['search_path']); // (as in the plan's apply)
    await switchTriggers(client, disableStatements(off), 'this transaction was rolled back');
    for (const t of ordered) {
      await client.query(
        `INSERT INTO ${qualify(t.schema, t.name)}${columnList(t.columns)}${overriding(schema, t)} SELECT ${t.columns.map(quoteIdent).join(', ')} FROM ${befores.get(name(t))!.b}`,
      );
    }
    await enableTriggers(client, off, 'this transaction was rolled back');
    xid = await currentXid(client);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    if (err instanceof FlashbackError) throw err;
    const code = (err as { code?: unknown }).code;
    if (code === '23505' || code === '23P01') return undefined;
    throw new OperationError(
      'undo.apply',
      `undo failed: ${serverErrorText(err)}; this transaction was rolled back`,
      { cause: err },
    );
  }
  const tenant: TenantProgress = {
    value: null,
    rows,
    index: 1,
    total: 1,
    seconds: (Date.now() - t0) / 1000,
    xid,
  };
  o.onTenant?.(tenant);
  return { tables, tenant };
}

/**
 * A table's counts as applied: what its statements wrote. Rows planned but
 * not written were written again after the plan (each statement re-checks
 * the live row under skip; a key change is left whole): conflicts found
 * late.
 */
function appliedCounts(
  planned: UndoTable,
  statements: readonly Statement[],
  wrote: ReadonlyMap<Statement, number>,
  policy: ConflictPolicy,
): UndoTable {
  const did = (kind: Statement['kind']) =>
    statements
      .filter((s) => s.table === planned.table && s.kind === kind)
      .reduce((a, s) => a + (wrote.get(s) ?? 0), 0);
  const t = {
    table: planned.table,
    reinsert: did('reinsert'),
    revert: did('revert'),
    delete: did('delete'),
  };
  // Under overwrite nothing is re-checked: a row no statement wrote was as
  // wanted already (deleted since, or a key-only row inserted again).
  const late =
    policy === 'overwrite'
      ? 0
      : planned.reinsert + planned.revert + planned.delete - t.reinsert - t.revert - t.delete;
  return { ...t, conflicts: planned.conflicts + late, lateConflicts: late };
}

/** The open transaction's id: the 32-bit xid, as the change log names transactions (txid_current() adds the epoch). */
async function currentXid(client: PgClient): Promise<number> {
  return Number(
    (await client.query<{ x: string }>('SELECT pg_current_xact_id()::xid::text AS x')).rows[0]!.x,
  );
}

function name(t: { schema: string; name: string }): string {
  return `${t.schema}.${t.name}`;
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

function sum(
  tables: readonly UndoTable[],
  k: 'reinsert' | 'revert' | 'delete' | 'conflicts',
): number {
  return tables.reduce((a, t) => a + t[k], 0);
}

/** The state before the window and the window's net effect. */
async function readWindow(o: UndoOptions): Promise<{
  pre: PointInTimePlan;
  preOverlay: Overlay;
  window: Overlay;
  description: string;
  /** The window's start's tables renamed since (renamesSince). */
  renames: ReadonlyMap<TableSnapshot, TableName>;
  /** Keys the window deleted and a later transaction wrote again (writtenAgain). */
  again: WrittenAgain;
}> {
  const sel = o.selection;
  const planned = await planPointInTime(
    o.repo,
    o.target.name,
    sel.kind === 'tx' ? { kind: 'xid', xid: sel.xid } : { kind: 'time', at: sel.since },
    undefined,
    'undo',
  );
  const onProgress = (p: OverlayProgress) => o.onProgress?.({ phase: 'log', ...p });
  if (sel.kind === 'window' && sel.until === undefined) {
    // The window runs to the end of the log, which must be about now
    // (capture stores a heartbeat every few seconds): a log that stopped
    // (capture not running) would leave what was committed since out of
    // the undo without a word.
    const soon = isoMicro(Date.now() - LOG_SLACK_MS, '000');
    // (Waiting up to a heartbeat and a flush for a log just short of it.)
    await awaitLogReaches(planned.log, o.target.name, soon, { waitMs: 6_000 }).catch(
      (err: unknown) => {
        if (!(err instanceof UsageError)) throw err;
        throw new UsageError(
          `${err.message.replace(/: it cannot say what changed up to .*$/, '')}, not now: undo --since without --until runs to now, and what was committed after the log's end would be left out`,
          {
            hint: `start capture (\`flashback capture ${o.target.name}\`) and let it catch up, or give --until (up to where the log reaches) to undo what it holds`,
          },
        );
      },
    );
  }
  // What each schema change left (read once: which tables the window
  // created, and the names the start's tables have had since).
  const views = await schemaViews(planned.log, []);
  // With --table, only those tables' rows are rebuilt, before and in the
  // window: another table's changes (a column changed in the window, say)
  // can neither refuse the undo nor take memory.
  const patterns = o.tables ?? [];
  const select =
    patterns.length === 0
      ? undefined
      : (m: SnapshotManifest<SchemaModel>) => chosenAtStart(m, patterns, views);
  // The state before the window as a restore to that moment rebuilds it:
  // tables created, and columns changed, between the snapshot and the
  // window are followed (schema-changes.ts), and the tables are the
  // window's start's.
  let rebuilt: { manifest: SnapshotManifest<SchemaModel>; overlay: Overlay };
  try {
    rebuilt = await rebuildPlan(planned, onProgress, select);
  } catch (err) {
    // The window's start is a moment whose schema capture could not read
    // (or whose record is lost), or the snapshot is from a Flashback that
    // did not record OIDs: read in the snapshot's tables, as before schema
    // changes were followed (that refuses only a table whose columns
    // changed and whose rows are in the way).
    const fallback = [
      'restore.schema-unrecorded',
      'restore.schema-changed',
      'changelog.schema-missing',
    ];
    if (!(err instanceof OperationError || err instanceof DamagedError)) throw err;
    if (!fallback.includes(err.code)) throw err;
    rebuilt = {
      manifest: planned.manifest,
      overlay: await buildOverlay(planned, { onProgress, only: select?.(planned.manifest) }),
    };
  }
  const pre: PointInTimePlan = { ...planned, manifest: rebuilt.manifest };
  const preOverlay = rebuilt.overlay;
  const first = preOverlay.next;
  if (first === undefined) {
    // A log that stopped a while ago cannot hold a transaction committed since.
    const stopped = await logStopped(planned.log);
    throw new UsageError(
      (sel.kind === 'tx'
        ? `transaction ${sel.xid} is not in the change log of "${o.target.name}"`
        : `no transaction of "${o.target.name}" committed after ${sel.since} in the change log`) +
        (stopped ?? ''),
      {
        hint:
          stopped === undefined
            ? 'check the window; `flashback impact` shows what changed when'
            : `start capture (\`flashback capture ${o.target.name}\`) and let it catch up, then run the undo again`,
      },
    );
  }
  const from = lsnValue(first.commitLsn);
  let point: PointInTime;
  if (sel.kind === 'tx') point = { kind: 'lsn', lsn: lsnText(from + 1n) };
  else if (sel.until !== undefined) point = { kind: 'time', at: sel.until };
  else {
    // Up to the last stored commit (the end LSN of a commit is past its commit LSN).
    const segs = await pre.log.segments();
    point = { kind: 'lsn', lsn: lsnText(segs.at(-1)?.committed ?? from + 1n) };
  }
  let window: Overlay;
  try {
    window = await buildOverlay(
      { ...pre, point },
      {
        fromLsn: from,
        onProgress,
        createdInWindow: createdSince(pre, from, views),
        tablesOf: "the window's start",
        // A column dropped in the window: no row of it need change, so
        // nothing else shows that its values are gone.
        refuseDroppedColumns: true,
        only: select?.(pre.manifest),
      },
    );
  } catch (err) {
    closeOverlay(preOverlay);
    // A schema change inside the window: one that comes before the window is followed.
    if (err instanceof OperationError && err.code === 'restore.schema-changed') {
      throw new OperationError('undo.schema-changed', err.message, {
        hint:
          sel.kind === 'tx'
            ? // The change is in the transaction itself: there is no "after it" to undo apart.
              `the transaction changed columns as well as rows, and undo does not reverse rows across a schema change; rebuild the rows as they were just before it in another database (\`flashback restore ${o.target.name} --before-xid ${sel.xid} --table TABLE --to OTHER --create\`) and copy back what you need`
            : "undo the changes after the schema change (--since its commit time) and those before it (--until just before it) separately; a dropped table's rows come back with `flashback restore --at` a moment before the drop and `--table`",
      });
    }
    throw err;
  }
  const description =
    sel.kind === 'tx'
      ? `transaction ${sel.xid} (committed ${first.commitTime})`
      : `${window.transactions} transaction(s) committed from ${sel.since} to ${sel.until ?? `the end of the log (${window.last?.commitTime ?? sel.since})`}`;
  let again: WrittenAgain;
  try {
    again = await writtenAgain(pre, window, onProgress, select?.(pre.manifest));
  } catch (err) {
    // (Their spill files go with them.)
    closeOverlay(preOverlay);
    closeOverlay(window);
    throw err;
  }
  return {
    pre,
    preOverlay,
    window,
    description,
    renames: renamesSince(pre.manifest, views),
    again,
  };
}

/** What writtenAgain found. */
interface WrittenAgain {
  /** Per table (schema.name at the window's start): keys the window deleted that a later transaction wrote. */
  readonly keys: ReadonlyMap<string, readonly Key[]>;
  /** Why the log after the window could not be read for them (then only the live rows tell). */
  readonly unread?: string | undefined;
}

/**
 * Keys the window deleted that a transaction after it wrote again
 * (inserted, then perhaps deleted, or changed): putting them back would
 * revive a row removed on purpose since, though the key is absent now, so
 * the live table cannot tell. Read from the log after the window, for the
 * tables the window deleted rows of, as the net effect of that part of the
 * log (the fast reader; memory as for a window). A table whose columns
 * changed since cannot be read so: then `unread` says why.
 */
async function writtenAgain(
  pre: PointInTimePlan,
  window: Overlay,
  onProgress: (p: OverlayProgress) => void,
  only: readonly string[] | undefined,
): Promise<WrittenAgain> {
  const none: WrittenAgain = { keys: new Map() };
  const deleting = [...window.tables]
    .filter(([n, ov]) => (only === undefined || only.includes(n)) && hasDeletion(ov))
    .map(([n]) => n);
  if (deleting.length === 0 || window.last === undefined) return none;
  const end = (await pre.log.segments()).at(-1)?.committed;
  const from = lsnValue(window.last.commitLsn) + 1n;
  if (end === undefined || end <= from) return none;
  let after: Overlay;
  try {
    after = await buildOverlay(
      { ...pre, point: { kind: 'lsn', lsn: lsnText(end) } },
      { fromLsn: from, onProgress, only: deleting, tablesOf: "the window's start" },
    );
  } catch (err) {
    // A schema change after the window, or a damaged segment there (which
    // the undo does not otherwise need): said in a note, not fatal.
    if (!(err instanceof OperationError || err instanceof DamagedError)) throw err;
    return { keys: new Map(), unread: err.message };
  }
  try {
    const keys = new Map<string, Key[]>();
    for (const n of deleting) {
      const ov = window.tables.get(n)!;
      const w = ov.byKey;
      const a = after.tables.get(n)?.byKey;
      if (a === undefined || a.size === 0) continue;
      const hit: Key[] = [];
      // Truncated in the window: every row of before is put back, so every
      // key written after the window counts (the plan matches them to its reinserts).
      if (ov.truncated) hit.push(...a.heldKeys());
      else for (const k of w.heldKeys()) if (w.deleted(k) && a.has(k)) hit.push(k);
      if (hit.length > 0) keys.set(n, hit);
    }
    return { keys };
  } finally {
    closeOverlay(after);
  }
}

/** `fb why` of a row the window deleted and a later transaction wrote again. */
const WRITTEN_AGAIN =
  'the window deleted it, and a transaction after the window wrote that key again (inserted it, and perhaps deleted it again): putting it back would undo that later write';

/** Marks the reinserts of keys written again after the window as conflicts (writtenAgain). */
async function flagWrittenAgain(
  client: PgClient,
  t: TableSnapshot,
  u: string,
  i: number,
  keys: readonly Key[],
): Promise<void> {
  const k = `fb_undo_again_${i}`;
  await client.query(
    `CREATE TEMP TABLE ${k} AS SELECT ${t.key.map(quoteIdent).join(', ')} FROM ${u} WHERE false`,
  );
  // (The overlay's keys are COPY text of the key fields, or integers.)
  await copyChunks(
    client,
    linesSource(keys.map(String)),
    t,
    `pg_temp.${k}`,
    undefined,
    'undo interrupted',
    false,
    t.key,
  );
  await client.query(
    `UPDATE ${u} u SET "fb conflict" = true, "fb why" = coalesce(u."fb why", $1)
       FROM pg_temp.${k} k
      WHERE u."fb op" = 'reinsert' AND NOT u."fb conflict" AND ${t.key.map((c) => `u.${quoteIdent(c)} = k.${quoteIdent(c)}`).join(' AND ')}`,
    [WRITTEN_AGAIN],
  );
}

/** Whether the window deleted a row of a keyed table (or truncated it). */
function hasDeletion(ov: TableOverlay): boolean {
  if (ov.truncated) return true;
  for (const k of ov.byKey.heldKeys()) if (ov.byKey.deleted(k)) return true;
  return false;
}

/**
 * `--table` patterns against the window's start's tables under their names
 * now, or (a pattern matching none of those) under their names then: a
 * table renamed since is found by either. A name that is only one created
 * in the window is refused as such, not as unknown.
 */
function chooseTables(
  manifest: SnapshotManifest<SchemaModel>,
  patterns: readonly string[],
  created: readonly string[],
  then: { readonly pre: PointInTimePlan; readonly renames: ReadonlyMap<TableSnapshot, TableName> },
): TableName[] {
  const one = (p: string): TableName[] => {
    try {
      return selectTables(manifest, [p]);
    } catch (err) {
      if (!(err instanceof UsageError) || then.renames.size === 0) throw err;
      let hits: TableSnapshot[] = [];
      try {
        hits = selectTables(then.pre.manifest, [p]).filter((t) => then.renames.has(t));
      } catch {
        // (No match under the names then either: the error about names now stands.)
      }
      if (hits.length === 0) throw err;
      return hits.map((t) => then.renames.get(t)!);
    }
  };
  try {
    return patterns.flatMap(one);
  } catch (err) {
    const hit = created.find((c) =>
      patterns.some((p) => c === p || c.slice(c.indexOf('.') + 1) === p.toLowerCase()),
    );
    if (!(err instanceof UsageError) || hit === undefined) throw err;
    throw new UsageError(
      `${hit} was created in the window: undo puts rows back into the tables as they were before it, and there was no ${hit} then`,
      { hint: 'empty or drop it yourself if it should go; `flashback impact` lists its changes' },
    );
  }
}

/**
 * The start's tables (schema.name as they were then) that `--table`
 * patterns choose, by their names then or now (renamed since). A pattern
 * that matches none chooses nothing here: chooseTables refuses it later,
 * saying why (unknown, or created in the window).
 */
function chosenAtStart(
  m: SnapshotManifest<SchemaModel>,
  patterns: readonly string[],
  views: readonly SchemaView[],
): string[] {
  const renames = renamesSince(m, views);
  const out = new Set<string>();
  for (const p of patterns) {
    const hits = (names: SnapshotManifest<SchemaModel>) => {
      try {
        return selectTables(names, [p]);
      } catch (err) {
        if (err instanceof UsageError) return [];
        throw err;
      }
    };
    for (const t of hits(m)) out.add(name(t));
    // Under their names now: the start's table each stands for.
    const now = m.tables.flatMap((t) => {
      const n = renames.get(t);
      return n === undefined ? [] : [{ ...t, schema: n.schema, name: n.name, start: name(t) }];
    });
    if (now.length === 0) continue;
    const startOf = new Map(now.map((t) => [name(t), t.start]));
    for (const t of hits({ ...m, tables: now })) out.add(startOf.get(name(t))!);
  }
  return [...out];
}

/**
 * Tables that schema changes committed from `from` on create (every table of
 * a recorded schema that the window's start does not have): the window's
 * changes to them are left out, since before the window there was no table
 * to put their rows back into.
 */
function createdSince(pre: PointInTimePlan, from: bigint, views: readonly SchemaView[]): string[] {
  const have = new Set(pre.manifest.tables.map(name));
  const oids = new Set(pre.manifest.tables.flatMap((t) => (t.oid === undefined ? [] : [t.oid])));
  const out = new Set<string>();
  // (A transaction's schema record is named by its end LSN, past its commit LSN.)
  for (const v of views) {
    if (v.lsn <= from) continue;
    for (const t of v.tables) {
      // By OID where known: a table renamed in the window is not a new one,
      // and a new table given a name the start had (a swap) is.
      const oid = v.oids.get(name(t));
      if (oid !== undefined && oids.size > 0 ? !oids.has(oid) : !have.has(name(t))) {
        out.add(name(t));
      }
    }
  }
  return [...out];
}

/**
 * Refuses an undo into a table that is not in the database now (dropped
 * since the window, or renamed without capture recording it), naming it,
 * before anything is staged.
 */
async function refuseMissing(
  client: PgClient,
  tables: readonly TableSnapshot[],
  target: string,
): Promise<void> {
  const r = await client.query<{ t: string }>(
    'SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL',
    [tables.map((t) => qualify(t.schema, t.name))],
  );
  const gone = new Set(r.rows.map((x) => x.t));
  const missing = tables.filter((t) => gone.has(qualify(t.schema, t.name)));
  if (missing.length === 0) return;
  throw new OperationError(
    'undo.table-missing',
    `${missing.map(name).join(', ')}, whose rows the window changed, ${missing.length === 1 ? 'is' : 'are'} not in "${target}" now (dropped since, or renamed without capture recording it): undo puts rows back into the tables as they are now`,
    {
      hint: `rebuild the rows elsewhere (\`flashback restore ${target} --at TIME --table ${name(missing[0]!)} --to OTHER --create\`) and copy back what you need, or leave ${missing.length === 1 ? 'it' : 'them'} out with --table`,
    },
  );
}

/** A table's schema and name. */
interface TableName {
  readonly schema: string;
  readonly name: string;
}

/**
 * The window's start's tables that have another name now: renamed in the
 * window or after it (a migration), followed by their OIDs through every
 * schema change capture recorded (`views`, in LSN order). Undo puts their
 * rows back under the name they have now.
 */
function renamesSince(
  manifest: SnapshotManifest<SchemaModel>,
  views: readonly SchemaView[],
): Map<TableSnapshot, TableName> {
  const newest = new Map<number, TableName>();
  for (const v of views) {
    for (const t of v.tables) {
      const oid = v.oids.get(name(t));
      if (oid !== undefined) newest.set(oid, { schema: t.schema, name: t.name });
    }
  }
  const out = new Map<TableSnapshot, TableName>();
  for (const t of manifest.tables) {
    const now = t.oid === undefined ? undefined : newest.get(t.oid);
    if (now !== undefined && (now.schema !== t.schema || now.name !== t.name)) out.set(t, now);
  }
  return out;
}

/**
 * The window's reading with renamed tables under their names now: the
 * start's tables and schema (its foreign keys included), and the overlays'
 * per-table entries. Everything after works on live names.
 */
function underNamesNow(
  read: Awaited<ReturnType<typeof readWindow>>,
): Awaited<ReturnType<typeof readWindow>> {
  if (read.renames.size === 0) return read;
  const byOld = new Map([...read.renames].map(([t, now]) => [name(t), now]));
  const rename = <T extends TableName>(x: T): T => {
    const now = byOld.get(name(x));
    return now === undefined ? x : { ...x, schema: now.schema, name: now.name };
  };
  const rekey = <V>(m: ReadonlyMap<string, V> | undefined): Map<string, V> =>
    new Map([...(m ?? [])].map(([k, v]) => [byOld.has(k) ? name(byOld.get(k)!) : k, v]));
  const overlay = (o: Overlay): Overlay => ({
    ...o,
    tables: rekey(o.tables),
    reshape: rekey(o.reshape),
  });
  const m = read.pre.manifest;
  const schema: SchemaModel = {
    ...m.schema,
    tables: m.schema.tables.map(rename),
    constraints: m.schema.constraints.map((c) => {
      const now = byOld.get(`${c.schema}.${c.table}`);
      const parent = c.references === undefined ? undefined : rename(c.references);
      return {
        ...c,
        ...(now === undefined ? {} : { schema: now.schema, table: now.name }),
        ...(parent === undefined ? {} : { references: parent }),
      };
    }),
  };
  return {
    ...read,
    pre: { ...read.pre, manifest: { ...m, schema, tables: m.tables.map(rename) } },
    preOverlay: overlay(read.preOverlay),
    window: overlay(read.window),
    again: { ...read.again, keys: rekey(read.again.keys) },
  };
}

/**
 * How a table's columns at the window's start meet the table now. A column
 * dropped since the window began cannot take values back (the others do);
 * one renamed since takes them under its name now. Found by the columns'
 * attnums on the table's OID (recorded in snapshots since they follow
 * schema changes), which survive renames and tell a dropped-and-re-added
 * column from the one before it.
 */
interface LiveLayout {
  /** The table for every statement after staging: its columns and key by their names now, without the dropped. */
  readonly live: TableSnapshot;
  /** The COPY column list of staged rows (one per column of the start): names now, a placeholder for each dropped. */
  readonly stage: readonly string[];
  /** The placeholders: text columns added to the staging tables, never read back. */
  readonly placeholders: readonly string[];
  readonly notes: readonly string[];
}

/** The layout of each table (by schema.name), or a refusal naming what cannot be matched. */
async function liveLayouts(
  client: PgClient,
  tables: readonly TableSnapshot[],
  target: string,
): Promise<Map<string, LiveLayout>> {
  const out = new Map<string, LiveLayout>();
  for (const t of tables) {
    const now = await columnsNow(client, t);
    const stage: string[] = [];
    const placeholders: string[] = [];
    const notes: string[] = [];
    const renamed = new Map<string, string>();
    for (const [j, c] of t.columns.entries()) {
      const col = now.columns[j]!;
      if (col.kind !== 'present' && t.key.includes(c)) {
        throw new OperationError(
          'undo.key-dropped',
          `key column ${c} of ${name(t)} is not in the table now (dropped or renamed since the window began): its rows cannot be matched to put them back. Nothing was written.`,
          {
            hint: `rebuild the rows elsewhere (\`flashback restore ${target} --at TIME --table ${name(t)} --to OTHER --create\`) and copy back what you need`,
          },
        );
      }
      if (col.kind === 'missing') {
        // Without column numbers a rename cannot be told from a drop: guessing
        // either way could put values into the wrong column, or lose them.
        throw new OperationError(
          'undo.column-missing',
          `column ${c} of ${name(t)} is not in the table now, and ${t.oid === undefined ? 'the snapshot does not record column numbers' : 'the table is not the one the window changed (another OID)'} to tell a rename from a drop. Nothing was written.`,
          {
            hint: `rebuild the rows elsewhere (\`flashback restore ${target} --at TIME --table ${name(t)} --to OTHER --create\`) and copy back what you need`,
          },
        );
      }
      if (col.kind === 'dropped') {
        const p = `fb dropped ${col.attnum}`;
        stage.push(p);
        placeholders.push(p);
        notes.push(
          `column ${c} of ${name(t)} was dropped since the window began: its values are not put back (the other columns are)`,
        );
      } else if (col.name !== c) {
        stage.push(col.name);
        renamed.set(c, col.name);
        notes.push(
          `column ${c} of ${name(t)} was renamed to ${col.name} since the window began: its values are put back under that name`,
        );
      } else stage.push(c);
    }
    const to = (c: string) => renamed.get(c) ?? c;
    const live: TableSnapshot =
      placeholders.length === 0 && renamed.size === 0
        ? t
        : {
            ...t,
            columns: stage.filter((c) => !placeholders.includes(c)),
            key: t.key.map(to),
          };
    out.set(name(t), { live, stage, placeholders, notes });
  }
  return out;
}

/** A staging table: the table's columns now, and a placeholder for each column dropped since. */
async function createStaging(client: PgClient, table: string, layout: LiveLayout): Promise<void> {
  const t = layout.live;
  await client.query(
    [
      `CREATE TEMP TABLE ${table.slice('pg_temp.'.length)} (LIKE ${qualify(t.schema, t.name)})`,
      ...layout.placeholders.map((p) => `ALTER TABLE ${table} ADD COLUMN ${quoteIdent(p)} text`),
    ].join('; '),
  );
}

/** A keyed table's rows before the window, staged (stageBefore). */
interface Before {
  /** The staged table. */
  readonly b: string;
  readonly rows: number;
  /** Rows whose after-version takes a value from them (unchanged TOAST): key → line. */
  readonly needBefore: ReadonlyMap<string, string>;
}

/**
 * Stages the rows of the window's keys as they were before it (all rows
 * when the window truncated the table: they all come back), in
 * `pg_temp.fb_undo_before_<i>`.
 */
async function stageBefore(
  client: PgClient,
  chunks: ChunkStore,
  t: TableSnapshot,
  i: number,
  preOverlay: Overlay,
  win: TableOverlay,
  schema: SchemaModel,
  picker: ChunkPicker,
  progress: (p: UndoProgress) => void,
  layout: LiveLayout,
): Promise<Before> {
  const b = `pg_temp.fb_undo_before_${i}`;
  await createStaging(client, b, layout);
  const k = t.key.length;
  const keys = win.byKey;
  // Before: the snapshot with the log up to the window, only the window's keys
  // (all rows when the window truncated the table: they all come back).
  // Only chunks whose key range can hold one of the keys are read (when the
  // key order can be reproduced; else all): undoing a few rows of a big table
  // must not read all of it.
  const source = pointInTimeSource(
    chunks,
    preOverlay,
    win.truncated ? undefined : { keys, keysIn: keysByChunk(schema, t, keys), picker },
  );
  const needBefore = new Map<string, string>(); // rows whose after-version refers to them (unchanged TOAST)
  for (const [key, v] of win.byKey) if (v?.includes(0)) needBefore.set(key, '');
  // The source gives only the keys' rows (every row when the window
  // truncated the table: they all come back); a look at each line is needed
  // only for rows whose after-version takes a value from them.
  const before: TableSource =
    needBefore.size > 0
      ? {
          async *blocks(table) {
            for await (const block of source.blocks(table)) {
              rememberNeeded(block, k, needBefore);
              yield block;
            }
          },
        }
      : source;
  const rows = await copyChunks(
    client,
    counted(before, name(t), progress),
    t,
    b,
    undefined,
    'undo interrupted',
    false,
    layout.stage,
  );
  return { b, rows, needBefore };
}

/**
 * Plans one keyed table from its staged rows before the window: the rows
 * the window left, then the plan rows (the version to put back, the
 * operation, whether it conflicts with the live row, and for reverts the
 * columns that changed). Returns the plan table's name.
 */
async function planTable(
  client: PgClient,
  i: number,
  { b, needBefore }: Before,
  win: TableOverlay,
  where: string | undefined,
  progress: (p: UndoProgress) => void,
  layout: LiveLayout,
): Promise<{ u: string; already: number }> {
  const t = layout.live;
  const live = `ONLY ${qualify(t.schema, t.name)}`;
  const a = `pg_temp.fb_undo_after_${i}`;
  const u = `pg_temp.fb_undo_${i}`;
  await createStaging(client, a, layout);
  await client.query(
    `CREATE TEMP TABLE ${u.slice('pg_temp.'.length)} (LIKE ${qualify(t.schema, t.name)})`,
  );
  // After: the window's net effect (unchanged TOAST values from the before row).
  const afterLines: string[] = [];
  for (const [key, v] of win.byKey) {
    if (v === null) continue;
    if (!v.includes(0)) {
      afterLines.push(lineOf(v));
      continue;
    }
    const prev = needBefore.get(key);
    if (prev === undefined || prev === '') {
      throw new OperationError(
        'undo.toast',
        `row (${key}) of ${name(t)}: an unchanged TOASTed value has no earlier version`,
      );
    }
    afterLines.push(lineOf(resolveAgainst(v, Buffer.from(prev, 'utf8'))));
  }
  await copyChunks(
    client,
    linesSource(afterLines),
    t,
    a,
    undefined,
    'undo interrupted',
    false,
    layout.stage,
  );
  // Statistics for the plan queries below: without them the planner takes
  // the staged tables for empty-ish and may scan the whole live table to
  // join a few thousand keys, where index lookups are what it needs.
  progress({ phase: 'plan', table: name(t) });
  await client.query(`ANALYZE ${b}, ${a}`);
  await addPlanColumns(client, u);
  const cols = t.columns.map(quoteIdent).join(', ');
  const pick = (alias: string) => t.columns.map((c) => `${alias}.${quoteIdent(c)}`).join(', ');
  const keyEq = (x: string, y: string) =>
    t.key.map((c) => `${x}.${quoteIdent(c)} = ${y}.${quoteIdent(c)}`).join(' AND ');
  const same = (x: string, y: string) =>
    t.columns
      .map(
        (c) =>
          `${x}.${quoteIdent(c)}::text COLLATE "C" IS NOT DISTINCT FROM ${y}.${quoteIdent(c)}::text COLLATE "C"`,
      )
      .join(' AND ') || 'true';
  // (Key columns too: a key equal by its type's `=` can differ in text, as
  // citext's or a nondeterministic collation's `User1` and `user1` do.)
  const changed = `array_remove(ARRAY[${t.columns
    .map(
      (c) =>
        `CASE WHEN b.${quoteIdent(c)}::text COLLATE "C" IS DISTINCT FROM a.${quoteIdent(c)}::text COLLATE "C" THEN ${quoteLiteral(c)} END`,
    )
    .join(', ')}]::text[], NULL)`;
  await client.query(
    `INSERT INTO ${u} (${cols}, "fb op", "fb conflict")
       SELECT ${pick('b')}, 'reinsert', EXISTS (SELECT 1 FROM ${live} l WHERE ${keyEq('l', 'b')})
         FROM ${b} b WHERE NOT EXISTS (SELECT 1 FROM ${a} a WHERE ${keyEq('a', 'b')})`,
  );
  // "fb after": the row the window left, as text per column: the apply checks
  // the live row still is that one (it may have changed since this plan).
  const afterText = `ARRAY[${t.columns.map((c) => `a.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]::text[]`;
  await client.query(
    `INSERT INTO ${u} (${cols}, "fb op", "fb conflict", "fb after")
       SELECT ${pick('a')}, 'delete', NOT EXISTS (SELECT 1 FROM ${live} l WHERE ${keyEq('l', 'a')} AND ${same('l', 'a')}), ${afterText}
         FROM ${a} a WHERE NOT EXISTS (SELECT 1 FROM ${b} b WHERE ${keyEq('a', 'b')})`,
  );
  await client.query(
    `INSERT INTO ${u} (${cols}, "fb op", "fb conflict", "fb changed", "fb after")
       SELECT ${pick('b')}, 'revert', NOT EXISTS (SELECT 1 FROM ${live} l WHERE ${keyEq('l', 'a')} AND ${same('l', 'a')}), ${changed}, ${afterText}
         FROM ${b} b JOIN ${a} a ON ${keyEq('a', 'b')} WHERE NOT (${same('a', 'b')})`,
  );
  await keepMatching(
    client,
    u,
    where,
    `the predicate is evaluated on rows of ${name(t)}: the version being put back (for rows to delete, the row the window inserted)`,
  );
  // A key change is undone whole or not at all: --where may keep one half
  // (the old key put back) and leave the other (the new key deleted), which
  // would make the row twice, or lose it.
  if (where !== undefined && win.moved.size > 0 && t.key.length > 0) {
    await movesTable(client, t, u, i, win.moved);
    const is = (x: string, p: string) => movedSide(t, x, p);
    await client.query(
      `UPDATE ${u} x SET "fb conflict" = true, "fb why" = coalesce(x."fb why", $1)
        WHERE EXISTS (SELECT 1 FROM pg_temp.fb_undo_moves_${i} m
         WHERE (${is('x', 'from')} AND NOT EXISTS (SELECT 1 FROM ${u} y WHERE ${is('y', 'to')}))
            OR (${is('x', 'to')} AND NOT EXISTS (SELECT 1 FROM ${u} y WHERE ${is('y', 'from')})))`,
      [WHY_HALF],
    );
  }
  // Rows already as they were before the window (put back, or deleted,
  // since: an undo run twice, or by hand) need nothing: left out of the
  // plan, not reported as conflicts with the state they should have. (Not
  // a delete of a table whose keys moved in the window: its row may live
  // on under a later key, and its other half, put back, would make two.)
  const gone =
    win.moved.size === 0
      ? `NOT EXISTS (SELECT 1 FROM ${live} l WHERE ${keyEq('l', 'u')})`
      : 'false';
  const already = await client.query(
    `DELETE FROM ${u} u WHERE CASE u."fb op"
       WHEN 'delete' THEN ${gone}
       ELSE EXISTS (SELECT 1 FROM ${live} l WHERE ${keyEq('l', 'u')} AND ${same('l', 'u')}) END`,
  );
  return { u, already: already.rowCount ?? 0 };
}

/**
 * Undoing an update that changed a row's key from K1 to K2 is two plan rows:
 * K1 put back (or reverted) and K2 deleted (or reverted). Either one being a
 * conflict makes both conflicts: under skip, doing only the other would
 * leave the row twice (K1 back, K2 kept) or not at all (K2 deleted, K1 not
 * put back). `moved`: the window's key now → key before (TableOverlay.moved).
 */
async function linkMoves(
  client: PgClient,
  t: TableSnapshot,
  u: string,
  i: number,
  moved: ReadonlyMap<string, string>,
): Promise<void> {
  await movesTable(client, t, u, i, moved);
  await spreadConflicts(client, t, u, i);
}

/**
 * `pg_temp.fb_undo_moves_<i>`: the window's key changes of the table, one
 * row per change (the new key as `to 0…`, the old as `from 0…`); made once
 * per table and plan.
 */
async function movesTable(
  client: PgClient,
  t: TableSnapshot,
  u: string,
  i: number,
  moved: ReadonlyMap<string, string>,
): Promise<void> {
  const m = `fb_undo_moves_${i}`;
  const exists = await client.query('SELECT 1 FROM pg_class WHERE oid = to_regclass($1)', [
    `pg_temp.${m}`,
  ]);
  if ((exists.rowCount ?? 0) > 0) return;
  const side = (p: string) => t.key.map((_, j) => `${p} ${j}`);
  const columns = [...side('to'), ...side('from')];
  // (Typed as the plan's key columns: u is LIKE the table now.)
  await client.query(
    `CREATE TEMP TABLE ${m} AS SELECT ${[...t.key, ...t.key].map((c, j) => `${quoteIdent(c)} AS ${quoteIdent(columns[j]!)}`).join(', ')} FROM ${u} WITH NO DATA`,
  );
  const lines = [...moved].map(([to, from]) => `${to}\t${from}`);
  await copyChunks(
    client,
    linesSource(lines),
    { ...t, columns },
    `pg_temp.${m}`,
    undefined,
    'undo interrupted',
  );
}

/** The key of plan row `x` equals the `p` ('from' or 'to') side of linkMoves' row m. */
function movedSide(t: TableSnapshot, x: string, p: string): string {
  return t.key.map((c, j) => `${x}.${quoteIdent(c)} = m.${quoteIdent(`${p} ${j}`)}`).join(' AND ');
}

/** A conflict on either half of a key change makes the other one: until nothing changes (keys swapped, moved on, in chains). */
async function spreadConflicts(
  client: PgClient,
  t: TableSnapshot,
  u: string,
  i: number,
): Promise<number> {
  const is = (x: string, p: string) => movedSide(t, x, p);
  let marked = 0;
  for (;;) {
    const r = await client.query(
      `UPDATE ${u} x SET "fb conflict" = true, "fb why" = coalesce(x."fb why", ${quoteLiteral(WHY_MOVED)})
        WHERE NOT x."fb conflict" AND EXISTS (
          SELECT 1 FROM pg_temp.fb_undo_moves_${i} m JOIN ${u} y ON y."fb conflict"
           WHERE (${is('x', 'from')} AND ${is('y', 'to')}) OR (${is('x', 'to')} AND ${is('y', 'from')}))`,
    );
    if ((r.rowCount ?? 0) === 0) return marked;
    marked += r.rowCount ?? 0;
  }
}

/**
 * At apply time, under skip: the key changes whose halves the statements
 * would not both do, because one half's live row was written again since the
 * plan (the statements' own re-checks: a row to put back is absent, a row to
 * revert or delete is as the window left it), become conflicts, both halves
 * and the chains they are in. The table is locked against writes first
 * (SHARE ROW EXCLUSIVE, until the apply's transaction ends), so the
 * statements find every row as checked here: locking the key changes' live
 * rows alone left a row inserted under a key that was absent (or inserted
 * and not yet committed when checked) free to come between, and the pair
 * was then done by halves, the row under its new key deleted and the old
 * key not put back. Writers to the table wait for the apply; only tables
 * whose keys the window changed are locked so. Only pairs whose halves both
 * belong to `tenant`'s group, when the apply goes tenant by tenant.
 */
async function leaveSplitMoves(
  client: PgClient,
  t: TableSnapshot,
  u: string,
  i: number,
  tenant: { column: string; value: string | null } | undefined,
): Promise<void> {
  const target = qualify(t.schema, t.name);
  const m = `pg_temp.fb_undo_moves_${i}`;
  const is = (x: string, p: string) => movedSide(t, x, p);
  await client.query(`LOCK TABLE ONLY ${target} IN SHARE ROW EXCLUSIVE MODE`);
  const keyEq = (x: string) =>
    t.key.map((c) => `l.${quoteIdent(c)} = ${x}.${quoteIdent(c)}`).join(' AND ');
  const live = `ARRAY[${t.columns.map((c) => `l.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]::text[]`;
  const will = (x: string) =>
    `CASE WHEN ${x}."fb op" = 'reinsert'
       THEN NOT EXISTS (SELECT 1 FROM ONLY ${target} l WHERE ${keyEq(x)})
       ELSE EXISTS (SELECT 1 FROM ONLY ${target} l WHERE ${keyEq(x)} AND ${live} IS NOT DISTINCT FROM ${x}."fb after") END`;
  const inGroup =
    tenant === undefined
      ? ''
      : ` AND a.${quoteIdent(tenant.column)}::text IS NOT DISTINCT FROM $1 AND b.${quoteIdent(tenant.column)}::text IS NOT DISTINCT FROM $1`;
  const r = await client.query(
    `UPDATE ${u} x SET "fb conflict" = true, "fb why" = coalesce(x."fb why", ${quoteLiteral(WHY_MOVED)}) FROM ${m} m, ${u} a, ${u} b
      WHERE ${is('a', 'from')} AND ${is('b', 'to')} AND NOT a."fb conflict" AND NOT b."fb conflict"${inGroup}
        AND (${will('a')}) IS DISTINCT FROM (${will('b')})
        AND ((${is('x', 'from')}) OR (${is('x', 'to')}))`,
    tenant === undefined ? [] : [tenant.value],
  );
  if ((r.rowCount ?? 0) > 0) await spreadConflicts(client, t, u, i);
}

/** `source`, reporting the rows it has given as they go. */
function counted(
  source: TableSource,
  table: string,
  progress: (p: UndoProgress) => void,
): TableSource {
  return {
    async *blocks(t) {
      let rows = 0;
      progress({ phase: 'rows', table, rows });
      for await (const block of source.blocks(t)) {
        rows += block.rows;
        progress({ phase: 'rows', table, rows });
        yield block;
      }
    },
  };
}

/** The plan columns of a staged table: what to do with the row, and what conflict checks need. */
/**
 * The plan's own columns beside each staged row: what to do, whether it is a
 * conflict, the columns the window changed and their values after it, and
 * why a conflict is one when its versions do not show it (`fb why`).
 */
const PLAN_COLUMNS =
  'ADD COLUMN "fb op" text, ADD COLUMN "fb conflict" boolean NOT NULL DEFAULT false, ADD COLUMN "fb changed" text[], ADD COLUMN "fb after" text[], ADD COLUMN "fb why" text';
const PLAN_COLUMN_NAMES = ['"fb op"', '"fb conflict"', '"fb changed"', '"fb after"', '"fb why"'];
/**
 * With --by: the tenant group a plan row is applied in (the tenant column's
 * text, but one group for both halves of a key change: tenantGroups).
 */
const TENANT_GROUP = 'fb tenant';

/** `fb why` of the rows of a key change left alone because one half was written since. */
/** `fb why` of a key change's half kept by --where when the other half is not. */
const WHY_HALF =
  'its key was changed in the window, and --where keeps only one of the two halves (old key put back, new key deleted): a key change is undone whole or not at all';

const WHY_MOVED =
  'its key was changed in the window, and a row under the old or new key was written since: a key change is undone whole or not at all';

async function addPlanColumns(client: PgClient, u: string): Promise<void> {
  await client.query(`ALTER TABLE ${u} ${PLAN_COLUMNS}`);
}

/** Leaves in the plan table only the rows `--where` accepts (its errors are the user's, with a hint). */
async function keepMatching(
  client: PgClient,
  u: string,
  where: string | undefined,
  hint: string,
): Promise<void> {
  if (where === undefined) return;
  try {
    // Extended protocol: one statement only, so the predicate cannot carry another.
    await queryOne(client, `DELETE FROM ${u} WHERE NOT coalesce((${where}), false)`);
  } catch (err) {
    throw new UsageError(`--where: ${(err as Error).message}`, { hint });
  }
}

/**
 * Stages a table without a key (its changes carry whole rows: REPLICA
 * IDENTITY FULL): rows the window removed are put back, rows it added are
 * deleted (one live row each; a row no longer there is a conflict). A window
 * that truncated the table puts back every row it had before.
 *
 * Identical rows are told apart by count only. A row R the window left n
 * copies of (n = before − removed + added) and that the live table now has
 * more copies of was written again since (by the application, or by an
 * earlier undo of the same window): that many of its reinserts are
 * conflicts. `before` is counted in the rows of the table when the window
 * opened (the whole table is read from the snapshot for it; for a window
 * that truncated, before = removed).
 */
async function stageKeyless(
  client: PgClient,
  chunks: ChunkStore,
  t: TableSnapshot,
  i: number,
  preOverlay: Overlay,
  win: TableOverlay,
  where: string | undefined,
  progress: (p: UndoProgress) => void,
  layout: LiveLayout,
): Promise<{ u: string; recheck: (client: PgClient) => Promise<number> }> {
  const u = `pg_temp.fb_undo_${i}`;
  await createStaging(client, u, layout);
  await addPlanColumns(client, u);
  const removed: string[] = [];
  for (const [line, n] of win.removed) for (let j = 0; j < n; j++) removed.push(line);
  await copyChunks(
    client,
    counted(
      win.truncated ? pointInTimeSource(chunks, preOverlay) : linesSource(removed),
      name(t),
      progress,
    ),
    t,
    u,
    undefined,
    'undo interrupted',
    false,
    layout.stage,
  );
  progress({ phase: 'plan', table: name(t) });
  await client.query(`UPDATE ${u} SET "fb op" = 'reinsert' WHERE "fb op" IS NULL`);
  await copyChunks(
    client,
    spoolSource(win.added),
    t,
    u,
    undefined,
    'undo interrupted',
    false,
    layout.stage,
  );
  await client.query(`UPDATE ${u} SET "fb op" = 'delete' WHERE "fb op" IS NULL`);
  await keepMatching(client, u, where, `the predicate is evaluated on rows of ${name(t)}`);
  // From here on the table's columns now (the sources read the start's).
  const now = layout.live;
  const live = `ONLY ${qualify(now.schema, now.name)}`;
  const whole = (a: string) =>
    `ARRAY[${now.columns.map((c) => `${a}.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]::text[]`;
  // Each staged row of an op, numbered among its identical copies.
  const numbered = (op: string) =>
    `SELECT s.ctid AS id, ${whole('s')} AS k, row_number() OVER (PARTITION BY ${whole('s')}) AS rn FROM ${u} s WHERE s."fb op" = '${op}'`;
  // Live copies of the rows in `x` (one pass over the live table, not one per row).
  const liveCounts = (x: string) =>
    `SELECT ${whole('l')} AS k, count(*) AS n FROM ${live} l WHERE ${whole('l')} IN (SELECT k FROM ${x}) GROUP BY 1`;
  // More live copies of a row to put back than the window left: that many are back already.
  let before = 'r.removed';
  let preCounts = '';
  if (!win.truncated && win.removed.size > 0) {
    const pre = `pg_temp.fb_undo_pre_${i}`;
    await createStaging(client, pre, layout);
    await copyChunks(
      client,
      onlyLines(pointInTimeSource(chunks, preOverlay), win.removed),
      t,
      pre,
      undefined,
      'undo interrupted',
      false,
      layout.stage,
    );
    preCounts = `, b AS (SELECT ${whole('p')} AS k, count(*) AS before FROM ${pre} p GROUP BY 1)`;
    before = 'coalesce(b.before, 0)';
  }
  // Judged against the live table as it is: when the plan is made, and again
  // at the apply (under its lock), so that rows written meanwhile (an undo
  // of the same window run beside this one) are not put back twice.
  const mark = async (c: PgClient): Promise<void> => {
    // More planned deletes of a row than live copies of it: the excess are conflicts.
    await c.query(
      `WITH d AS (${numbered('delete')}), n AS (${liveCounts('d')})
       UPDATE ${u} SET "fb conflict" = true FROM d LEFT JOIN n USING (k)
        WHERE ${u}.ctid = d.id AND d.rn > coalesce(n.n, 0)`,
    );
    await c.query(
      `WITH x AS (${numbered('reinsert')}),
            r AS (SELECT k, count(*) AS removed FROM x GROUP BY k),
            n AS (${liveCounts('r')}),
            a AS (SELECT ${whole('d')} AS k, count(*) AS added FROM ${u} d WHERE d."fb op" = 'delete' GROUP BY 1)${preCounts},
            excess AS (SELECT r.k, coalesce(n.n, 0) - (${before} - r.removed + coalesce(a.added, 0)) AS e
                         FROM r LEFT JOIN n USING (k) LEFT JOIN a USING (k)${preCounts === '' ? '' : ' LEFT JOIN b USING (k)'})
       UPDATE ${u} SET "fb conflict" = true FROM x JOIN excess USING (k)
        WHERE ${u}.ctid = x.id AND x.rn <= excess.e`,
    );
    // Rows both removed and added: an update of a row without a key looks
    // like a delete and an insert, and which removed row became which added
    // one is not known. Undoing one half of an update written since would
    // leave the row twice (the old version put back, the new one kept) or
    // lose it: with one conflict, none of the table's rows is undone.
    await c.query(
      `UPDATE ${u} x SET "fb conflict" = true, "fb why" = coalesce(x."fb why", $1)
        WHERE NOT x."fb conflict"
          AND EXISTS (SELECT 1 FROM ${u} y WHERE y."fb conflict")
          AND EXISTS (SELECT 1 FROM ${u} y WHERE y."fb op" = 'reinsert')
          AND EXISTS (SELECT 1 FROM ${u} y WHERE y."fb op" = 'delete')`,
      [WHY_KEYLESS],
    );
  };
  await mark(client);
  return {
    u,
    recheck: async (c) => {
      // Writers wait until the apply's transaction ends: the statements then
      // find the rows as counted here.
      await c.query(`LOCK TABLE ONLY ${qualify(now.schema, now.name)} IN SHARE ROW EXCLUSIVE MODE`);
      const count = async () =>
        Number(
          (await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${u} WHERE "fb conflict"`))
            .rows[0]!.n,
        );
      const before = await count();
      await mark(c);
      return (await count()) - before;
    },
  };
}

/** `fb why` of the rows of a table without a key held back with another that was written since. */
const WHY_KEYLESS =
  'the table has no key, and the changes undone both removed and added rows of it (an update looks so) while another of them was written since: which removed row became which added one is not known, so none is undone';

/** The lines of `source` that are among `wanted` (the rest are dropped as read). */
function onlyLines(source: TableSource, wanted: ReadonlyMap<string, number>): TableSource {
  return {
    async *blocks(t) {
      for await (const block of source.blocks(t)) {
        const c = block.content;
        const keep: string[] = [];
        let pos = 0;
        while (pos < c.length) {
          let nl = c.indexOf(0x0a, pos);
          if (nl < 0) nl = c.length;
          const line = c.toString('utf8', pos, nl);
          if (wanted.has(line)) keep.push(line);
          pos = nl + 1;
        }
        if (keep.length > 0) {
          yield { content: Buffer.from(`${keep.join('\n')}\n`, 'utf8'), rows: keep.length };
        }
      }
    },
  };
}

/** Remembers the lines of a block whose key `needed` asks for. */
function rememberNeeded(block: RowBlock, k: number, needed: Map<string, string>): void {
  const c = block.content;
  let pos = 0;
  while (pos < c.length) {
    let nl = c.indexOf(0x0a, pos);
    if (nl < 0) nl = c.length;
    const key = c.toString('utf8', pos, endOfFields(c, pos, nl, k));
    if (needed.has(key)) needed.set(key, c.toString('utf8', pos, nl));
    pos = nl + 1;
  }
}

/** Up to CONFLICT_SAMPLES conflicts of a table with before, after (the window's result) and now. */
async function conflictSamples(client: PgClient, t: TableSnapshot, u: string): Promise<Conflict[]> {
  if (t.key.length === 0) return keylessConflicts(client, t, u);
  const keyEq = (x: string, y: string) =>
    t.key.map((c) => `${x}.${quoteIdent(c)} = ${y}.${quoteIdent(c)}`).join(' AND ');
  const i = u.slice(u.lastIndexOf('_') + 1);
  // Each version as its columns' text forms, exactly as the server prints
  // them (row_to_json would print timestamps in ISO form, and numbers as
  // JSON numbers, which lose digits past 2^53 once parsed). An array, not
  // json_build_object: that takes at most 100 arguments, 50 columns.
  const texts = (x: string) =>
    `to_json(ARRAY[${t.columns.map((c) => `${x}.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}])`;
  const r = await client.query<{
    op: Conflict['op'];
    b: string | null;
    a: string | null;
    l: string | null;
    w: string | null;
  }>(
    `SELECT u."fb op" AS op, u."fb why" AS w,
            (SELECT ${texts('b')} FROM pg_temp.fb_undo_before_${i} b WHERE ${keyEq('b', 'u')}) AS b,
            (SELECT ${texts('a')} FROM pg_temp.fb_undo_after_${i} a WHERE ${keyEq('a', 'u')}) AS a,
            (SELECT ${texts('l')} FROM ONLY ${qualify(t.schema, t.name)} l WHERE ${keyEq('l', 'u')}) AS l
       FROM ${u} u WHERE u."fb conflict" LIMIT ${CONFLICT_SAMPLES}`,
  );
  const text = (raw: string | null) => {
    // json arrives as text (src/pg/connect.ts keeps every value's text form).
    if (raw === null) return null;
    const values = JSON.parse(raw) as Array<string | null>;
    return Object.fromEntries(t.columns.map((c, k) => [c, values[k] ?? null]));
  };
  return r.rows.map((x) => ({
    table: name(t),
    op: x.op,
    before: text(x.b),
    after: text(x.a),
    now: text(x.l),
    ...(x.w === null ? {} : { why: x.w }),
  }));
}

/**
 * Conflicts of a table without a key: no row can be looked up by key, so
 * each shows the one version it is about (the row to put back, or the row
 * the changes added) and why.
 */
async function keylessConflicts(
  client: PgClient,
  t: TableSnapshot,
  u: string,
): Promise<Conflict[]> {
  const r = await client.query<{ op: Conflict['op']; v: string; w: string | null }>(
    `SELECT u."fb op" AS op, u."fb why" AS w,
            to_json(ARRAY[${t.columns.map((c) => `u.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]) AS v
       FROM ${u} u WHERE u."fb conflict" LIMIT ${CONFLICT_SAMPLES}`,
  );
  return r.rows.map((x) => {
    const values = JSON.parse(x.v) as Array<string | null>;
    const row = Object.fromEntries(t.columns.map((c, k) => [c, values[k] ?? null]));
    const put = x.op === 'reinsert';
    return {
      table: name(t),
      op: x.op,
      before: put ? row : null,
      after: put ? null : row,
      now: null,
      why:
        x.w ??
        (put
          ? 'the table has no key: it holds as many copies of this row now as it did before the changes (put back already, or written again since)'
          : 'the table has no key: the row the changes added is no longer in it (changed or deleted since)'),
    };
  });
}

/** A statement of the apply, whole and per tenant ($1 = the tenant's value as text). */
interface Statement {
  readonly kind: 'reinsert' | 'revert' | 'delete';
  /** The table it writes (schema.name). */
  readonly table: string;
  readonly sql: string;
  byTenant(column: string): string;
  /**
   * The same without re-checking each row against the live table, tried
   * first: a row written again since the plan then fails it (a unique
   * violation), and `sql` runs instead. Under skip, a reinsert's re-check
   * (NOT EXISTS) looks each key up once more before the insert does: 0.28 s
   * against 0.19 s for 100,000 rows.
   */
  readonly fast?: { readonly sql: string; byTenant(column: string): string } | undefined;
}

/**
 * The orders tried after the usual one (each keeps the statements' relative
 * order within a kind). The usual order puts rows back before removing
 * others, which foreign keys need (a row reverted to point at a parent that
 * is put back; a parent deleted only once nothing points at it); but when a
 * unique value moved between rows (an UPDATE of a key, or of a unique
 * column, from one row to another), putting the old row back first collides
 * with the row that holds the value now: that row must be deleted, or
 * reverted, first.
 */
const OTHER_ORDERS: ReadonlyArray<ReadonlyArray<Statement['kind']>> = [
  ['delete', 'reinsert', 'revert'],
  ['delete', 'revert', 'reinsert'],
];

/** The order of statements that applied, and how many rows each wrote. */
interface PlanRun {
  readonly order: readonly Statement[];
  readonly rows: ReadonlyMap<Statement, number>;
}

/**
 * Runs the plan in the caller's transaction: in the usual order, and if a
 * unique constraint refuses it, in the other orders (OTHER_ORDERS), each from
 * a savepoint. Returns the order that worked, with the rows each statement
 * wrote (under skip, fewer than planned when rows were written again since
 * the plan); throws the usual order's error (naming the others') when none
 * does.
 */
async function runPlan(
  client: PgClient,
  statements: readonly Statement[],
  /** Whether other orders may be tried (see `reorderable` in undo()). */
  reorderable: boolean,
  tenant?: { column: string; value: string | null },
): Promise<PlanRun> {
  const one = async (s: Pick<Statement, 'sql' | 'byTenant'>): Promise<number> =>
    (tenant === undefined
      ? await client.query(s.sql)
      : await client.query(s.byTenant(tenant.column), [tenant.value])
    ).rowCount ?? 0;
  const run = async (order: readonly Statement[]): Promise<PlanRun> => {
    const rows = new Map<Statement, number>();
    for (const s of order) {
      if (s.fast === undefined) {
        rows.set(s, await one(s));
        continue;
      }
      await client.query('SAVEPOINT flashback_fast');
      try {
        rows.set(s, await one(s.fast));
        await client.query('RELEASE SAVEPOINT flashback_fast');
      } catch (err) {
        if ((err as { code?: unknown }).code !== '23505') throw err;
        await client.query('ROLLBACK TO SAVEPOINT flashback_fast');
        rows.set(s, await one(s));
      }
    }
    return { order, rows };
  };
  await client.query('SAVEPOINT flashback_plan');
  let first: unknown;
  try {
    return await run(statements);
  } catch (err) {
    // unique_violation, exclusion_violation: a value held by another row now.
    const code = (err as { code?: unknown }).code;
    if (!reorderable || (code !== '23505' && code !== '23P01')) throw err;
    first = err;
  }
  const also: string[] = [];
  for (const kinds of OTHER_ORDERS) {
    await client.query('ROLLBACK TO SAVEPOINT flashback_plan');
    const order = kinds.flatMap((k) => statements.filter((s) => s.kind === k));
    try {
      return await run(order);
    } catch (err) {
      also.push(`${kinds.join(', ')}: ${serverErrorText(err)}`);
    }
  }
  // Keeps the SQLSTATE of the usual order's failure.
  throw Object.assign(
    new Error(`${serverErrorText(first)} (in other orders too: ${also.join('; ')})`, {
      cause: first,
    }),
    { code: (first as { code?: unknown }).code },
  );
}

/** The apply, in an order foreign keys accept: reinserts and reverts parents first, deletes children first. */
function applyStatements(
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  schema: SchemaModel,
  policy: ConflictPolicy,
  cascades: ReadonlyMap<string, readonly Cascade[]>,
): Statement[] {
  const out: Statement[] = [];
  const cond = policy === 'skip' ? ' AND NOT u."fb conflict"' : '';
  // Conflicts are found when the plan is made; rows can be written again
  // between then and the apply (a prompt, earlier tenants). Under skip and
  // fail, each statement re-checks the live row as it changes it (under
  // fail, a row left so fails the apply: see undoLocked).
  const liveIs = (t: TableSnapshot) =>
    policy !== 'overwrite'
      ? ` AND ARRAY[${t.columns.map((c) => `l.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]::text[] IS NOT DISTINCT FROM u."fb after"`
      : '';
  const tenant = (sql: string) => (column: string) =>
    `${sql} AND u.${quoteIdent(column)}::text IS NOT DISTINCT FROM $1`;
  for (const { t, u } of staged) {
    const target = `${qualify(t.schema, t.name)}`;
    const cols = t.columns.map(quoteIdent).join(', ');
    if (t.key.length === 0) {
      // Rows without a key come back as they were, but for copies that are back already (stageKeyless).
      const ins = `INSERT INTO ${target}${columnList(t.columns)}${overriding(schema, t)} SELECT ${cols} FROM ${u} u WHERE u."fb op" = 'reinsert'${cond}`;
      out.push({ kind: 'reinsert', table: name(t), sql: ins, byTenant: tenant(ins) });
      continue;
    }
    const keyEq = (x: string, y: string) =>
      t.key.map((c) => `${x}.${quoteIdent(c)} = ${y}.${quoteIdent(c)}`).join(' AND ');
    const rest = t.columns.filter((c) => !t.key.includes(c));
    // The key is set back too where only its text changed (see planTable's "fb changed").
    const settable = t.columns.filter((c) => !alwaysIdentity(schema, t).has(c));
    const upsert =
      policy === 'overwrite' && rest.length > 0
        ? ` ON CONFLICT (${t.key.map(quoteIdent).join(', ')}) DO UPDATE SET ${rest.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ')}`
        : policy === 'overwrite'
          ? ' ON CONFLICT DO NOTHING'
          : '';
    const absent =
      policy !== 'overwrite'
        ? ` AND NOT EXISTS (SELECT 1 FROM ONLY ${target} l WHERE ${keyEq('l', 'u')})`
        : '';
    const unchecked = `INSERT INTO ${target}${columnList(t.columns)}${overriding(schema, t)} SELECT ${cols} FROM ${u} u WHERE u."fb op" = 'reinsert'${cond}`;
    const reinsert = `${unchecked}${absent}`;
    // The tenant filter must come before ON CONFLICT: build both forms.
    out.push({
      kind: 'reinsert',
      table: name(t),
      sql: `${reinsert}${upsert}`,
      byTenant: (column) => `${tenant(reinsert)(column)}${upsert}`,
      fast: absent === '' ? undefined : { sql: unchecked, byTenant: tenant(unchecked) },
    });
    // Rows whose key only changed its text are reverted by a statement of
    // their own that sets the key too: the others' UPDATE leaves the key
    // columns out, so it fires no UPDATE OF key trigger and needs no
    // privilege on them, as before.
    const keys = t.key.filter((c) => settable.includes(c));
    const keyChanged = `u."fb changed" && ARRAY[${keys.map(quoteLiteral).join(', ')}]::text[]`;
    const revertOf = (columns: readonly string[], rows: string) =>
      `UPDATE ONLY ${target} l SET ${columns
        .map(
          (c) =>
            `${quoteIdent(c)} = CASE WHEN ${quoteLiteral(c)} = ANY (u."fb changed") THEN u.${quoteIdent(c)} ELSE l.${quoteIdent(c)} END`,
        )
        .join(
          ', ',
        )} FROM ${u} u WHERE ${keyEq('l', 'u')} AND u."fb op" = 'revert'${rows}${cond}${liveIs(t)}`;
    if (rest.length > 0) {
      const revert = revertOf(rest, keys.length > 0 ? ` AND NOT (${keyChanged})` : '');
      out.push({ kind: 'revert', table: name(t), sql: revert, byTenant: tenant(revert) });
    }
    if (keys.length > 0) {
      const revert = revertOf([...rest, ...keys], ` AND ${keyChanged}`);
      out.push({ kind: 'revert', table: name(t), sql: revert, byTenant: tenant(revert) });
    }
  }
  for (const { t, u } of [...staged].reverse()) {
    if (t.key.length === 0) {
      // One live row per planned delete: identical rows are told apart by position (ctid).
      const whole = (a: string) =>
        `ARRAY[${t.columns.map((c) => `${a}.${quoteIdent(c)}::text COLLATE "C"`).join(', ')}]::text[]`;
      const planned = (extra: string) =>
        `SELECT ${whole('u')} FROM ${u} u WHERE u."fb op" = 'delete'${cond}${extra}`;
      const del = (extra: string) =>
        `DELETE FROM ONLY ${qualify(t.schema, t.name)} l WHERE l.ctid = ANY (ARRAY(
           SELECT y.ctid FROM (
             SELECT l2.ctid, ${whole('l2')} AS k, row_number() OVER (PARTITION BY ${whole('l2')}) AS rn
               FROM ONLY ${qualify(t.schema, t.name)} l2 WHERE ${whole('l2')} IN (${planned(extra)})) y
            WHERE y.rn <= (SELECT count(*) FROM (${planned(extra)}) p(k) WHERE p.k = y.k)))`;
      out.push({
        kind: 'delete',
        table: name(t),
        sql: del(''),
        byTenant: (column) => del(` AND u.${quoteIdent(column)}::text IS NOT DISTINCT FROM $1`),
      });
      continue;
    }
    const keyEq = t.key.map((c) => `l.${quoteIdent(c)} = u.${quoteIdent(c)}`).join(' AND ');
    // Under skip (and fail), a row still referenced through a cascading key
    // when its turn comes (children in the plan are deleted before it) is
    // left in place.
    const referenced =
      policy !== 'overwrite'
        ? (cascades.get(name(t)) ?? []).map((r) => ` AND NOT (${r.referencedNow('l')})`).join('')
        : '';
    const del = `DELETE FROM ONLY ${qualify(t.schema, t.name)} l USING ${u} u WHERE ${keyEq} AND u."fb op" = 'delete'${cond}${liveIs(t)}${referenced}`;
    out.push({ kind: 'delete', table: name(t), sql: del, byTenant: tenant(del) });
  }
  return out;
}

/** What an INSERT of a table's rows as they were needs when a column is GENERATED ALWAYS AS IDENTITY. */
/** Columns of `t` GENERATED ALWAYS AS IDENTITY: an UPDATE may not set them, even to themselves. */
function alwaysIdentity(schema: SchemaModel, t: TableSnapshot): Set<string> {
  return new Set(
    schema.tables
      .find((m) => m.schema === t.schema && m.name === t.name)
      ?.columns.filter((c) => c.identity === 'always')
      .map((c) => c.name) ?? [],
  );
}

function overriding(schema: SchemaModel, t: TableSnapshot): string {
  const always = schema.tables
    .find((m) => m.schema === t.schema && m.name === t.name)
    ?.columns.some((c) => c.identity === 'always');
  return always === true ? ' OVERRIDING SYSTEM VALUE' : '';
}

/** A foreign key that deleting a row of a table would act on (ON DELETE CASCADE, SET NULL, SET DEFAULT). */
interface Cascade {
  /** Why a delete it would reach is a conflict, for the report: the child and the action. */
  readonly why: string;
  /** SQL: rows of the child reference `alias`'s row and are not themselves deleted by the plan. */
  remains(alias: string): string;
  /** SQL: rows of the child reference `alias`'s row now. */
  referencedNow(alias: string): string;
}

/** The cascading references to `t`, read from the live catalog (they act there, not in the snapshot). */
async function cascadingReferences(
  client: PgClient,
  t: TableSnapshot,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  policy: ConflictPolicy,
): Promise<Cascade[]> {
  const r = await client.query<{ s: string; n: string; cc: string; pc: string; act: string }>(
    `SELECT cn.nspname AS s, cl.relname AS n, k.confdeltype AS act,
            ${FK_COLUMNS}
       FROM pg_constraint k
       JOIN pg_class cl ON cl.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace
      WHERE k.contype = 'f' AND k.confdeltype IN ('c', 'n', 'd')
        AND k.confrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = $1 AND c.relname = $2)`,
    [t.schema, t.name],
  );
  return r.rows.map((row) => {
    const cc = JSON.parse(row.cc) as string[];
    const pc = JSON.parse(row.pc) as string[];
    const child = qualify(row.s, row.n);
    const match = (alias: string) =>
      cc.map((c, i) => `c.${quoteIdent(c)} = ${alias}.${quoteIdent(pc[i]!)}`).join(' AND ');
    const planned = staged.find((x) => x.t.schema === row.s && x.t.name === row.n);
    // A child the plan deletes, or reverts to point elsewhere (the undo of
    // an ON UPDATE CASCADE that followed a key change), will not be there
    // for the action to reach.
    const notPlanned =
      planned === undefined || planned.t.key.length === 0
        ? ''
        : ` AND NOT EXISTS (SELECT 1 FROM ${planned.u} cu WHERE ${planned.t.key
            .map((k) => `cu.${quoteIdent(k)} = c.${quoteIdent(k)}`)
            .join(
              ' AND ',
            )}${policy === 'skip' ? ' AND NOT cu."fb conflict"' : ''} AND (cu."fb op" = 'delete' OR (cu."fb op" = 'revert' AND ROW(${cc
            .map((c) => `cu.${quoteIdent(c)}`)
            .join(', ')}) IS DISTINCT FROM ROW(${pc
            .map((c) => `ALIAS.${quoteIdent(c)}`)
            .join(', ')}))))`;
    const action = {
      c: 'CASCADE would delete',
      n: 'SET NULL would change',
      d: 'SET DEFAULT would change',
    }[row.act];
    return {
      why: `rows of ${child} that refer to it are not deleted by this undo (written since, or in a table it leaves alone): ON DELETE ${action} them`,
      remains: (alias) =>
        `EXISTS (SELECT 1 FROM ONLY ${child} c WHERE ${match(alias)}${notPlanned.replaceAll('ALIAS.', `${alias}.`)})`,
      referencedNow: (alias) => `EXISTS (SELECT 1 FROM ONLY ${child} c WHERE ${match(alias)})`,
    };
  });
}

/**
 * Gives each plan row its tenant group (TENANT_GROUP): the text of `by`.
 * Both halves of a key change go in one group (the smaller value of the
 * two; a chain of changes, the smallest of it): a change that also moved
 * the row to another tenant would otherwise be undone by halves in two
 * transactions, the row under its new key left beside the one put back.
 */
async function tenantGroups(
  client: PgClient,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  by: string,
  moved: (t: TableSnapshot) => ReadonlyMap<string, string>,
): Promise<void> {
  for (const [i, { t, u }] of staged.entries()) {
    if (!t.columns.includes(by)) {
      throw new UsageError(`--by ${by}: table ${name(t)} has no column "${by}"`, {
        hint: 'undo those tables separately (--table), or choose a column every changed table has',
      });
    }
    await client.query(
      `ALTER TABLE ${u} ADD COLUMN ${quoteIdent(TENANT_GROUP)} text; UPDATE ${u} SET ${quoteIdent(TENANT_GROUP)} = ${quoteIdent(by)}::text`,
    );
    if (t.key.length === 0 || moved(t).size === 0) continue;
    await movesTable(client, t, u, i, moved(t));
    const is = (x: string, p: string) => movedSide(t, x, p);
    // (Any fixed order will do; NULL, a tenant too, sorts last.)
    const rank = (x: string) =>
      `ROW(${x}.${quoteIdent(TENANT_GROUP)} IS NULL, ${x}.${quoteIdent(TENANT_GROUP)} COLLATE "C")`;
    for (;;) {
      const r = await client.query(
        `UPDATE ${u} x SET ${quoteIdent(TENANT_GROUP)} = y.${quoteIdent(TENANT_GROUP)}
           FROM pg_temp.fb_undo_moves_${i} m, ${u} y
          WHERE ((${is('x', 'from')} AND ${is('y', 'to')}) OR (${is('x', 'to')} AND ${is('y', 'from')}))
            AND ${rank('y')} < ${rank('x')}`,
      );
      if ((r.rowCount ?? 0) === 0) break;
    }
  }
}

/**
 * After a tenant group's statements, before its commit: the key changes of
 * the group done by halves (the old key put back and the row under its new
 * key left, or the new one deleted and the old not put back), which the
 * statements' own checks can leave when the rows they depend on belong to
 * other groups (children moved by ON UPDATE CASCADE, deleted by another
 * tenant's transaction). Says which, or undefined.
 */
async function splitMoves(
  client: PgClient,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  moved: (t: TableSnapshot) => ReadonlyMap<string, string>,
  tenant: string | null,
): Promise<string | undefined> {
  for (const [i, { t, u }] of staged.entries()) {
    if (t.key.length === 0 || moved(t).size === 0) continue;
    const is = (x: string, p: string) => movedSide(t, x, p);
    const there = (x: string) =>
      `EXISTS (SELECT 1 FROM ONLY ${qualify(t.schema, t.name)} l WHERE ${t.key.map((c) => `l.${quoteIdent(c)} = ${x}.${quoteIdent(c)}`).join(' AND ')})`;
    const r = await client.query<{ k: string }>(
      `SELECT ${t.key.map((c) => `a.${quoteIdent(c)}::text COLLATE "C"`).join(" || ', ' || ")} AS k
         FROM pg_temp.fb_undo_moves_${i} m, ${u} a, ${u} b
        WHERE ${is('a', 'from')} AND ${is('b', 'to')} AND NOT a."fb conflict" AND NOT b."fb conflict"
          AND a."fb op" = 'reinsert' AND b."fb op" = 'delete'
          AND a.${quoteIdent(TENANT_GROUP)} IS NOT DISTINCT FROM $1
          AND ${there('a')} = ${there('b')}
        LIMIT 1`,
      [tenant],
    );
    const k = r.rows[0]?.k;
    if (k !== undefined) {
      return `the key change of row (${k}) of ${name(t)} would be undone by halves (rows it depends on, through foreign keys, are in other tenants' groups)`;
    }
  }
  return undefined;
}

/** A foreign key's columns (pg_constraint `k`), in order: the child's `cc`, the parent's `pc`, as JSON arrays. */
const FK_COLUMNS = `array_to_json(ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY x(num, ord)
                                JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.num ORDER BY x.ord))::text AS cc,
            array_to_json(ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY x(num, ord)
                                JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.num ORDER BY x.ord))::text AS pc`;

/** A foreign key between two staged tables: the child's columns referring to the parent's. */
interface StagedLink {
  readonly child: { readonly t: TableSnapshot; readonly u: string };
  readonly parent: { readonly t: TableSnapshot; readonly u: string };
  readonly childColumns: readonly string[];
  readonly parentColumns: readonly string[];
}

/** The foreign keys (as the live catalog has them now) from one staged keyed table to another. */
async function stagedForeignKeys(
  client: PgClient,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
): Promise<StagedLink[]> {
  const keyed = staged.filter((x) => x.t.key.length > 0);
  if (keyed.length < 1) return [];
  const r = await client.query<{
    cs: string;
    cn: string;
    ps: string;
    pn: string;
    cc: string;
    pc: string;
  }>(
    `SELECT cn.nspname AS cs, cl.relname AS cn, pn.nspname AS ps, pl.relname AS pn,
            ${FK_COLUMNS}
       FROM pg_constraint k
       JOIN pg_class cl ON cl.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cl.relnamespace
       JOIN pg_class pl ON pl.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pl.relnamespace
      WHERE k.contype = 'f'`,
  );
  const find = (schema: string, table: string) =>
    keyed.find((x) => x.t.schema === schema && x.t.name === table);
  return r.rows.flatMap((row) => {
    const child = find(row.cs, row.cn);
    const parent = find(row.ps, row.pn);
    if (child === undefined || parent === undefined) return [];
    return [
      {
        child,
        parent,
        childColumns: JSON.parse(row.cc) as string[],
        parentColumns: JSON.parse(row.pc) as string[],
      },
    ];
  });
}

/**
 * Under skip: marks as conflicts the rows to put back (reinserts, and
 * reverts that change a referencing column) that refer to a parent row the
 * plan leaves alone as a conflict (not put back). Put back, such a row
 * would fail the whole undo on its foreign key, or, where a row written
 * since holds the parent's key now (SET NULL undone), point at that
 * unrelated row. Returns how many rows it marked.
 */
async function holdChildren(client: PgClient, links: readonly StagedLink[]): Promise<number> {
  let marked = 0;
  for (const l of links) {
    const names = `ARRAY[${l.childColumns.map(quoteLiteral).join(', ')}]::text[]`;
    const match = l.childColumns
      .map((c, j) => `y.${quoteIdent(l.parentColumns[j]!)} = x.${quoteIdent(c)}`)
      .join(' AND ');
    const r = await client.query(
      `UPDATE ${l.child.u} x SET "fb conflict" = true, "fb why" = coalesce(x."fb why", $1)
        WHERE NOT x."fb conflict"
          AND (x."fb op" = 'reinsert' OR (x."fb op" = 'revert' AND x."fb changed" && ${names}))
          AND EXISTS (SELECT 1 FROM ${l.parent.u} y WHERE y."fb conflict" AND y."fb op" = 'reinsert' AND ${match})`,
      [
        `it refers to a row of ${name(l.parent.t)} that is left alone as a conflict (not put back): put back, it would point at whatever holds that key now, or not apply`,
      ],
    );
    marked += r.rowCount ?? 0;
  }
  return marked;
}

/** Tenants (values of `column` in the plan rows), the given order first, then the rest ascending. */
async function tenantValues(
  client: PgClient,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  column: string,
  order: readonly string[],
  policy: ConflictPolicy,
): Promise<Array<{ value: string | null; rows: number }>> {
  const counts = new Map<string | null, number>();
  for (const { u } of staged) {
    const r = await client.query<{ v: string | null; n: string }>(
      `SELECT ${quoteIdent(column)}::text AS v, count(*)::text AS n FROM ${u}${policy === 'skip' ? ' WHERE NOT "fb conflict"' : ''} GROUP BY 1`,
    );
    for (const x of r.rows) counts.set(x.v, (counts.get(x.v) ?? 0) + Number(x.n));
  }
  const out: Array<{ value: string | null; rows: number }> = [];
  for (const v of order) {
    if (counts.has(v)) {
      out.push({ value: v, rows: counts.get(v)! });
      counts.delete(v);
    }
  }
  const rest = [...counts.entries()].sort(([x], [y]) => compareText(x, y));
  for (const [value, rows] of rest) out.push({ value, rows });
  return out;
}

function compareText(x: string | null, y: string | null): number {
  if (x === y) return 0;
  if (x === null) return 1;
  if (y === null) return -1;
  if (/^-?\d+$/.test(x) && /^-?\d+$/.test(y)) return BigInt(x) < BigInt(y) ? -1 : 1;
  return x < y ? -1 : 1;
}

/**
 * The exact SQL of the apply as a psql script: the staged plan rows (COPY
 * data, so the script is self-contained and reviewable), then the statements.
 */
async function writeScript(
  client: PgClient,
  file: string,
  staged: ReadonlyArray<{ t: TableSnapshot; u: string }>,
  statements: readonly Statement[],
  base: { target: string; selection: string; snapshot: string },
  off: readonly SuspendedTrigger[],
): Promise<void> {
  const { to: copyTo } = await import('pg-copy-streams');
  const encoding = (
    await client.query<{ e: string }>("SELECT current_setting('client_encoding') AS e")
  ).rows[0]!.e;
  // Streamed: the staged rows of a long window need not fit in memory.
  await writeWhole(file, async (put) => {
    await put(
      [
        `-- flashback undo of ${base.selection} on target "${base.target}" (rows before the window from snapshot ${base.snapshot} and the change log)`,
        // (Not --single-transaction: the script is its own BEGIN … COMMIT.)
        '-- Review, then run with: psql -v ON_ERROR_STOP=1 -f THIS_FILE (one transaction: BEGIN … COMMIT below)',
        'BEGIN;',
        // The settings the plan was made under: the statements compare live
        // rows with the plan's as text (a timestamptz's text depends on
        // TimeZone, an interval's on IntervalStyle), and the COPY data below
        // is in this encoding. Without them, a psql session in another time
        // zone would match no row and change nothing, without an error.
        // (Not search_path: the apply writes in the database's own, for its
        // triggers, and so does the script, in psql's.)
        ...SESSION_SETTINGS.filter(([name]) => name !== 'search_path').map(
          ([name, value]) => `SET LOCAL ${name} = ${value};`,
        ),
        `SET LOCAL client_encoding = '${encoding.replaceAll("'", "''")}';`,
        '',
      ].join('\n'),
    );
    for (const { t, u } of staged) {
      const tmp = u.slice('pg_temp.'.length);
      await put(
        [
          `CREATE TEMP TABLE ${tmp} (LIKE ${qualify(t.schema, t.name)}) ON COMMIT DROP;`,
          `ALTER TABLE ${tmp} ${PLAN_COLUMNS};`,
          `COPY ${tmp} (${[...t.columns.map(quoteIdent), ...PLAN_COLUMN_NAMES].join(', ')}) FROM stdin;`,
          '',
        ].join('\n'),
      );
      // (The columns the script's table has: not a placeholder of a dropped
      // column, nor the apply's tenant group.)
      const cols = [...t.columns.map(quoteIdent), ...PLAN_COLUMN_NAMES].join(', ');
      for await (const b of client.query(
        copyTo(`COPY (SELECT ${cols} FROM ${u}) TO STDOUT`),
      ) as AsyncIterable<Buffer>)
        await put(b);
      await put('\\.\n');
    }
    for (const s of disableStatements(off)) await put(`${s};\n`);
    for (const s of statements) await put(`${s.sql};\n`);
    for (const s of enableStatements(off)) await put(`${s};\n`);
    await put('COMMIT;\n');
  });
}
