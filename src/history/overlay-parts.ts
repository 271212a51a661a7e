/**
 * Reading a long window in two parts at once: this thread reads the first
 * half of its segments up to the point (reachOf), a worker thread
 * (overlay-worker.ts) the rest, and the second part's net effect is folded
 * into the first's. On two cores the
 * log is read in a little over half the time (a restore to a moment is
 * mostly this reading).
 *
 * Parts are split at a segment: a part is the transactions that *begin* in
 * its segments. The first reads on into the second's segments only to
 * finish a transaction still open, and the second skips what it meets of
 * that one, and any commit at or below the first part's last stored commit
 * (delivered again after a restart); see ScanBoundary. So the two parts
 * together are the window's transactions, each once, in order.
 *
 * Folding a later part B into an earlier part A gives what reading A then B
 * in one go gives (absorbPart):
 * - B's counts add to A's; B's newest LSN and time, last transaction and
 *   the transaction past the point win.
 * - A table B truncated is B's alone. Otherwise each key B changed takes
 *   B's version (KeyedRows.absorb; an unsent TOASTed value from A's), and
 *   for a keyless table, each row B removed that B had not added takes
 *   back one A added, or else is removed from the snapshot; then B's added
 *   rows follow A's.
 * - When A reaches the point, B's part is dropped (it begins past it).
 * - When B's thread fails for any reason (a damaged segment, a change it
 *   cannot fold without A's versions, such as a key moved with an unsent
 *   TOASTed value), its segments are read again here, into A: the result,
 *   or the error, is then exactly that of reading in one go.
 *
 * Contract: the Overlay built is the same, key for key and row for row, as
 * reading in one part (tests read windows both ways and compare); only the
 * places of identical rows added to a keyless table may differ (which of
 * them a later removal takes back is not defined in one part either).
 */
import { closeSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import type { ChangeLog, ScanBoundary, SegmentInfo } from '../repo/changelog.js';
import { lastBeginMicros, lsnValue } from '../repo/changelog-format.js';
import type { TableSnapshot } from '../repo/snapshots.js';
import { isoToPgTimestamp } from '../util/pg-time.js';
import { createTempFile } from '../util/temp-file.js';
import { startThread, threadAvailable } from '../util/thread.js';
import { arenaMemory } from './arena.js';
import { type ExportedRows, KeyedRows } from './keyed-rows.js';
import { type ReleasedSpool, RowSpool } from './row-spool.js';
import type { OverlayProgress, TableOverlay, WindowSpec, WindowState } from './state.js';

const OVERLAY_WORKER = new URL('./overlay-worker.js', import.meta.url);

/** Below this much stored log, one part: starting a thread costs more than it saves. */
export const PARTS_BYTES = 16 * 1024 * 1024;
/** Segments sent to the thread ahead of its reading (each ~256 KiB stored). */
const IN_FLIGHT = 8;

/** What readInParts needs. */
export interface ReadInParts {
  readonly spec: WindowSpec;
  /** The first part's state (and, at the end, the window's). */
  readonly state: WindowState;
  readonly log: ChangeLog;
  /** The window's segments (windowSegments). */
  readonly segments: readonly SegmentInfo[];
  /** Both parts on this thread, one after the other (tests); the merge is the same. */
  readonly inline: boolean;
  readonly onProgress?: ((p: OverlayProgress) => void) | undefined;
  /** Reads the segments given, within the boundary, into `state`, on this thread (with `spec`, default the window's). */
  read(
    state: WindowState,
    part: { readonly segments: readonly SegmentInfo[] } & ScanBoundary,
    onProgress?: (p: OverlayProgress) => void,
    spec?: WindowSpec,
  ): Promise<void>;
  /** Minimum stored bytes for two parts (default PARTS_BYTES; tests make it 0). */
  readonly minBytes?: number | undefined;
}

/**
 * How a window was read: in one part, in two, in two with the second read
 * again here (its thread failed), or in two of which the second began past
 * the point (not used).
 */
export type ReadAs =
  | 'one part'
  | 'two parts'
  | 'two parts, the second again here'
  | 'two parts, the second past the point';

/** Reads the window, in two parts when it is long enough (see the module comment). */
export async function readInParts(o: ReadInParts): Promise<ReadAs> {
  const minBytes = o.minBytes ?? PARTS_BYTES;
  // The parts are balanced over the segments up to the point, not the whole log.
  const total = o.segments.reduce((a, s) => a + s.size, 0);
  const reach = total < minBytes ? o.segments.length - 1 : await reachOf(o.log, o.segments, o.spec);
  const k = splitAt(o.segments.slice(0, reach + 1), minBytes);
  const threaded = !o.inline && threadAvailable(OVERLAY_WORKER);
  if (k === undefined || (!o.inline && !threaded)) {
    await o.read(o.state, { segments: o.segments }, o.onProgress);
    return 'one part';
  }
  const second = o.segments.slice(k);
  const first = { segments: o.segments, finishFrom: second[0]!.seq };
  const later = { segments: second, after: o.segments[k - 1]!.committed };
  // The second part's keyless tables, and its versions past the memory
  // budget (arena.ts), spill into files opened here (a thread's own are
  // closed when it ends: see RowSpool's `borrowed`), closed at the end.
  const spoolFiles: Record<string, number> = {};
  let arenaFile: number | undefined;
  try {
    for (const t of o.spec.snapshot.tables) {
      if (t.key.length === 0) spoolFiles[`${t.schema}.${t.name}`] = createTempFile();
    }
    arenaFile = createTempFile('flashback-overlay-');
    return await readTwo(o, first, later, {
      ...o.spec,
      spoolFiles,
      arenaFile,
      arenaMemory: arenaMemory(),
      later: true,
    });
  } finally {
    for (const fd of Object.values(spoolFiles)) closeSync(fd);
    if (arenaFile !== undefined) closeSync(arenaFile);
  }
}

/** readInParts with the parts decided. */
async function readTwo(
  o: ReadInParts,
  first: { readonly segments: readonly SegmentInfo[] } & ScanBoundary,
  later: { readonly segments: readonly SegmentInfo[] } & ScanBoundary,
  laterSpec: WindowSpec,
): Promise<ReadAs> {
  if (o.inline) {
    await o.read(o.state, first, o.onProgress);
    if (o.state.next !== undefined) return 'two parts, the second past the point';
    const b = emptyWindowState();
    try {
      await o.read(b, later, undefined, laterSpec);
    } catch {
      closeTables(b);
      await o.read(o.state, later, o.onProgress);
      return 'two parts, the second again here';
    }
    await settleRemoved(b);
    // Through a structured clone, as from the thread.
    const part = exportPart(b);
    await absorbPart(o.state, structuredClone(part.message, { transfer: part.transfer }));
    return 'two parts';
  }
  const thread = new PartThread(o.log, laterSpec, later);
  let bProgress: OverlayProgress | undefined;
  thread.onProgress = (p) => {
    bProgress = p;
  };
  try {
    await o.read(
      o.state,
      first,
      o.onProgress === undefined
        ? undefined
        : (p) =>
            o.onProgress!({
              transactions: p.transactions + (bProgress?.transactions ?? 0),
              changes: p.changes + (bProgress?.changes ?? 0),
              commitTime: bProgress?.commitTime ?? p.commitTime,
            }),
    );
  } catch (err) {
    await thread.stop();
    throw err;
  }
  if (o.state.next !== undefined) {
    // The point is in the first part: the second begins past it.
    await thread.stop();
    return 'two parts, the second past the point';
  }
  const part = await thread.result();
  if (part === undefined) {
    // The thread failed: its part read here, into the first's state (the same result, or error, as one pass).
    await o.read(o.state, later, o.onProgress);
    return 'two parts, the second again here';
  }
  await absorbPart(o.state, part);
  return 'two parts';
}

/**
 * The index of the segment where reading the window stops: the first whose
 * commits reach past the point (its `committed` LSN, or the commit time of
 * the last transaction begun in it, found by a binary search reading a few
 * segments); the last segment when none does. Splitting the segments up to
 * there, a point early in a long log is read in two halves of its own
 * window, instead of by the first part alone while the second reads past
 * the point in vain. Only the balance depends on it: each part stops at
 * the point wherever it lies.
 */
export async function reachOf(
  log: ChangeLog,
  segments: readonly SegmentInfo[],
  spec: Pick<WindowSpec, 'point' | 'xidCommitLsn'>,
): Promise<number> {
  const n = segments.length;
  const point = spec.point;
  const untilLsn = untilLsnOf(spec);
  if (untilLsn !== undefined) {
    const i = segments.findIndex((s) => s.committed >= untilLsn);
    return i < 0 ? n - 1 : i;
  }
  if (point.kind !== 'time' || n === 0) return n - 1;
  const until = isoToPgTimestamp(point.at);
  // (A segment in which no transaction begins counts as not past the point.)
  const past = async (i: number) => {
    const t = await log.decode(segments[i]!, lastBeginMicros);
    return t !== undefined && t > until;
  };
  try {
    // The usual case, a moment in the last segment or after: one read.
    if (!(await past(n - 1))) return n - 1;
    let lo = 0;
    let hi = n - 1; // past
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (await past(mid)) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  } catch {
    // A segment that cannot be read: split as if the point were at the end.
    // Reading says what is wrong with it, if reading gets that far (a
    // moment before a damaged segment can still be rebuilt).
    return n - 1;
  }
}

/**
 * The LSN reading a window stops before, when its point is one: --lsn's,
 * or for --before-xid the transaction's commit LSN as the plan found it
 * (reading stops at its Begin, without decoding the changes it would then
 * drop); undefined for --at.
 */
export function untilLsnOf(spec: Pick<WindowSpec, 'point' | 'xidCommitLsn'>): bigint | undefined {
  const point = spec.point;
  if (point.kind === 'lsn') return lsnValue(point.lsn);
  return point.kind === 'xid' ? spec.xidCommitLsn : undefined;
}

/** Where the second part starts: the segment halving the stored bytes; undefined for one part. */
function splitAt(segments: readonly SegmentInfo[], minBytes: number): number | undefined {
  if (segments.length < 2) return undefined;
  const total = segments.reduce((a, s) => a + s.size, 0);
  if (total < minBytes) return undefined;
  let sum = 0;
  for (let i = 0; i < segments.length; i++) {
    sum += segments[i]!.size;
    if (2 * sum >= total) return Math.min(i + 1, segments.length - 1);
  }
  return segments.length - 1;
}

/** The state of a part (or window) before anything is read. */
export function emptyWindowState(): WindowState {
  return {
    tables: new Map(),
    transactions: 0,
    changes: 0,
    newestLsn: 0n,
    newestTime: '',
    newestMicros: undefined,
    lastXid: undefined,
    lastCommitLsn: 0n,
    lastMicros: 0n,
    next: undefined,
    foundXid: false,
    createdInWindow: new Map(),
  };
}

/** Records that the row keyed `from` is keyed `to` now (a chain of moves keeps its first key; moving back forgets it). */
export function noteMove(moved: Map<string, string>, from: string, to: string): void {
  const origin = moved.get(from) ?? from;
  moved.delete(from);
  if (origin !== to) moved.set(to, origin);
}

/** Frees the spool files and arenas of a part (or an overlay) that will not be used. */
export function closeTables(state: { readonly tables: ReadonlyMap<string, TableOverlay> }): void {
  for (const t of state.tables.values()) {
    t.added.close();
    t.byKey.close();
  }
}

/** A part's state as plain data for another thread, and what to transfer (not copy) with it. */
export interface ExportedPart {
  readonly tables: ReadonlyArray<{
    readonly name: string;
    readonly truncated: boolean;
    readonly rows: ExportedRows;
    readonly moved: ReadonlyArray<[string, string]>;
    readonly removed: ReadonlyArray<[string, number]>;
    readonly added: ReleasedSpool;
  }>;
  readonly transactions: number;
  readonly changes: number;
  readonly newestLsn: bigint;
  readonly newestTime: string;
  readonly newestMicros: bigint | undefined;
  readonly lastXid: number | undefined;
  readonly lastCommitLsn: bigint;
  readonly lastMicros: bigint;
  readonly next: WindowState['next'];
  readonly foundXid: boolean;
  readonly createdInWindow: ReadonlyArray<[string, number]>;
}

/**
 * A part's state, settled (settleRemoved), as plain data: its tables'
 * arenas and spool files are handed over (the state is not used after).
 */
export function exportPart(s: WindowState): { message: ExportedPart; transfer: ArrayBuffer[] } {
  const transfer: ArrayBuffer[] = [];
  const tables = [...s.tables].map(([name, t]) => {
    const rows = t.byKey.export();
    for (const b of rows.arena.blocks) if (b !== null) transfer.push(b);
    transfer.push(rows.codes.buffer as ArrayBuffer);
    if (rows.keys instanceof Float64Array) transfer.push(rows.keys.buffer as ArrayBuffer);
    return {
      name,
      truncated: t.truncated,
      rows,
      moved: [...t.moved],
      removed: [...t.removed],
      added: t.added.release(),
    };
  });
  const message: ExportedPart = {
    tables,
    transactions: s.transactions,
    changes: s.changes,
    newestLsn: s.newestLsn,
    newestTime: s.newestTime,
    newestMicros: s.newestMicros,
    lastXid: s.lastXid,
    lastCommitLsn: s.lastCommitLsn,
    lastMicros: s.lastMicros,
    next: s.next,
    foundXid: s.foundXid,
    createdInWindow: [...s.createdInWindow],
  };
  return { message, transfer };
}

/** Folds a later part into `a` (see the module comment). Its spool files are taken over or closed. */
export async function absorbPart(a: WindowState, b: ExportedPart): Promise<void> {
  a.transactions += b.transactions;
  a.changes += b.changes;
  if (b.newestLsn > a.newestLsn) a.newestLsn = b.newestLsn;
  if (b.newestTime > a.newestTime) a.newestTime = b.newestTime;
  if (
    b.newestMicros !== undefined &&
    (a.newestMicros === undefined || b.newestMicros > a.newestMicros)
  ) {
    a.newestMicros = b.newestMicros;
  }
  if (b.lastXid !== undefined) {
    a.lastXid = b.lastXid;
    a.lastCommitLsn = b.lastCommitLsn;
    a.lastMicros = b.lastMicros;
  }
  a.next = b.next;
  a.foundXid ||= b.foundXid;
  for (const [name, n] of b.createdInWindow) {
    a.createdInWindow.set(name, (a.createdInWindow.get(name) ?? 0) + n);
  }
  for (const t of b.tables) {
    const ov = a.tables.get(t.name);
    if (ov === undefined || t.truncated) {
      // New in B, or truncated there: B's alone.
      ov?.added.close();
      a.tables.set(t.name, importTable(t));
      continue;
    }
    ov.byKey.absorb(t.rows);
    for (const [to, from] of t.moved) noteMove(ov.moved, from, to);
    for (const [line, n] of t.removed) {
      for (let j = 0; j < n; j++) {
        if (!ov.added.cancel(line)) ov.removed.set(line, (ov.removed.get(line) ?? 0) + 1);
      }
    }
    // (Cancellations deferred by a spilled spool are A's: resolved before B's rows join.)
    await settleTable(ov);
    ov.added.adopt(t.added);
  }
}

/**
 * Rows removed from a keyless table after its added rows went to a file:
 * those no added row accounts for were the snapshot's.
 */
export async function settleRemoved(state: WindowState): Promise<void> {
  for (const ov of state.tables.values()) await settleTable(ov);
}

async function settleTable(ov: TableOverlay): Promise<void> {
  if (!ov.added.spilled) return;
  for (const [line, n] of await ov.added.settle()) {
    ov.removed.set(line, (ov.removed.get(line) ?? 0) + n);
  }
}

function importTable(t: ExportedPart['tables'][number]): TableOverlay {
  const byKey = new KeyedRows();
  byKey.absorb(t.rows);
  const added = new RowSpool();
  added.adopt(t.added);
  return {
    truncated: t.truncated,
    byKey,
    moved: new Map(t.moved),
    removed: new Map(t.removed),
    added,
  };
}

/** Messages from the overlay thread. */
export type PartReply =
  | { readonly kind: 'ack' }
  | { readonly kind: 'progress'; readonly progress: OverlayProgress }
  | { readonly kind: 'done'; readonly part: ExportedPart }
  | { readonly kind: 'failed'; readonly error: string }
  | { readonly kind: 'stopped' };

/** Messages to the overlay thread. */
export type PartRequest =
  | {
      readonly kind: 'start';
      readonly scope: string;
      readonly spec: WindowSpec;
      readonly boundary: ScanBoundary;
    }
  | { readonly kind: 'segment'; readonly seg: SegmentInfo; readonly stored: Uint8Array }
  | { readonly kind: 'end' }
  | { readonly kind: 'stop' };

/**
 * The second part, read on a thread: its segments' stored bytes are read
 * here and sent a few ahead of the thread's reading; it answers with the
 * part (or that it failed).
 */
class PartThread {
  private readonly worker: Worker;
  private inFlight = 0;
  private wake: (() => void) | undefined;
  private stopping = false;
  private readonly done: Promise<ExportedPart | undefined>;
  onProgress: ((p: OverlayProgress) => void) | undefined;

  constructor(
    private readonly log: ChangeLog,
    spec: WindowSpec,
    boundary: { readonly segments: readonly SegmentInfo[] } & ScanBoundary,
  ) {
    this.worker = startThread(OVERLAY_WORKER);
    // The thread needs the tables' shapes, not their chunk lists.
    const tables = spec.snapshot.tables.map((t): TableSnapshot => ({ ...t, chunks: [] }));
    const start: PartRequest = {
      kind: 'start',
      scope: log.scope,
      spec: { ...spec, snapshot: { ...pick(spec.snapshot), tables } },
      boundary: { after: boundary.after },
    };
    this.worker.postMessage(start);
    this.done = new Promise((resolve) => {
      this.worker.on('message', (m: PartReply) => {
        if (m.kind === 'ack') {
          this.inFlight--;
          this.wake?.();
        } else if (m.kind === 'progress') this.onProgress?.(m.progress);
        else if (m.kind === 'done') resolve(m.part);
        else resolve(undefined);
      });
      this.worker.on('error', () => resolve(undefined));
      this.worker.on('exit', () => resolve(undefined));
    });
    this.pump(boundary.segments).catch(() => {
      // (A segment that cannot be read: the thread is stopped, and the part read here meets the same error.)
      this.stopping = true;
      this.worker.postMessage({ kind: 'stop' } satisfies PartRequest);
    });
  }

  /**
   * Sends the segments in order, up to IN_FLIGHT of them unread by the
   * thread, reading the next ones from storage meanwhile: this thread is
   * busy with the first part and turns to this only between its segments.
   */
  private async pump(segments: readonly SegmentInfo[]): Promise<void> {
    const reads: Array<Promise<Buffer>> = [];
    let next = 0;
    for (const seg of segments) {
      while (next < segments.length && reads.length < IN_FLIGHT) {
        const p = this.log.stored(segments[next++]!);
        p.catch(() => {}); // (awaited in its turn)
        reads.push(p);
      }
      while (this.inFlight >= IN_FLIGHT && !this.stopping) {
        await new Promise<void>((r) => {
          this.wake = r;
        });
      }
      if (this.stopping) return;
      const stored = await reads.shift()!;
      this.inFlight++;
      const m: PartRequest = { kind: 'segment', seg, stored };
      this.worker.postMessage(m, [stored.buffer as ArrayBuffer]);
    }
    this.worker.postMessage({ kind: 'end' } satisfies PartRequest);
  }

  /** The part, or undefined when the thread failed (it is ended either way). */
  async result(): Promise<ExportedPart | undefined> {
    const part = await this.done;
    this.stopping = true;
    this.wake?.();
    await this.worker.terminate();
    return part;
  }

  /** Ends the thread, its part unused (its spool files closed there first). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    this.worker.postMessage({ kind: 'stop' } satisfies PartRequest);
    // (Finished before it heard: its files are readInParts', closed there.)
    await this.done;
    await this.worker.terminate();
  }
}

function pick(s: WindowSpec['snapshot']): Omit<WindowSpec['snapshot'], 'tables'> {
  return { id: s.id, target: s.target };
}
