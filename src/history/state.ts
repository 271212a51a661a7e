/**
 * The state of a target at any moment: the newest snapshot before it, plus
 * the change log from that snapshot's LSN up to the moment, merged chunk by
 * chunk (not replayed statement by statement).
 *
 * 1. `planPointInTime` picks the snapshot and checks that the log covers the
 *    way from it to the moment (no gap at the start, stored far enough);
 * 2. `buildOverlay` reads the log's transactions in that window once and
 *    keeps, per table, only the net effect: the last version of each changed
 *    key (or its deletion), truncations, and for tables without a key the
 *    rows added and removed;
 * 3. `pointInTimeSource` is a restore TableSource: each snapshot chunk is
 *    streamed with the overlay applied (a deleted key dropped, a changed key
 *    replaced, in place), and after a table's last chunk the keys the
 *    snapshot did not have are appended. A restore at a moment then runs at
 *    the speed of a snapshot restore.
 *
 * Memory: the overlay holds the net changes of the window (one entry per
 * changed key), not the table; the chunks stream as in any restore.
 */

import { parseSchemaEvent, recordsSchema, type SchemaEvent } from '../capture/schema-events.js';
import { DamagedError, OperationError, UsageError } from '../errors.js';
import { decodeField, encodeField, endOfFields, splitFields } from '../pg/copy-text.js';
import type { SchemaModel } from '../pg/schema/model.js';
import {
  type Change,
  type ChangeColumn,
  type ChangeLog,
  type ChangeValue,
  findCommitLsn,
  lsnText,
  lsnValue,
  missingSchemaRecord,
  newestStoredTime,
  type ReadOptions,
  type StoredRelation,
  type StoredVisitor,
  scanTransactions,
  storedChange,
  type Transaction,
  windowSegments,
} from '../repo/changelog.js';
import { emptyLayout, layoutOf, tupleHead, tupleInteger } from '../repo/changelog-format.js';
import {
  gapBetween,
  logForLsn,
  logForTime,
  snapshotsOfLog,
  targetLogs,
} from '../repo/changelogs.js';
import type { ChunkStore } from '../repo/chunks.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';
import {
  type ChunkRef,
  type SnapshotManifest,
  SnapshotStore,
  type TableSnapshot,
} from '../repo/snapshots.js';
import { type RowBlock, snapshotSource, type TableSource } from '../restore/load.js';
import {
  type ChunkPicker,
  canonicalIntegerField,
  type KeyCollection,
  type KeySet,
  keySet,
  lineWanted,
  pickJobs,
} from '../restore/pick.js';
import { pgTimestampToIso } from '../util/pg-time.js';
import {
  type Key,
  KeyedRows,
  LineBuffer,
  type RowVersion,
  resolveUnchanged,
  type SortedVersions,
} from './keyed-rows.js';
import { awaitLogReaches, type LogReachOptions } from './log-reach.js';
import {
  closeTables,
  emptyWindowState,
  noteMove,
  type ReadAs,
  readInParts,
  settleRemoved,
  untilLsnOf,
} from './overlay-parts.js';
import { ABSENT_FIELD, RowSpool } from './row-spool.js';
import {
  type Before,
  fillAbsent,
  planSchemaChanges,
  type Reshape,
  reshapeBlock,
  type SchemaChanges,
  type ShapeTracker,
  sameMembers,
} from './schema-changes.js';
import { isoMicro } from './time.js';

/** A moment to rebuild: a time, a WAL position, or just before a transaction. */
export type PointInTime =
  /** Every transaction committed at or before this time (ISO 8601, UTC). */
  | { readonly kind: 'time'; readonly at: string }
  /** Every transaction whose commit record is before this LSN. */
  | { readonly kind: 'lsn'; readonly lsn: string }
  /** Every transaction committed before this one (which is left out, and everything after it). */
  | { readonly kind: 'xid'; readonly xid: number };

/** Per-table net effect of the log in the window. */
export interface TableOverlay {
  /** The table was truncated in the window: none of the snapshot's rows remain. */
  truncated: boolean;
  /** Keyed tables: key (COPY text of the key fields) → the row's last version (chunk column order), or null if deleted. */
  readonly byKey: KeyedRows;
  /**
   * Keyed tables: rows whose key an update changed, by their key now → the
   * key they had when the window opened (COPY text of the key fields). The
   * two keys' versions are one row's: undo treats them together.
   */
  readonly moved: Map<string, string>;
  /** Keyless tables: rows removed (as COPY lines) and how many times each. */
  readonly removed: Map<string, number>;
  /** Keyless tables: rows added (in memory up to a budget, then in a temporary file). */
  readonly added: RowSpool;
}

/** The overlay of a table nothing in the window changed. */
export function emptyTableOverlay(spoolBudget?: number, spoolFile?: number): TableOverlay {
  return {
    truncated: false,
    byKey: new KeyedRows(),
    moved: new Map(),
    removed: new Map(),
    added: new RowSpool(spoolBudget, spoolFile),
  };
}

/** Frees what an overlay holds outside memory (the keyless tables' spool files); it is not read after. */
export function closeOverlay(o: Overlay): void {
  closeTables(o);
}

/** The overlay of a window, and where it ends. */
export interface Overlay {
  readonly tables: ReadonlyMap<string, TableOverlay>;
  readonly transactions: number;
  readonly changes: number;
  /** The last transaction applied (undefined: none in the window). */
  readonly last: TransactionRef | undefined;
  /** The first transaction after the window, when the log has one (for --before-xid: that transaction). */
  readonly next: TransactionRef | undefined;
  /** Tables whose columns changed in the window: how their snapshot lines and absent values become the point's (schema-changes.ts). */
  readonly reshape: ReadonlyMap<string, Reshape>;
  /** How the window was read (overlay-parts.ts). */
  readonly readAs?: ReadAs | undefined;
  /** Changes of tables created in the window, per table, left out (buildOverlay's `createdInWindow`). */
  readonly createdInWindow?: ReadonlyMap<string, number> | undefined;
}

/** A transaction, as overlays name them. */
export interface TransactionRef {
  readonly xid: number;
  readonly commitLsn: string;
  readonly commitTime: string;
}

/** What a point-in-time rebuild uses. */
export interface PointInTimePlan {
  readonly manifest: SnapshotManifest<SchemaModel>;
  readonly log: ChangeLog;
  readonly point: PointInTime;
  /** For a point before a transaction: where that transaction committed, when looked up already. */
  readonly xidCommitLsn?: bigint | undefined;
}

/**
 * Picks the snapshot to start from and checks that the log covers the way to
 * the point. `snapshotRef` forces a snapshot (it must be before the point).
 */
export async function planPointInTime(
  repo: Repository,
  target: string,
  point: PointInTime,
  snapshotRef?: string,
  /** What needs the moment, in messages: a restore (default), or an undo of what came after it. */
  purpose: 'restore' | 'undo' = 'restore',
): Promise<PointInTimePlan> {
  const logs = await targetLogs(repo.storage, runScope(target));
  if (logs.length === 0) {
    const why =
      purpose === 'undo'
        ? 'undo reads the changes to undo from one'
        : 'a restore to a moment needs one';
    throw new UsageError(`target "${target}" has no change log: ${why}`, {
      hint: `start one with \`flashback capture ${target}\` (it covers changes from then on)`,
    });
  }
  // The log that holds the point (a target has several after `capture
  // --new-log`); for a transaction, the newest log that has it.
  let k = logs.length - 1;
  let xidCommitLsn: bigint | undefined;
  if (point.kind === 'time') k = logForTime(logs, point.at);
  else if (point.kind === 'lsn') {
    const found = logForLsn(logs, lsnValue(point.lsn));
    if ('gapAfter' in found) {
      throw new UsageError(
        `LSN ${point.lsn} is in no change log of "${target}": ${gapBetween(logs, found.gapAfter)}, and changes committed between the two were never captured`,
        { hint: 'choose a position one of the logs holds' },
      );
    }
    k = found.log;
  } else {
    for (let i = logs.length - 1; i >= 0; i--) {
      xidCommitLsn = await findCommitLsn(logs[i]!.log, point.xid);
      if (xidCommitLsn !== undefined) {
        k = i;
        break;
      }
    }
  }
  const { log, info } = logs[k]!;
  if (point.kind === 'time' && k < logs.length - 1) {
    // A moment after this log's end and before the next one began is in neither.
    const ends = await newestStoredTime(log, await log.segments());
    if (ends === undefined || ends < point.at) {
      throw new UsageError(
        `${point.at} is in no change log of "${target}": ${gapBetween(logs, k)}${ends === undefined ? '' : `; log ${k + 1}'s last stored moment is ${ends}`}, and changes committed between the two were never captured`,
        {
          hint: `choose a moment log ${k + 1} reaches, or one after log ${k + 2} began (with a snapshot taken since)`,
        },
      );
    }
  }
  const store = SnapshotStore.of(repo);
  const start = lsnValue(info.startLsn);
  const every = (await store.all(target)) as Array<SnapshotManifest<SchemaModel>>;
  const all = snapshotsOfLog(logs, k, every);
  // A snapshot is usable if the log covers everything after it.
  const joined = all.filter((m) => lsnValue(m.lsn) >= start);
  let candidates = joined;
  if (point.kind === 'lsn') {
    candidates = joined.filter((m) => lsnValue(m.lsn) <= lsnValue(point.lsn));
  } else if (point.kind === 'time') {
    // Every transaction in a snapshot committed before its consistent point
    // was reached; `consistentAt` (the server's clock just after) bounds that.
    candidates = joined.filter((m) => consistentAt(m) <= point.at);
  }
  let manifest: SnapshotManifest<SchemaModel> | undefined;
  if (snapshotRef !== undefined) {
    manifest = (await store.resolve(snapshotRef, target)) as SnapshotManifest<SchemaModel>;
    if (point.kind !== 'xid' && !candidates.some((m) => m.id === manifest!.id)) {
      throw new UsageError(
        `snapshot ${manifest.id} holds changes from after ${describePoint(point)}: a snapshot to start from must be from before the moment`,
        { hint: 'name an older snapshot, or leave it out to use the newest one before the moment' },
      );
    }
    if (!joined.includes(manifest) && !joined.some((m) => m.id === manifest!.id)) {
      throw new UsageError(
        logs.length > 1 && !all.some((m) => m.id === manifest!.id)
          ? `snapshot ${manifest.id} was not taken while log ${k + 1} of "${target}" was captured (${logs.length} logs; ${gapBetween(logs, Math.min(k, logs.length - 2))})`
          : `snapshot ${manifest.id} was taken before the change log of ${log.label} begins (${info.startLsn})`,
        { hint: 'use a snapshot taken after capture started' },
      );
    }
  } else if (point.kind === 'xid') {
    // The snapshot must be from before the transaction: where it committed (found above).
    const commitLsn = xidCommitLsn;
    if (commitLsn === undefined) {
      const stopped = await logStopped(log);
      throw new UsageError(
        `transaction ${point.xid} is not in the change log of "${target}"${stopped ?? ''}`,
        {
          hint:
            stopped === undefined
              ? 'check the id (txid_current() on the source, or `flashback history`), or choose a time'
              : `start capture (\`flashback capture ${target}\`) and let it catch up, then run this again`,
        },
      );
    }
    manifest = joined.filter((m) => lsnValue(m.lsn) <= commitLsn!).at(-1);
  } else {
    manifest = candidates[candidates.length - 1];
  }
  if (manifest === undefined) {
    // A manifest that cannot be read may be the very snapshot needed: damage,
    // not a moment out of reach (exit 8, and no hint to older data).
    const { unreadable } = await store.scan(target);
    if (unreadable.length > 0) {
      const ids = unreadable.map((u) => u.id);
      throw new DamagedError(
        'restore.base-unreadable',
        `no readable snapshot of "${target}" to start from for ${describePoint(point)}: the manifest of snapshot(s) ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ` and ${ids.length - 5} more` : ''} cannot be read (${unreadable[0]!.error.message}), and one of them may be the snapshot this moment needs`,
        {
          hint: 'copy the manifest back from a copy of the repository (`flashback check` lists what is damaged), or choose a moment after a snapshot that can be read',
        },
      );
    }
    throw new UsageError(
      `no snapshot of "${target}" to start from: ${purpose === 'undo' ? `undo rebuilds the rows as they were ${point.kind === 'time' ? `at ${point.at}` : describePoint(point)}, which needs` : `a restore to ${describePoint(point)} needs`} a snapshot taken after the change log${logs.length > 1 ? ` (log ${k + 1})` : ''} began (${info.startLsn}, ${info.created}) and before that moment`,
      { hint: noBaseHint(target, point, info.created, every) },
    );
  }
  return { manifest, log, point, xidCommitLsn };
}

/**
 * How far behind now (source time against this machine's clock) the log's
 * newest commit or heartbeat may be while capture runs: it stores a commit
 * within a second and a heartbeat every five, so a log more than this
 * behind has stopped, or fallen far behind.
 */
export const LOG_SLACK_MS = 10_000;

/**
 * When the log has stopped (LOG_SLACK_MS), a clause saying so, for a
 * message about something not found in it.
 */
export async function logStopped(log: ChangeLog): Promise<string | undefined> {
  const newest = (await newestStoredTime(log, await log.segments())) ?? '';
  if (newest >= isoMicro(Date.now() - LOG_SLACK_MS, '000')) return undefined;
  return `; the log reaches only ${newest || 'its start'} (is capture running?): what was committed after that is not in it`;
}

/**
 * What a rebuild of the point restores: the tables as they are at the point
 * (the snapshot's, or after schema changes in the window the point's own
 * schema, with the snapshot's rows laid out in it), and the window's overlay.
 */
export async function rebuildPlan(
  plan: PointInTimePlan,
  /** As the log is read (see buildOverlay's onProgress). */
  onProgress?: (p: OverlayProgress) => void,
  /**
   * The tables (schema.name) of the point's schema that will be restored;
   * only their changes are folded in (buildOverlay's `only`). Absent: all.
   * Throws (a UsageError) to refuse a selection before the log is read.
   */
  select?: (manifest: SnapshotManifest<SchemaModel>) => readonly string[] | undefined,
): Promise<{ manifest: SnapshotManifest<SchemaModel>; overlay: Overlay }> {
  const { point, log } = plan;
  const build = async (before: Before) => {
    let schema: SchemaChanges | undefined;
    try {
      schema = await planSchemaChanges(log, plan.manifest, before);
    } catch (err) {
      // The point's schema is not known (another change committed before
      // capture could read it): with tables chosen, they are read as the
      // snapshot has them, which refuses any of them the window changed
      // (columns, a rename, a retype) and restores those it left alone.
      const chosen = select?.(plan.manifest);
      if (!(err instanceof OperationError && err.code === 'restore.schema-unrecorded')) throw err;
      if (chosen === undefined) throw err;
      schema = undefined;
    }
    const manifest = schema?.manifest ?? plan.manifest;
    const only = select?.(manifest);
    // A table whose rows cannot be carried across the window's schema
    // changes refuses the restore only when it is restored.
    for (const [table, err] of schema?.refusals ?? []) {
      if (only === undefined || only.includes(table)) throw err;
    }
    return {
      schema,
      manifest,
      overlay: await buildOverlay(
        { ...plan, manifest },
        {
          schema,
          onProgress,
          only,
          requireSchemaRecords: true,
          // (With schema records, the tracker follows the tables instead.)
          refuseUnrecorded: schema === undefined,
        },
      ),
    };
  };
  if (point.kind !== 'time') {
    const lsn =
      point.kind === 'lsn'
        ? lsnValue(point.lsn)
        : (plan.xidCommitLsn ?? (await findCommitLsn(log, point.xid)) ?? 0n);
    const { manifest, overlay } = await build({ kind: 'lsn', lsn });
    return { manifest, overlay };
  }
  const first = await build({ kind: 'time', at: point.at });
  const next = first.overlay.next;
  // Reading by time stops at the first commit later than the moment, in log
  // order; commit times are not always in log order, so a schema change
  // timed before the moment can lie past that stop. Then the schema is
  // chosen again by the position where reading stopped.
  if (
    first.schema !== undefined &&
    next !== undefined &&
    first.schema.at.commitLsn >= lsnValue(next.commitLsn)
  ) {
    closeOverlay(first.overlay);
    const again = await build({ kind: 'lsn', lsn: lsnValue(next.commitLsn) });
    return { manifest: again.manifest, overlay: again.overlay };
  }
  return { manifest: first.manifest, overlay: first.overlay };
}

/**
 * What to do when no snapshot joins the log before the point: a backup now
 * serves moments from now on only, so for a moment already past say which
 * older snapshot is the closest state there is.
 */
function noBaseHint(
  target: string,
  point: PointInTime,
  logCreated: string,
  all: readonly SnapshotManifest[],
): string {
  const before =
    point.kind === 'time' ? all.filter((m) => consistentAt(m) <= point.at).at(-1) : undefined;
  const older =
    before === undefined
      ? ''
      : `the closest state before it is snapshot ${before.id} (${before.startedAt}): \`flashback restore ${before.id}\`; `;
  if (point.kind === 'time' && point.at < logCreated) {
    return `${older}the change log began at ${logCreated}: moments before that cannot be rebuilt`;
  }
  return `${older}a snapshot taken now (\`flashback backup ${target}\` while capture runs) serves moments from now on, not earlier ones`;
}

/** The latest time any transaction in a snapshot can have committed. */
function consistentAt(m: SnapshotManifest): string {
  const c = (m as { consistentAt?: string }).consistentAt ?? m.finishedAt;
  return c.length === 24 ? `${c.slice(0, 23)}000Z` : c;
}

export function describePoint(p: PointInTime): string {
  if (p.kind === 'time') return p.at;
  if (p.kind === 'lsn') return `LSN ${p.lsn}`;
  return `just before transaction ${p.xid}`;
}

/** How far buildOverlay has read the change log. */
export interface OverlayProgress {
  /** Transactions read whole. */
  readonly transactions: number;
  readonly changes: number;
  /** Commit time of the last transaction read (or being read). */
  readonly commitTime: string;
}

/**
 * Reads the window once and keeps the net effect per table. Throws when the
 * log does not reach the point (it would silently miss changes) or when a
 * table's columns changed in the window (not supported yet: said, not guessed).
 *
 * A long window is read in two parts at once, the later on a thread of its
 * own (overlay-parts.ts), and the parts merged: the same overlay, in about
 * half the time on two cores.
 */
export async function buildOverlay(
  plan: PointInTimePlan,
  options: {
    /** Start of the window (a commit LSN); default the snapshot's LSN. */
    readonly fromLsn?: bigint | undefined;
    /**
     * The window's schema changes (planSchemaChanges): rows are laid out
     * as the point's tables. Without it, a column change is refused, and so
     * is a rewrite or drop of a snapshot table.
     */
    readonly schema?: SchemaChanges | undefined;
    /** Bytes of added keyless rows held in memory per table before they go to a file (tests make it small). */
    readonly spoolBudget?: number | undefined;
    /** Every 10,000 transactions read, and every 100,000 changes of one, how far reading is (for progress). */
    readonly onProgress?: ((p: OverlayProgress) => void) | undefined;
    /**
     * Keep row versions as the log's bytes, reading each change in place
     * (default; tests compare it with decoding every change).
     */
    readonly inPlace?: boolean | undefined;
    /**
     * Read in two parts (readInParts): `'auto'` (default) when the window
     * is long and a thread can be started; `'thread'` whenever it has two
     * segments or more and a thread can be started; `'inline'` reads the
     * two parts one after the other on this thread (tests: the same merge,
     * without a thread); `false` in one part.
     */
    readonly parts?: 'auto' | 'thread' | 'inline' | false | undefined;
    /** How a moment the log does not reach yet is waited for (tests). */
    readonly reach?: LogReachOptions | undefined;
    /** Tables created in the window: their changes counted, not folded in (WindowSpec). */
    readonly createdInWindow?: readonly string[] | undefined;
    /** What the plan's tables stand for, in messages (WindowSpec). */
    readonly tablesOf?: string | undefined;
    /** Only these tables (schema.name) are folded in (WindowSpec). */
    readonly only?: readonly string[] | undefined;
    /** Refuse a column of the snapshot's tables dropped in the window (WindowSpec). */
    readonly refuseDroppedColumns?: boolean | undefined;
    /**
     * The point's tables come from the log's schema records: a schema
     * change without its record is damage (WindowSpec's `schemaRecords`).
     */
    readonly requireSchemaRecords?: boolean | undefined;
    /** Refuse a rename or retype the log shows with no schema record (WindowSpec). */
    readonly refuseUnrecorded?: boolean | undefined;
  } = {},
): Promise<Overlay> {
  const { manifest, log, point } = plan;
  const spec: WindowSpec = {
    snapshot: manifest,
    point,
    xidCommitLsn: plan.xidCommitLsn,
    fromLsn: options.fromLsn ?? lsnValue(manifest.lsn),
    spoolBudget: options.spoolBudget,
    createdInWindow: options.createdInWindow,
    tablesOf: options.tablesOf,
    only: options.only,
    refuseDroppedColumns: options.refuseDroppedColumns,
    refuseUnrecorded: options.refuseUnrecorded,
    snapshotColumns:
      options.refuseUnrecorded === true
        ? Object.fromEntries(
            (manifest.schema?.tables ?? []).map((m) => [
              `${m.schema}.${m.name}`,
              m.columns.map((c) => [c.name, c.type] as const),
            ]),
          )
        : undefined,
    schemaRecords:
      options.requireSchemaRecords === true
        ? { dir: log.dir, endLsns: (await log.schemaRecords()).map((r) => r.endLsn) }
        : undefined,
  };
  const state = emptyWindowState();
  const tracker = options.schema?.tracker(options.only);
  // Changes are read in place (applyStored) unless the window's schema
  // changes are followed: the tracker needs every change decoded.
  const inPlace = tracker === undefined && options.inPlace !== false;
  const read = { tracker, inPlace, onProgress: options.onProgress };
  // Before reading: a moment the log does not reach yet is waited for (the
  // last seconds, `--at now`) or refused, not found out after the read.
  if (point.kind === 'time') await awaitLogReaches(log, manifest.target, point.at, options.reach);
  const { segments, gap } = await windowSegments(log, spec.fromLsn);
  const parts = options.parts ?? 'auto';
  let readAs: ReadAs = 'one part';
  if (inPlace && parts !== false) {
    readAs = await readInParts({
      spec,
      state,
      log,
      segments,
      inline: parts === 'inline',
      // (Otherwise than 'auto': any window of two segments or more is split.)
      minBytes: parts === 'auto' ? undefined : 0,
      onProgress: options.onProgress,
      read: (s, boundary, progress, sp = spec) =>
        readWindow(sp, s, (o, visit) => scanTransactions(log, o, visit, boundary), {
          ...read,
          onProgress: progress,
        }),
    });
  } else {
    await readWindow(
      spec,
      state,
      (o, visit) => scanTransactions(log, o, visit, { segments }),
      read,
    );
  }
  const last: Overlay['last'] =
    state.lastXid === undefined
      ? undefined
      : {
          xid: state.lastXid,
          commitLsn: lsnText(state.lastCommitLsn),
          commitTime: pgTimestampToIso(state.lastMicros),
        };
  let newestTime = state.newestTime;
  if (state.newestMicros !== undefined) {
    const t = pgTimestampToIso(state.newestMicros);
    if (t > newestTime) newestTime = t;
  }
  const reshape = tracker?.reshapes() ?? new Map<string, Reshape>();
  await settleRemoved(state);
  refuseDeferrableKeyMoves(manifest, state.tables);
  // The log must reach the point, or changes after what is stored would be missed.
  // The log read up to a missing segment without reaching the point: the
  // changes it held are lost (a point before it was reached, and is whole).
  const reached =
    point.kind === 'xid'
      ? state.foundXid
      : point.kind === 'time'
        ? newestTime >= point.at
        : state.newestLsn >= lsnValue(point.lsn);
  if (!reached && gap !== undefined) throw gap;
  if (point.kind === 'xid' && !state.foundXid) {
    throw new UsageError(
      `transaction ${point.xid} is not in the change log of "${manifest.target}" after snapshot ${manifest.id}`,
      {
        hint: 'check the id (txid_current() on the source, or `flashback history`), or choose a time',
      },
    );
  }
  if (point.kind === 'time' && newestTime < point.at) {
    throw new UsageError(
      `the change log of "${manifest.target}" reaches only ${newestTime || manifest.finishedAt}: it cannot say what changed up to ${point.at}`,
      {
        hint: 'choose an earlier moment, or make sure capture is running (its heartbeats extend the log)',
      },
    );
  }
  if (point.kind === 'lsn' && state.newestLsn < lsnValue(point.lsn)) {
    throw new UsageError(
      `the change log of "${manifest.target}" reaches only ${lsnText(state.newestLsn)}: it cannot say what changed up to ${point.lsn}`,
      { hint: 'choose an earlier position, or make sure capture is running' },
    );
  }
  return {
    tables: state.tables,
    transactions: state.transactions,
    changes: state.changes,
    last,
    next: state.next,
    reshape,
    readAs,
    createdInWindow: state.createdInWindow,
  };
}

/** What reading a window needs besides the log: all of it can be sent to a thread. */
export interface WindowSpec {
  /** The snapshot the window starts from (its tables: what changes are folded into). */
  readonly snapshot: Pick<SnapshotManifest, 'id' | 'target' | 'tables'>;
  readonly point: PointInTime;
  /** For a point before a transaction: where it committed (reading stops at its Begin). */
  readonly xidCommitLsn?: bigint | undefined;
  /** Start of the window (a commit LSN). */
  readonly fromLsn: bigint;
  readonly spoolBudget?: number | undefined;
  /**
   * A later part of a window read in parts: a change it cannot fold in
   * without the versions of the parts before (unsent TOASTed values of a
   * moved key, or of a key deleted in this part) fails the reading, which
   * then happens after them.
   */
  readonly later?: boolean | undefined;
  /** Files (descriptors) keyless tables' added rows spill into, by schema.name (RowSpool's `borrowed`). */
  readonly spoolFiles?: Readonly<Record<string, number>> | undefined;
  /** A thread's arenas spill into this file (opened, and closed, by the main thread: arena.ts). */
  readonly arenaFile?: number | undefined;
  /** A thread's arena budget, in MiB (its parent's). */
  readonly arenaMemory?: number | undefined;
  /**
   * Tables (schema.name) not in `snapshot` that schema changes in the
   * window create: their changes are counted in the state's
   * `createdInWindow`, not folded in (undo: before the window there was no
   * table to put their rows back into). Also any table a schema event of
   * the window itself names. Without it such changes are refused.
   */
  readonly createdInWindow?: readonly string[] | undefined;
  /** What the snapshot's tables stand for, in messages (default "the snapshot"; undo: "the window's start"). */
  readonly tablesOf?: string | undefined;
  /**
   * Refuse (restore.schema-changed) a column of one of the snapshot's
   * tables (of `only`, when given) dropped by a schema change in the
   * window (undo: its values are gone from the live table, though no row
   * of it changed, so nothing else would say so).
   */
  readonly refuseDroppedColumns?: boolean | undefined;
  /**
   * Only these tables (schema.name, of `snapshot`) are folded in: the
   * changes of every other table are read past, unchecked (`restore --at
   * --table`: a table not restored can neither refuse the restore nor cost
   * memory). Absent: every table.
   */
  readonly only?: readonly string[] | undefined;
  /**
   * The log's schema records (its directory and their end LSNs). Given, a
   * transaction of the window that changed the schema without one fails
   * the reading as damage: a record deleted would otherwise go unnoticed,
   * and the point's tables be taken from an older one.
   */
  readonly schemaRecords?:
    | { readonly dir: string; readonly endLsns: readonly bigint[] }
    | undefined;
  /**
   * The snapshot's tables are the point's (no schema record in the window):
   * a change of the snapshot's tables the log shows only in its rows, a
   * table renamed or a column retyped (capture without event triggers
   * records neither), is refused, not rebuilt under the old name or type.
   */
  readonly refuseUnrecorded?: boolean | undefined;
  /**
   * With refuseUnrecorded: every column of each snapshot table (schema.name,
   * from its schema model), to tell a schema event that changed one of them
   * (a column added, dropped or renamed) when no record says what followed.
   */
  readonly snapshotColumns?:
    | Readonly<Record<string, readonly (readonly [name: string, type: string])[]>>
    | undefined;
}

/** What reading a window (or a part of it) gathers. */
export interface WindowState {
  /** Per table (schema.name) changed in the window. */
  readonly tables: Map<string, TableOverlay>;
  transactions: number;
  changes: number;
  /** The newest LSN and time the log showed (heartbeats, transactions, the first past the point). */
  newestLsn: bigint;
  newestTime: string;
  newestMicros: bigint | undefined;
  lastXid: number | undefined;
  lastCommitLsn: bigint;
  lastMicros: bigint;
  /** The first transaction past the point, once reading met it (then reading stopped). */
  next: TransactionRef | undefined;
  foundXid: boolean;
  /** Changes of tables created in the window, per table (WindowSpec.createdInWindow). */
  readonly createdInWindow: Map<string, number>;
}

/** Reads transactions for readWindow: scanTransactions (or scanContents) with the options and visitor given. */
export type WindowScan = (
  options: Omit<ReadOptions, 'decodedChanges'>,
  visit: (tx: Transaction) => boolean | undefined,
) => Promise<void>;

/**
 * Folds the transactions `scan` reads into `state`: the window's reading,
 * for all of it or for one part (overlay-parts.ts). Stops at the point
 * (state.next is then set).
 */
export async function readWindow(
  spec: WindowSpec,
  state: WindowState,
  scan: WindowScan,
  options: {
    readonly tracker?: ShapeTracker | undefined;
    readonly inPlace: boolean;
    readonly onProgress?: ((p: OverlayProgress) => void) | undefined;
  },
): Promise<void> {
  const { snapshot, point } = spec;
  const { tracker, inPlace } = options;
  const tables = state.tables;
  const byName = new Map(snapshot.tables.map((t) => [`${t.schema}.${t.name}`, t]));
  // A relation is its table by OID where both sides know it: a table renamed
  // in the window (a migration) keeps its rows under its name of the snapshot.
  const byOid = new Map(
    snapshot.tables.flatMap((t) => (t.oid === undefined ? [] : [[t.oid, t] as const])),
  );
  // Tables created in the window, when the caller leaves them out (and those
  // this part's own schema events name: a table created in the same
  // transaction as a rename has only its new name recorded beside the log).
  const created = spec.createdInWindow === undefined ? undefined : new Set(spec.createdInWindow);
  const only = spec.only === undefined ? undefined : new Set(spec.only);
  // Per table object, not per change: a name is built once per table.
  const chosenTables = new Map<TableSnapshot, boolean>();
  const chosen = (t: TableSnapshot): boolean => {
    if (only === undefined) return true;
    let yes = chosenTables.get(t);
    if (yes === undefined) {
      yes = only.has(`${t.schema}.${t.name}`);
      chosenTables.set(t, yes);
    }
    return yes;
  };
  const mappers = new Map<string, { columns: unknown; map: number[] | null }>();
  // (A string: a table created in the window, left out; null: a table not in `only`.)
  const resolved = new WeakMap<
    readonly ChangeColumn[],
    { t: TableSnapshot; ov: TableOverlay; map: number[] | null; later: boolean } | string | null
  >();
  // Each table's overlay, found by its snapshot object (no name built per change).
  const byTable = new Map<TableSnapshot, TableOverlay>();
  const overlayOf = (t: TableSnapshot): TableOverlay => {
    let ov = byTable.get(t);
    if (ov === undefined) {
      const name = `${t.schema}.${t.name}`;
      ov = tables.get(name) ?? emptyTableOverlay(spec.spoolBudget, spec.spoolFiles?.[name]);
      byTable.set(t, ov);
      tables.set(name, ov);
    }
    return ov;
  };
  const snapshotOids = new Set(snapshot.tables.map((t) => t.oid));
  const recorded =
    spec.schemaRecords === undefined ? undefined : new Set(spec.schemaRecords.endLsns);
  const untilLsn = untilLsnOf(spec);
  let tx!: Transaction;
  let events: readonly { at: number; event: string }[] | undefined;
  let e = 0;
  let i = -1;
  /** Before each change: progress, and the schema events that came before it. */
  const step = () => {
    i++;
    // Within a large transaction too (a DELETE of millions of rows is one).
    if (i > 0 && i % 100_000 === 0) {
      options.onProgress?.({
        transactions: state.transactions,
        changes: state.changes,
        commitTime: tx.commitTime,
      });
    }
    // Schema events apply where they happened among the transaction's changes.
    while (events !== undefined && e < events.length && events[e]!.at <= i) {
      schemaEvent(events[e++]!.event, tx);
    }
  };
  let lastColumns: readonly ChangeColumn[] | undefined;
  let lastResolved:
    | { t: TableSnapshot; ov: TableOverlay; map: number[] | null; later: boolean }
    | string
    | null
    | undefined;
  /**
   * The table a relation description names, found once per description; a
   * table created in the window (left out) as its name.
   */
  const resolve = (
    schema: string,
    table: string,
    columns: readonly ChangeColumn[],
    oid: number | undefined,
  ) => {
    // Every change of a relation description (one per segment) shares its
    // columns array: resolve the table once per description, not per change
    // (and a run of one table's changes without the WeakMap).
    if (columns === lastColumns) return lastResolved as Exclude<typeof lastResolved, undefined>;
    let r = resolved.get(columns);
    if (r === undefined) {
      const key = `${schema}.${table}`;
      // (By OID alone when it is known: a new table given the name of a
      // renamed one, as a migration swapping tables does, is another table.)
      const t = oid !== undefined && oid !== 0 && byOid.size > 0 ? byOid.get(oid) : byName.get(key);
      // (Tables created in the window are counted whatever `only` says: undo names them.)
      if (t === undefined && created?.has(key)) r = key;
      else if (only !== undefined && (t === undefined || !chosen(t))) r = null;
      else if (t === undefined) {
        throw new OperationError(
          'restore.table-not-in-snapshot',
          `table ${key} changed at ${tx.commitTime} (transaction ${tx.xid}) but is not in snapshot ${snapshot.id}, and no schema change recorded in the log creates it`,
          {
            hint: 'take a new backup (it includes the table) and restore to a moment after it; capture records table creation when it runs as a superuser (docs/CAPTURE.md, "Schema changes")',
          },
        );
      } else {
        if (spec.refuseUnrecorded === true)
          refuseUnrecorded(t, schema, table, columns, tx, snapshot.id);
        r = {
          t,
          ov: overlayOf(t),
          map: columnMap(
            t,
            { schema, table, columns },
            mappers,
            tx.commitTime,
            spec.tablesOf ?? 'the snapshot',
          ),
          later: spec.later === true,
        };
      }
      resolved.set(columns, r);
    }
    lastColumns = columns;
    lastResolved = r;
    return r;
  };
  const decoded = (c: Change) => {
    step();
    if (tracker !== undefined) {
      const p = tracker.resolve(c, tx.commitTime);
      if (p === null) return; // a table that does not exist at the point
      if (chosen(p.t)) applyChange(p.t, overlayOf(p.t), c, p.map);
      state.changes++;
      return;
    }
    const r = resolve(c.schema, c.table, c.columns, c.relid);
    if (typeof r === 'string') outside(r);
    else if (r !== null) applyChange(r.t, r.ov, c, r.map, spec.later);
    state.changes++;
  };
  const stored: StoredVisitor = (content, start, end, relation) => {
    step();
    const r = resolve(relation.schema, relation.name, relation.columns, relation.id);
    if (typeof r === 'string') outside(r);
    else if (r !== null) applyStored(r, content, start, end, relation);
    state.changes++;
  };
  const outside = (name: string) => {
    state.createdInWindow.set(name, (state.createdInWindow.get(name) ?? 0) + 1);
  };
  // Each transaction as it is read, in place: awaiting each of a million
  // cost more than folding its changes in.
  await scan(
    {
      fromLsn: spec.fromLsn,
      untilLsn,
      untilTime: point.kind === 'time' ? point.at : undefined,
      onHeartbeat: (lsn, at) => {
        if (lsn > state.newestLsn) state.newestLsn = lsn;
        if (at > state.newestTime) state.newestTime = at;
      },
      // (Capture stores a keepalive's position as the segment's `<committed>`
      // alone: what backup --from-log takes as the log's end.)
      onCompleteUpTo: (lsn) => {
        if (lsn > state.newestLsn) state.newestLsn = lsn;
      },
      onPastLimit: (lsn, at, xid) => {
        if (lsn > state.newestLsn) state.newestLsn = lsn;
        if (at > state.newestTime) state.newestTime = at;
        state.next = { xid, commitLsn: lsnText(lsn), commitTime: at };
        if (point.kind === 'xid' && xid === point.xid) state.foundXid = true;
      },
    },
    (t) => {
      tx = t;
      if (tx.endLsn > state.newestLsn) state.newestLsn = tx.endLsn;
      // (Kept as microseconds per transaction, made text once at the end.)
      if (state.newestMicros === undefined || tx.commitMicros > state.newestMicros) {
        state.newestMicros = tx.commitMicros;
      }
      if (point.kind === 'xid' && tx.xid === point.xid) {
        state.foundXid = true;
        state.next = { xid: tx.xid, commitLsn: lsnText(tx.commitLsn), commitTime: tx.commitTime };
        return false;
      }
      events = tx.schema;
      if (
        events !== undefined &&
        recorded !== undefined &&
        !recorded.has(tx.endLsn) &&
        recordsSchema(events)
      ) {
        throw missingSchemaRecord(spec.schemaRecords!.dir, tx);
      }
      if (events !== undefined) tracker?.beginTransaction(events.map((x) => x.event));
      e = 0;
      i = -1;
      if (inPlace) tx.changes.forEachStored(stored, decoded);
      else for (const c of tx.changes) decoded(c);
      while (events !== undefined && e < events.length) schemaEvent(events[e++]!.event, tx);
      state.transactions++;
      // (The transaction object is reused: what is kept of it is copied.)
      state.lastXid = tx.xid;
      state.lastCommitLsn = tx.commitLsn;
      state.lastMicros = tx.commitMicros;
      if (state.transactions % 10_000 === 0) {
        options.onProgress?.({
          transactions: state.transactions,
          changes: state.changes,
          commitTime: tx.commitTime,
        });
      }
      return undefined;
    },
  );

  /**
   * One schema event of the window. Followed by the tracker when the caller
   * lays rows out as the point's tables; otherwise the snapshot's layout
   * stays, which a rewrite or drop of one of its tables would make wrong
   * without a trace in the rows' columns (a column change shows there, and
   * columnMap refuses it).
   */
  function schemaEvent(content: string, tx: Transaction): void {
    if (tracker !== undefined) {
      tracker.apply(content, tx.commitTime);
      return;
    }
    let ev: SchemaEvent;
    try {
      ev = parseSchemaEvent(content);
    } catch {
      return; // unreadable here: a column change it made still shows in the rows
    }
    if (ev.kind === 'ddl' && created !== undefined) {
      for (const t of ev.tables) {
        if (!snapshotOids.has(t.oid)) created.add(`${t.schema}.${t.name}`);
      }
    }
    if (ev.kind === 'ddl' && spec.refuseUnrecorded === true) {
      // No record says what the tables are after this: one of the chosen
      // snapshot tables it changed cannot be rebuilt as the snapshot has it.
      for (const e of ev.tables) {
        const t = byOid.get(e.oid);
        if (t === undefined || !chosen(t)) continue;
        const all = spec.snapshotColumns?.[`${t.schema}.${t.name}`];
        const kept = e.columns.filter((c) => !c[3]);
        // (Names only: the event's types are format_type's in the session's
        // search_path, the model's in an empty one. A retype shows in the rows.)
        const same =
          e.schema === t.schema &&
          e.name === t.name &&
          (all === undefined ||
            (kept.length === all.length && kept.every((c) => all.some(([n]) => n === c[1]))));
        if (same) continue;
        throw new OperationError(
          'restore.schema-changed',
          `table ${t.schema}.${t.name} of snapshot ${snapshot.id} was changed at ${tx.commitTime} (transaction ${tx.xid}), and the schema after that change was not recorded: it cannot be rebuilt as it was`,
          {
            hint: 'choose a moment before that change, or after the next schema change capture recorded; take a new backup to restore moments after it',
          },
        );
      }
    }
    if (ev.kind === 'ddl' && spec.refuseDroppedColumns === true) {
      for (const e of ev.tables) {
        const t = byOid.get(e.oid);
        if (t === undefined || t.attnums === undefined || !chosen(t)) continue;
        const kept = new Set(e.columns.filter((c) => !c[3]).map((c) => c[0]));
        const gone = t.columns.filter((_, j) => !kept.has(t.attnums![j]!));
        if (gone.length === 0) continue;
        throw new OperationError(
          'restore.schema-changed',
          `column${gone.length > 1 ? 's' : ''} ${gone.join(', ')} of ${t.schema}.${t.name} ${gone.length > 1 ? 'were' : 'was'} dropped at ${tx.commitTime} (transaction ${tx.xid}): their values are gone from the table, and this command cannot follow its rows across that schema change`,
          { hint: 'take a new backup after the change; `restore --at` rebuilds moments after it' },
        );
      }
    }
    const oids =
      ev.kind === 'rewrite' ? [ev.oid] : ev.kind === 'drop' ? ev.tables.map((t) => t.oid) : [];
    if (oids.some((oid) => snapshotOids.has(oid) || snapshotOids.has(undefined))) {
      const t = snapshot.tables.find((x) => x.oid !== undefined && oids.includes(x.oid));
      throw new OperationError(
        'restore.schema-changed',
        `${t === undefined ? 'a table' : `table ${t.schema}.${t.name}`} of ${spec.tablesOf ?? `snapshot ${snapshot.id}`} was ${ev.kind === 'rewrite' ? 'rewritten' : 'dropped'} at ${tx.commitTime} (transaction ${tx.xid}): this command cannot follow its rows across that schema change`,
        {
          hint: 'take a new backup after the change; `restore --at` rebuilds moments after it',
        },
      );
    }
  }
}

/**
 * Refuses a window in which rows of a table with a DEFERRABLE primary key
 * changed keys. Within such a transaction two rows can hold one key for a
 * while (\`UPDATE t SET id = id + 1\` moves row 1 onto row 2 before row 2
 * moves on), which following rows by key cannot tell apart: rows would be
 * lost or mixed, silently. Such a table has REPLICA IDENTITY FULL under
 * capture (the server uses no deferrable key as identity).
 */
function refuseDeferrableKeyMoves(
  manifest: SnapshotManifest<SchemaModel>,
  tables: ReadonlyMap<string, TableOverlay>,
): void {
  for (const c of manifest.schema?.constraints ?? []) {
    if (c.type !== 'primary-key' || !/\bDEFERRABLE\b/.test(c.definition)) continue;
    const ov = tables.get(`${c.schema}.${c.table}`);
    const move = ov === undefined ? undefined : [...ov.moved][0];
    if (move === undefined) continue;
    throw new OperationError(
      'restore.deferrable-key-moved',
      `the primary key of ${c.schema}.${c.table} is DEFERRABLE and the change log moves rows of it to other keys (${move[1]} to ${move[0]}${ov!.moved.size > 1 ? `, and ${ov!.moved.size - 1} more` : ''}): within such a transaction two rows can hold one key, and following them by key is not supported`,
      {
        hint: 'choose a moment before the first such update, or one after a snapshot taken after the last',
      },
    );
  }
}

/** Index of each chunk column in the change's (relation) column order; refuses a changed table. */
function columnMap(
  t: TableSnapshot,
  c: Pick<Change, 'schema' | 'table' | 'columns'>,
  cache: Map<string, { columns: unknown; map: number[] | null }>,
  when: string,
  /** What `t` is as of, in the message. */
  tablesOf: string,
): number[] | null {
  const key = `${c.schema}.${c.table}`;
  const hit = cache.get(key);
  if (hit !== undefined && hit.columns === c.columns) return hit.map;
  const names = c.columns.map((col) => col[0]);
  const map = t.columns.map((name) => names.indexOf(name));
  if (map.includes(-1) || names.length !== t.columns.length) {
    throw new OperationError(
      'restore.schema-changed',
      `the columns of ${key} changed after ${tablesOf} (at ${when}: now ${names.join(', ')}; in ${tablesOf} ${t.columns.join(', ')}): rebuilding across a column change is not supported yet`,
      { hint: 'take a new backup after the change and restore to a moment after it' },
    );
  }
  // The log identifies rows by the replica identity; matching them by the
  // snapshot's key needs the two to be the same columns (or the whole row).
  const identity = c.columns.filter((col) => col[3]).map((col) => col[0]);
  const full = identity.length === c.columns.length;
  // The same columns, in any order: the log lists them in the table's column
  // order, the key in its own (PRIMARY KEY (tenant_id, id) on (id, tenant_id, ...)).
  if (t.key.length > 0 && !full && !sameMembers(identity, t.key)) {
    throw new OperationError(
      'restore.identity-not-key',
      `${key} is identified in the change log by (${identity.join(', ')}) but its snapshot key is (${t.key.join(', ')}): matching deleted and re-keyed rows across the two is not supported yet`,
      {
        hint: `make the replica identity the primary key (ALTER TABLE ${key} REPLICA IDENTITY DEFAULT) or FULL`,
      },
    );
  }
  const same = map.every((j, i) => j === i);
  cache.set(key, { columns: c.columns, map: same ? null : map });
  return same ? null : map;
}

/**
 * A relation of the log that is a snapshot table (by OID) under another
 * name, or with a column of another type, while no schema record says so:
 * refused (restore.schema-changed), since the tables would be rebuilt as
 * the snapshot has them, not as they were at the point.
 */
function refuseUnrecorded(
  t: TableSnapshot,
  schema: string,
  table: string,
  columns: readonly ChangeColumn[],
  tx: { readonly xid: number; readonly commitTime: string },
  snapshotId: string,
): void {
  const hint =
    'take a new backup after the change and restore to a moment after it; capture records schema changes when it runs as a superuser (docs/CAPTURE.md, "Schema changes")';
  if (t.schema !== schema || t.name !== table) {
    throw new OperationError(
      'restore.schema-changed',
      `table ${t.schema}.${t.name} of snapshot ${snapshotId} is ${schema}.${table} in the change log (transaction ${tx.xid}, ${tx.commitTime}), and the log has no record of the rename`,
      { hint },
    );
  }
  if (t.types === undefined) return;
  for (const [j, name] of t.columns.entries()) {
    const c = columns.find((x) => x[0] === name);
    const [oid, mod] = t.types[j]!;
    if (c === undefined || (c[1] === oid && c[2] === mod)) continue;
    throw new OperationError(
      'restore.schema-changed',
      `column ${name} of ${schema}.${table} changed type after snapshot ${snapshotId} (type OID ${c[1]}, modifier ${c[2]} in the change log at transaction ${tx.xid}, ${tx.commitTime}; ${oid}, ${mod} in the snapshot), and the log has no record of the change`,
      { hint },
    );
  }
}

function reorder(values: readonly ChangeValue[], map: readonly number[] | null): ChangeValue[] {
  // null: the log's columns are the snapshot's, in its order (the usual case): no copy.
  if (map === null) return values as ChangeValue[];
  // -1: a column added after this change: absent (0), filled from the schema change later.
  return map.map((j) => (j < 0 ? 0 : (values[j] ?? null)));
}

/** The key (COPY text of the first `k` values, tab-joined), as overlays index rows. */
export function keyOf(values: readonly ChangeValue[], k: number): string {
  // One key column (the usual case): no intermediate arrays, once per change of a long log.
  if (k === 1) {
    const v = values[0];
    if (v === undefined) return '';
    return encodeField(v === 0 ? null : v);
  }
  return values
    .slice(0, k)
    .map((v) => encodeField(v === 0 ? null : v))
    .join('\t');
}

/**
 * A row as a COPY text line (without the newline). An unchanged TOASTed
 * value (0) must have been resolved by then: writing it as NULL would be a
 * lie, so it is refused.
 */
export function lineOf(values: readonly ChangeValue[]): string {
  return values
    .map((v) => {
      if (v === 0) {
        throw new OperationError(
          'restore.toast',
          'a row has an unchanged large (TOASTed) value whose earlier version is in neither the snapshot nor the change log: it cannot be rebuilt, and nothing was written',
          { hint: 'take a direct backup, or rebuild a moment before that row changed' },
        );
      }
      return encodeField(v);
    })
    .join('\t');
}

/** Folds one change into a table's overlay. */
function applyChange(
  t: TableSnapshot,
  ov: TableOverlay,
  c: Change,
  map: readonly number[] | null,
  /** A later part of a window (WindowSpec.later). */
  later?: boolean,
): void {
  const k = t.key.length;
  if (c.op === 'truncate') {
    ov.truncated = true;
    ov.byKey.clear();
    ov.moved.clear();
    ov.removed.clear();
    ov.added.clear();
    return;
  }
  const row = c.row === null ? null : reorder(c.row, map);
  const oldFull = c.old === null ? null : reorder(c.old, map);
  const oldKey = c.key === null ? null : reorder(c.key, map);
  if (k === 0) {
    // Without a key, rows are matched whole (REPLICA IDENTITY FULL sends the old row).
    if (c.op !== 'insert') {
      if (oldFull === null) {
        throw new OperationError(
          'restore.no-identity',
          `an ${c.op} of ${c.schema}.${c.table}, which has no key, came without the old row: the table needs REPLICA IDENTITY FULL`,
        );
      }
      const line = lineOf(oldFull);
      if (!ov.added.cancel(line)) ov.removed.set(line, (ov.removed.get(line) ?? 0) + 1);
    }
    // An update's unchanged TOASTed values are the old row's (sent in full here).
    if (row !== null) ov.added.push(oldFull === null ? row : resolveUnchanged(row, oldFull));
    return;
  }
  if (c.op === 'delete') {
    const source = oldKey ?? oldFull;
    if (source === null)
      throw new OperationError(
        'restore.no-identity',
        `a delete of ${c.schema}.${c.table} came without its key`,
      );
    ov.byKey.set(keyOf(source, k), null);
    return;
  }
  // insert or update: the new version of its key
  const newKey = keyOf(row!, k);
  const before = oldKey ?? oldFull;
  if (before !== null) {
    const previousKey = keyOf(before, k);
    if (previousKey !== newKey) {
      if (later && row!.includes(0) && ov.byKey.get(previousKey) === undefined)
        throw partNeedsEarlier();
      const prev = ov.byKey.get(previousKey) ?? oldFull ?? undefined;
      const moved = resolveUnchanged(row!, prev);
      if (moved.includes(0)) {
        // The unsent value is the old key's row in the snapshot; resolving it
        // there is not implemented, and guessing (or NULL) would be wrong.
        throw new OperationError(
          'restore.toast-key-change',
          `the key of a row of ${c.schema}.${c.table} changed (${previousKey} to ${newKey}) in an update that left a large (TOASTed) value unsent: rebuilding that row is not supported yet`,
          {
            hint: 'set REPLICA IDENTITY FULL on the table so the log carries whole rows, or restore to a moment before the change',
          },
        );
      }
      ov.byKey.set(previousKey, null);
      ov.byKey.set(newKey, moved);
      noteMove(ov.moved, previousKey, newKey);
      return;
    }
  }
  // (The previous version is looked up only for a row with unsent values.)
  // Unsent values after the key's deletion in this part: one pass would take
  // them from nowhere, but the merge would take them from the earlier part.
  if (later && row!.includes(0) && ov.byKey.get(newKey) === null) throw partNeedsEarlier();
  ov.byKey.set(
    newKey,
    row!.includes(0) ? resolveUnchanged(row!, ov.byKey.get(newKey) ?? undefined) : row!,
  );
}

/** A later part met a change it cannot fold without the parts before: it is read again after them (overlay-parts.ts). */
function partNeedsEarlier(): Error {
  return new Error('a change needs the versions of the part before');
}

/** The new keys after a table's last chunk go out in blocks of about this many bytes. */
const TAIL_BLOCK = 1024 * 1024;

/** One reused layout: applyStored runs once per change of a long log. */
const layout = emptyLayout();

/**
 * Folds one stored change into a table's overlay, reading its message in
 * place: the new version is kept as the log's bytes (KeyedRows), and only
 * the key is decoded. What needs the values (a table without a key, columns
 * in another order than the chunks', an unsent TOASTed value, a changed
 * key) is decoded and goes through applyChange, as are truncates.
 */
function applyStored(
  r: { t: TableSnapshot; ov: TableOverlay; map: readonly number[] | null; later: boolean },
  content: Buffer,
  start: number,
  end: number,
  relation: StoredRelation,
): void {
  const k = r.t.key.length;
  if (r.map !== null) {
    applyChange(r.t, r.ov, storedChange(content, start, end, relation), r.map, r.later);
    return;
  }
  layoutOf(content, start, end, layout);
  if (k === 0) {
    // A row added to a table without a key: its line made from the bytes.
    if (layout.kind !== 0x49 || !r.ov.added.pushTuple(content, layout.newStart, layout.newEnd)) {
      applyChange(r.t, r.ov, storedChange(content, start, end, relation), r.map, r.later);
    }
    return;
  }
  if (layout.kind === 0x44) {
    r.ov.byKey.set(storedKey(content, layout.oldStart, k), null);
    return;
  }
  const key = storedKey(content, layout.newStart, k);
  if (
    layout.newUnchanged ||
    (layout.oldStart >= 0 && storedKey(content, layout.oldStart, k) !== key)
  ) {
    applyChange(r.t, r.ov, storedChange(content, start, end, relation), r.map, r.later);
    return;
  }
  r.ov.byKey.setStored(key, content, layout.newStart, layout.newEnd);
}

/** The key of the TupleData at `start`: an integer's as its number (see KeyedRows), else its text. */
function storedKey(content: Buffer, start: number, k: number): string | number {
  if (k === 1) {
    const n = tupleInteger(content, start);
    if (n !== undefined) return n;
  }
  return keyOf(tupleHead(content, start, k), k);
}

/** What a caller of pointInTimeSource that needs some keys' rows only says about them. */
export interface KeyRead {
  /** Only rows with these keys are emitted (the COPY text of the key fields). */
  readonly keys: KeyCollection;
  /**
   * The wanted keys a chunk can hold (`[]`: the chunk is not read); see
   * keysByChunk, which gives every chunk every key when it cannot order the
   * key. Without it every chunk is read whole.
   */
  readonly keysIn?: ((t: TableSnapshot, chunk: ChunkRef) => readonly string[]) | undefined;
  /** With keysIn: reads the wanted lines of each chunk off the main thread. */
  readonly picker?: ChunkPicker;
}

/** A restore TableSource: the snapshot's chunks with the overlay applied. */
export function pointInTimeSource(
  chunks: ChunkStore,
  overlay: Overlay,
  /** For callers that need some keys' rows only (keyed tables; others are read whole). */
  only?: KeyRead,
): TableSource {
  return {
    async *blocks(t) {
      const ov = overlay.tables.get(`${t.schema}.${t.name}`);
      // A table whose columns changed in the window: its snapshot lines in the point's layout.
      const rs = overlay.reshape.get(`${t.schema}.${t.name}`);
      const keyed = only !== undefined && t.key.length > 0 ? only : undefined;
      const keysIn = keyed?.keysIn;
      // The picker hands back only the wanted lines: they need no second look.
      const picked = keysIn !== undefined && keyed?.picker !== undefined && rs === undefined;
      const snapshotBlocks = async function* (): AsyncIterable<RowBlock> {
        if (picked) {
          // Only the wanted lines of each chunk, read off the main thread.
          yield* keyed.picker!.blocks(pickJobs(t, keysIn));
          return;
        }
        const include =
          keysIn === undefined
            ? undefined
            : (_: TableSnapshot, c: ChunkRef) => keysIn(t, c).length > 0;
        for await (const block of snapshotSource(chunks, include).blocks(t)) {
          yield rs === undefined
            ? block
            : { content: reshapeBlock(block.content, rs), rows: block.rows };
        }
      };
      const filter = keyed === undefined || picked ? undefined : keySet(t.key.length, keyed.keys);
      if (ov === undefined && filter === undefined) {
        yield* snapshotBlocks();
        return;
      }
      const o = ov ?? emptyTableOverlay();
      // One integer key (the usual case): the changed keys in key order,
      // walked beside the snapshot's rows, which come in key order; the
      // places met are marked taken. Otherwise keys are consumed from a copy
      // of the set as the snapshot's rows are met. Either way, what is left
      // is new.
      const sorted = t.key.length === 1 ? o.byKey.sorted() : undefined;
      const changes: ChangedRows = sorted !== undefined ? { sorted } : { pending: o.byKey.copy() };
      const removed = new Map(o.removed);
      if (!o.truncated) {
        for await (const block of snapshotBlocks()) {
          // (Absent values of a snapshot row resolve against its reshaped line.)
          const merged = mergeBlock(block.content, t, changes, removed, filter);
          if (merged.rows > 0) yield merged;
        }
      }
      // The keys the snapshot did not have, in blocks of about a megabyte.
      let tail = new LineBuffer(TAIL_BLOCK);
      let tailRows = 0;
      for (const left of leftOver(changes)) {
        const key = left.key;
        if (left.deleted() || (keyed !== undefined && !keyed.keys.has(String(key)))) continue;
        if (rs !== undefined || !left.writeLine(tail)) {
          const values = fillAbsent(left.get()!, rs);
          if (values.includes(0)) {
            throw new OperationError(
              'restore.toast',
              `row (${key}) of ${t.schema}.${t.name} has an unchanged TOASTed value whose earlier version is in neither the snapshot nor the log window`,
            );
          }
          tail.appendString(`${lineOf(values)}\n`);
        }
        tailRows++;
        if (tail.at < TAIL_BLOCK) continue;
        yield { content: tail.content(), rows: tailRows };
        tail = new LineBuffer(TAIL_BLOCK);
        tailRows = 0;
      }
      if (tailRows > 0) yield { content: tail.content(), rows: tailRows };
      yield* spoolSource(o.added, rs).blocks(t);
    },
  };
}

/**
 * A table's changed keys as a merge consumes them: the integer keys in key
 * order (a place in `sorted` is taken when its row is met), or else a copy
 * of the set, each key deleted from it when met.
 */
type ChangedRows = { readonly sorted: SortedVersions } | { readonly pending: KeyedRows };

/** The changed keys no snapshot row took, with their versions: the rows to add. */
function* leftOver(changes: ChangedRows): Generator<{
  key: Key;
  deleted(): boolean;
  writeLine(out: LineBuffer): boolean;
  get(): RowVersion | undefined;
}> {
  if ('sorted' in changes) {
    const s = changes.sorted;
    for (let i = 0; i < s.length; i++) {
      if (s.taken[i] === 1) continue;
      yield {
        key: s.keys[i]!,
        deleted: () => s.deleted(i),
        writeLine: (out) => s.writeLine(i, out),
        get: () => s.get(i),
      };
    }
    return;
  }
  const p = changes.pending;
  for (const key of p.heldKeys()) {
    yield {
      key,
      deleted: () => p.deleted(key),
      writeLine: (out) => p.writeLine(key, out),
      get: () => p.get(key),
    };
  }
}

/**
 * One chunk with its rows' later versions applied: unchanged lines are
 * copied in runs, a changed row's line is made from the version's stored
 * bytes (KeyedRows.writeLine) when it can be. When every changed key is an
 * integer, each line's key is read as a number from the bytes instead of
 * made into a string (most lines are unchanged; a string per line was most
 * of the merge), and found by walking the sorted keys. A chunk nothing
 * changed comes back as it was.
 */
function mergeBlock(
  content: Buffer,
  t: TableSnapshot,
  changes: ChangedRows,
  removed: Map<string, number>,
  /** Only rows with these keys are emitted (keyed tables). */
  only?: KeySet,
): RowBlock {
  const k = t.key.length;
  const sorted = 'sorted' in changes ? changes.sorted : undefined;
  const pending = 'pending' in changes ? changes.pending : undefined;
  const byNumber = k === 1 && pending !== undefined && pending.integerKeysOnly;
  let out: LineBuffer | undefined;
  let rows = 0;
  let runStart = 0; // start of a run of unchanged lines, copied as one slice
  let pos = 0;
  while (pos < content.length) {
    let nl = content.indexOf(0x0a, pos);
    if (nl < 0) nl = content.length;
    let keyText: string | undefined;
    let changed: Key | undefined; // a key whose version replaces (or deletes) this line
    let place = -1; // or its place in `sorted`
    let drop = false;
    if (sorted !== undefined) {
      // Equal numbers are equal text (canonical integers only): "007" is no key here.
      const n = canonicalIntegerField(content, pos, nl);
      if (n !== undefined) {
        const i = sorted.find(n);
        if (i >= 0 && sorted.taken[i] === 0) place = i;
      }
    } else if (byNumber) {
      const n = canonicalIntegerField(content, pos, nl);
      if (n !== undefined && pending!.has(n)) changed = n;
    } else if (k > 0) {
      keyText = content.toString('utf8', pos, endOfFields(content, pos, nl, k));
      if (pending!.has(keyText)) changed = keyText;
    } else if (removed.size > 0) {
      const line = content.toString('utf8', pos, nl);
      const n = removed.get(line);
      if (n !== undefined) {
        if (n <= 1) removed.delete(line);
        else removed.set(line, n - 1);
        drop = true;
      }
    }
    if (place >= 0 ? sorted!.deleted(place) : changed !== undefined && pending!.deleted(changed)) {
      drop = true;
    }
    if (only !== undefined && !drop) {
      // A row the caller does not want: left out.
      const wanted =
        keyText === undefined ? lineWanted(content, pos, nl, k, only) : only.text.has(keyText);
      if (!wanted) drop = true;
    }
    if (place >= 0 || changed !== undefined || drop) {
      out ??= new LineBuffer(content.length + 4096);
      out.append(content, runStart, pos);
      if (!drop) {
        const written =
          place >= 0 ? sorted!.writeLine(place, out) : pending!.writeLine(changed!, out);
        if (!written) {
          const v = place >= 0 ? sorted!.get(place)! : pending!.get(changed!)!;
          out.appendString(`${lineOf(resolveAgainst(v, content.subarray(pos, nl)))}\n`);
        }
        rows++;
      }
      if (place >= 0) sorted!.taken[place] = 1;
      else if (changed !== undefined) pending!.delete(changed);
      runStart = nl + 1;
    } else {
      rows++;
    }
    pos = nl + 1;
  }
  if (out === undefined) return { content, rows };
  if (runStart < content.length) out.append(content, runStart, content.length);
  return { content: out.content(), rows };
}

/** Unchanged-TOAST markers take the value of `line` (the row's earlier version, as COPY text). */
export function resolveAgainst(values: ChangeValue[], line: Buffer): ChangeValue[] {
  if (!values.includes(0)) return values;
  const fields = splitFields(line);
  return values.map((v, i) => (v === 0 ? decodeField(fields[i]!) : v));
}

/** A keyless table's added rows as a restore TableSource, absent values filled from the schema change. */
export function spoolSource(spool: RowSpool, rs?: Reshape): TableSource {
  return {
    async *blocks(t) {
      for await (const block of spool.blocks()) {
        // (The absent marker is a NUL byte, which COPY text never holds.)
        if (block.content.indexOf(0) < 0) {
          yield block;
          continue;
        }
        const lines = block.content.toString('utf8').split('\n');
        lines.pop();
        const out = lines.map((line) => copyLine(line, rs, t));
        yield { content: Buffer.from(`${out.join('\n')}\n`, 'utf8'), rows: out.length };
      }
    },
  };
}

/** A spool line as a COPY line: absent values take the value rows got when their column was added. */
function copyLine(line: string, rs: Reshape | undefined, t: TableSnapshot): string {
  if (!line.includes(ABSENT_FIELD)) return line;
  return line
    .split('\t')
    .map((field, i) => {
      if (field !== ABSENT_FIELD) return field;
      const fill = rs?.fill[i];
      if (fill === undefined) {
        throw new OperationError(
          'restore.toast',
          `a row of ${t.schema}.${t.name} has a value (column ${i + 1}) whose earlier version is in neither the snapshot nor the change log: it cannot be rebuilt, and nothing was written`,
          { hint: 'take a direct backup, or rebuild a moment before that row changed' },
        );
      }
      return encodeField(fill);
    })
    .join('\t');
}
