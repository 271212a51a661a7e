/**
 * Reading only some keys' rows out of a snapshot's chunks.
 *
 * Undoing rows deleted all over a big table reads every chunk of it: the
 * change log holds only the deleted rows' keys (no REPLICA IDENTITY FULL
 * needed), so their last values come from the snapshot. Decoding a chunk,
 * verifying its hash and scanning its lines costs far more than reading it,
 * and the caller keeps a few lines of each. A `ChunkPicker` therefore does
 * that work in worker threads and hands back only the wanted lines; the main
 * thread reads the stored bytes (from any storage backend) and keeps the
 * chunks in order. Without threads (unit tests run from TypeScript sources;
 * src/util/thread.ts) the same work runs inline, with the same result.
 *
 * Keys are compared as the text of a line's first fields (chunks store key
 * columns first, as COPY text); a one-column key whose wanted values are all
 * integers is read as a number first, and the text compared only when the
 * number matches (a text key "007" is not the integer key 7).
 */
import os from 'node:os';
import { endOfFields } from '../pg/copy-text.js';
import { ChunkError, type ChunkStore, openChunk } from '../repo/chunks.js';
import type { ChunkRef, TableSnapshot } from '../repo/snapshots.js';
import { ownsMemory, ThreadPool, threadAvailable } from '../util/thread.js';
import { inFlight } from '../util/workers.js';
import type { RowBlock } from './load.js';

/**
 * Keys (the COPY text of the key fields) as callers hold them: a Set, or the
 * Map of an overlay, whose keys are used as they are (copying two million
 * keys into a Set took 0.65 s).
 */
export interface KeyCollection {
  has(key: string): boolean;
  keys(): Iterable<string>;
  readonly size: number;
}

/** Wanted keys: as the text of the key fields, and by value when one integer column. */
export interface KeySet {
  readonly text: Pick<KeyCollection, 'has'>;
  /** Set when the key is one column and every wanted key is an integer as PostgreSQL prints it. */
  readonly numbers: ReadonlySet<number> | undefined;
}

/** The key set of `keys` (each the COPY text of a row's `keyColumns` first fields). */
export function keySet(keyColumns: number, keys: KeyCollection | readonly string[]): KeySet {
  const text: KeyCollection = Array.isArray(keys) ? new Set(keys) : (keys as KeyCollection);
  return { text, numbers: keyColumns === 1 ? integerKeys(text.keys()) : undefined };
}

/**
 * A key's value when it is an integer as PostgreSQL prints it, of at most 15
 * digits (what integerField reads); otherwise undefined.
 */
export function integerKey(key: string): number | undefined {
  const n = Number(key);
  return Number.isSafeInteger(n) && String(n) === key && Math.abs(n) < 1e15 ? n : undefined;
}

/** The values of keys that are all integers (integerKey); undefined if one is not. */
function integerKeys(keys: Iterable<string>): Set<number> | undefined {
  const out = new Set<number>();
  for (const key of keys) {
    const n = integerKey(key);
    if (n === undefined) return undefined;
    out.add(n);
  }
  return out;
}

/** The line's first field read as an integer (digits, optional minus), or undefined. */
export function integerField(content: Buffer, pos: number, nl: number): number | undefined {
  let i = pos;
  const negative = content[i] === 0x2d;
  if (negative) i++;
  const first = i;
  let n = 0;
  for (; i < nl; i++) {
    const b = content[i]!;
    if (b === 0x09) break;
    if (b < 0x30 || b > 0x39 || i - first >= 15) return undefined;
    n = n * 10 + (b - 0x30);
  }
  return i === first ? undefined : negative ? -n : n;
}

/**
 * The line's first field as an integer when it is one as PostgreSQL prints
 * it, of at most 15 digits (integerKey's rule: no leading zero, no "-0");
 * otherwise undefined. Equal numbers then mean equal text.
 */
export function canonicalIntegerField(
  content: Buffer,
  pos: number,
  nl: number,
): number | undefined {
  const lead = content[pos] === 0x2d ? pos + 1 : pos;
  // A zero that is not the whole field (or is negated) is not how an integer prints.
  if (content[lead] === 0x30 && (lead > pos || (lead + 1 < nl && content[lead + 1] !== 0x09))) {
    return undefined;
  }
  return integerField(content, pos, nl);
}

/** Whether the line at [pos, nl) has one of the wanted keys (its first `keyColumns` fields). */
export function lineWanted(
  content: Buffer,
  pos: number,
  nl: number,
  keyColumns: number,
  keys: KeySet,
): boolean {
  if (keys.numbers !== undefined) {
    const n = integerField(content, pos, nl);
    if (n === undefined || !keys.numbers.has(n)) return false;
  }
  return keys.text.has(content.toString('utf8', pos, endOfFields(content, pos, nl, keyColumns)));
}

/** The lines of a chunk's content whose key is wanted, in their order. */
export function pickLines(content: Buffer, keyColumns: number, keys: KeySet): RowBlock {
  const parts: Buffer[] = [];
  let pos = 0;
  while (pos < content.length) {
    let nl = content.indexOf(0x0a, pos);
    if (nl < 0) nl = content.length;
    if (lineWanted(content, pos, nl, keyColumns, keys)) parts.push(content.subarray(pos, nl + 1));
    pos = nl + 1;
  }
  return { content: Buffer.concat(parts), rows: parts.length };
}

/** One chunk to pick from: its id, the key columns, the wanted keys it can hold. */
export interface PickJob {
  readonly id: string;
  readonly keyColumns: number;
  readonly keys: readonly string[];
}

/** The jobs for a table's chunks that can hold a wanted key (`keysIn`: see key-chunks.ts). */
export function pickJobs(
  t: TableSnapshot,
  keysIn: (t: TableSnapshot, chunk: ChunkRef) => readonly string[],
): PickJob[] {
  return t.chunks
    .map((c) => ({ id: c.id, keyColumns: t.key.length, keys: keysIn(t, c) }))
    .filter((j) => j.keys.length > 0);
}

/** Reads chunks and keeps only the wanted lines: in threads when it can. */
export interface ChunkPicker {
  /** Each chunk's lines with one of its job's keys; ChunkError if it is missing or damaged. */
  pick(job: PickJob): Promise<RowBlock>;
  /**
   * The picks of `jobs`, in order, several in flight; blocks with no line
   * are left out. Threads are started only for enough chunks to repay them.
   */
  blocks(jobs: readonly PickJob[]): AsyncIterable<RowBlock>;
  /** Stops any threads. */
  close(): Promise<void>;
}

/**
 * Fewer chunks than this are picked inline: starting a thread (loading its
 * modules) costs about what picking a few chunks does.
 */
const THREAD_MIN_JOBS = 32;

/** What a pick thread answers: the lines, or why the chunk could not be read. */
export interface PickReply {
  readonly seq: number;
  readonly content?: Uint8Array;
  readonly rows?: number;
  readonly error?: string;
  /** Set when the error is a damaged chunk (a ChunkError), with its hint. */
  readonly damagedHint?: string;
}

const WORKER = new URL('./pick-worker.js', import.meta.url);

/**
 * A picker over `chunks` with `size` threads (default: one per core: the
 * main thread only reads files and passes bytes on), or inline when no
 * thread can be started.
 */
export function createPicker(
  chunks: ChunkStore,
  size = Math.max(1, os.availableParallelism()),
): ChunkPicker {
  const inline = inlinePicker(chunks);
  if (!threadAvailable(WORKER)) return inline;
  let started: ThreadPool<PickReply> | undefined;
  const threads = () => {
    started ??= new ThreadPool<PickReply>(WORKER, size);
    return started;
  };
  const picker: ChunkPicker = {
    async pick(job) {
      const stored = await chunks.readStored(job.id);
      const pool = threads();
      if (pool.broken) return inline.pick(job);
      // Transferred when the bytes own their memory (a file read's do), else copied.
      const own = ownsMemory(stored);
      const m = await pool.run({ ...job, stored }, own ? [stored.buffer as ArrayBuffer] : []);
      if (m.content === undefined) {
        if (m.damagedHint !== undefined) throw new ChunkError(job.id, m.error ?? '', m.damagedHint);
        throw new Error(m.error ?? `reading chunk ${job.id} failed`);
      }
      return {
        content: Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength),
        rows: m.rows ?? 0,
      };
    },
    blocks: (jobs) =>
      jobs.length < THREAD_MIN_JOBS ? inline.blocks(jobs) : inOrder(picker, jobs, size * 2),
    close: async () => started?.close(),
  };
  return picker;
}

/** A picker on the calling thread. */
export function inlinePicker(chunks: ChunkStore): ChunkPicker {
  const picker: ChunkPicker = {
    async pick(job) {
      const content = await chunks.get(job.id);
      return pickLines(content, job.keyColumns, keySet(job.keyColumns, job.keys));
    },
    // One read ahead: the next chunk is fetched while this one is picked.
    blocks: (jobs) => inOrder(picker, jobs, 2),
    close: async () => {},
  };
  return picker;
}

/** The picks of `jobs` in order, with up to `depth` in flight; empty blocks left out. */
async function* inOrder(
  picker: ChunkPicker,
  jobs: readonly PickJob[],
  depth: number,
): AsyncIterable<RowBlock> {
  const picks: Array<Promise<RowBlock>> = [];
  let next = 0;
  const fill = () => {
    while (next < jobs.length && picks.length < depth) {
      picks.push(inFlight(picker.pick(jobs[next++]!)));
    }
  };
  fill();
  while (picks.length > 0) {
    const block = await picks.shift()!;
    fill();
    if (block.rows > 0) yield block;
  }
}

/** Runs one pick job in a thread: the chunk opened, verified and picked from its stored bytes. */
export async function pickStored(job: PickJob, stored: Buffer): Promise<RowBlock> {
  const content = await openChunk(job.id, stored);
  return pickLines(content, job.keyColumns, keySet(job.keyColumns, job.keys));
}
