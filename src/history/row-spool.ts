/**
 * The rows a change-log window added to a table without a key: the one part
 * of an overlay that grows with the window rather than with the changed keys
 * (an hour of pgbench appends 12 million history rows). Held in memory up to
 * a budget, then appended to a temporary file, so a restore to a moment
 * stays within bounded memory however long the window is.
 *
 * Rows are kept as spool lines: COPY text fields joined by tabs, with an
 * absent value (a column added after the row was logged, filled from the
 * schema change at the end) written as a single NUL byte, which COPY text
 * never contains.
 *
 * Contract:
 * - `push` appends; `cancel(line)` takes back one added row equal to the
 *   COPY line, for a row the window added and then removed. While the rows
 *   are in memory the answer is immediate; once spilled, the cancellation is
 *   noted and `settle()` (called once the window is read) applies it,
 *   returning the lines it found no added row for: those were removed from
 *   the snapshot instead. Identical lines are interchangeable, so the result
 *   is the same multiset either way.
 * - `blocks()` hands the rows out in order, as blocks of spool lines (each
 *   line ended by a newline); it may be called more than once.
 * - Once spilled, rows are written as bytes: `pushTuple` writes a logged
 *   row's COPY line straight from the log's bytes, with no string between
 *   (an hour of pgbench appends 12 million rows).
 * - The file is unlinked as soon as it is created: nothing is left behind,
 *   whatever happens to the process. `clear()` (a truncate) empties it.
 *   Its space is freed when the descriptor closes: `close()` when the
 *   overlay is done with (closeOverlay), or else when the spool is garbage
 *   collected (a long-running serve must not keep one per snapshot it made).
 */
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  read,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { encodeField } from '../pg/copy-text.js';
import type { ChangeValue } from '../repo/changelog.js';
import { lineRoom, tupleLine, tupleLineInto } from '../repo/changelog-format.js';
import type { RowBlock } from '../restore/load.js';
import { LineBuffer } from './keyed-rows.js';

const readAt = promisify(read);

/** Closes the descriptor of a spool that was collected without close(). */
const collected = new FinalizationRegistry<{ fd: number | undefined; borrowed: boolean }>(
  (file) => {
    if (file.fd !== undefined && !file.borrowed) closeSync(file.fd);
  },
);

/** The marker of an absent value in a spool line. */
export const ABSENT_FIELD = '\u0000';

/** Default in-memory budget per table (characters of spool lines). */
const DEFAULT_SPOOL_BUDGET = 32 * 1024 * 1024;

/** Spool lines written to the file in blocks of about this many bytes. */
const WRITE_BLOCK = 1024 * 1024;

export class RowSpool {
  private memory: string[] = [];
  /**
   * In-memory lines and how many of each (cancellation without a scan); built
   * at the first cancellation only, as most keyless tables only get inserts.
   */
  private counts: Map<string, number> | undefined;
  /**
   * In-memory lines taken back, and how many of each: left in `memory` and
   * skipped when it is read (removing them would scan it per cancellation).
   */
  private dropped = new Map<string, number>();
  private memoryChars = 0;
  /** The file's descriptor, in an object of its own: the finalizer closes it without holding the spool. */
  private readonly file: { fd: number | undefined; borrowed: boolean } = {
    fd: undefined,
    borrowed: false,
  };
  private fileBytes = 0;
  private fileRows = 0;
  /** Once spilled: lines not yet written to the file, as bytes. */
  private pending = new LineBuffer(0);
  private pendingRows = 0;
  /** Cancellations asked for after spilling, resolved by settle(). */
  private deferred = new Map<string, number>();

  /**
   * `borrowed`: an open, empty file to spill into instead of one of its own,
   * which the spool never closes (the caller does). A worker thread's spool
   * spills into a file the main thread opened: files a thread opens are
   * closed when it ends, before the main thread could take them over.
   */
  constructor(
    private readonly budget: number = DEFAULT_SPOOL_BUDGET,
    private readonly borrowed?: number,
  ) {
    collected.register(this, this.file);
  }

  /** Whether the rows went to a file. */
  get spilled(): boolean {
    return this.file.fd !== undefined;
  }

  push(values: readonly ChangeValue[]): void {
    this.pushLine(spoolLine(values));
  }

  /** Appends a row given as its spool line (a COPY text line, when it has no absent value). */
  pushLine(line: string): void {
    if (this.file.fd === undefined) {
      this.memory.push(line);
      this.counts?.set(line, (this.counts.get(line) ?? 0) + 1);
      this.memoryChars += line.length + 1;
      if (this.memoryChars > this.budget) this.spill();
      return;
    }
    this.pending.appendString(line);
    this.endPending();
  }

  /**
   * Appends the row logged as the TupleData at [start, end) of `content`
   * (see tupleLineInto); false, with nothing appended, when a value needs
   * an escape or was not sent: the caller decodes the row and pushes it.
   */
  pushTuple(content: Buffer, start: number, end: number): boolean {
    if (this.file.fd === undefined) {
      const line = tupleLine(content, start, end);
      if (line === undefined) return false;
      this.pushLine(line);
      return true;
    }
    const out = this.pending;
    out.ensure(lineRoom(start, end) + 1);
    const stop = tupleLineInto(content, start, end, out.buf, out.at);
    if (stop < 0) return false;
    out.at = stop;
    this.endPending();
    return true;
  }

  /** Ends the pending line just appended; writes the pending lines out past a block. */
  private endPending(): void {
    this.pending.ensure(1);
    this.pending.buf[this.pending.at++] = 0x0a;
    this.pendingRows++;
    if (this.pending.at >= WRITE_BLOCK) this.flush();
  }

  /** Takes back one added row equal to `line` (see the contract); false: none was added. */
  cancel(line: string): boolean {
    if (this.file.fd !== undefined) {
      this.deferred.set(line, (this.deferred.get(line) ?? 0) + 1);
      return true;
    }
    if (this.counts === undefined) {
      this.counts = new Map();
      for (const l of this.memory) this.counts.set(l, (this.counts.get(l) ?? 0) + 1);
    }
    const n = this.counts.get(line);
    if (n === undefined) return false;
    if (n <= 1) this.counts.delete(line);
    else this.counts.set(line, n - 1);
    // Which of equal lines goes is never observable: the first met when read.
    this.dropped.set(line, (this.dropped.get(line) ?? 0) + 1);
    return true;
  }

  /** Everything added so far is gone (the table was truncated). */
  clear(): void {
    this.memory = [];
    this.counts = undefined;
    this.dropped.clear();
    this.memoryChars = 0;
    this.pending.at = 0;
    this.pendingRows = 0;
    this.deferred.clear();
    if (this.file.fd !== undefined) ftruncateSync(this.file.fd, 0);
    this.fileBytes = 0;
    this.fileRows = 0;
  }

  /**
   * Applies cancellations noted after spilling: one pass over the file when
   * there are any. Returns the lines no added row matched (and how many
   * times): rows the window removed from the snapshot.
   */
  async settle(): Promise<Map<string, number>> {
    this.flush();
    const unmatched = this.deferred;
    this.deferred = new Map();
    if (unmatched.size === 0 || this.file.fd === undefined) return unmatched;
    const old = this.file.fd;
    const oldBytes = this.fileBytes;
    const wasBorrowed = this.file.borrowed;
    this.file.fd = createFile();
    this.file.borrowed = false;
    this.fileBytes = 0;
    this.fileRows = 0;
    try {
      for await (const batch of linesOf(old, oldBytes)) {
        for (const line of batch) {
          // (A line with an absent marker never equals a removed row, which is whole.)
          const n = unmatched.get(line);
          if (n !== undefined) {
            if (n <= 1) unmatched.delete(line);
            else unmatched.set(line, n - 1);
            continue;
          }
          this.pending.appendString(line);
          this.endPending();
        }
      }
      this.flush();
      if (wasBorrowed) {
        // Back into the borrowed file, which stays the one spilled into.
        ftruncateSync(old, 0);
        copyFile(this.file.fd, this.fileBytes, old, 0);
        closeSync(this.file.fd);
        this.file.fd = old;
        this.file.borrowed = true;
      }
    } finally {
      if (!wasBorrowed) closeSync(old);
    }
    return unmatched;
  }

  /** The spool lines in order, in blocks (file first, then memory): see the contract. */
  async *blocks(): AsyncGenerator<RowBlock> {
    this.flush();
    if (this.file.fd !== undefined) yield* blocksOf(this.file.fd, this.fileBytes);
    const live = this.liveMemory();
    for (let i = 0; i < live.length; i += 10_000) {
      const lines = live.slice(i, i + 10_000);
      yield { content: Buffer.from(`${lines.join('\n')}\n`, 'utf8'), rows: lines.length };
    }
  }

  /** The in-memory lines not taken back. */
  private liveMemory(): string[] {
    if (this.dropped.size === 0) return this.memory;
    const skip = new Map(this.dropped);
    return this.memory.filter((line) => {
      const n = skip.get(line);
      if (n === undefined) return true;
      if (n <= 1) skip.delete(line);
      else skip.set(line, n - 1);
      return false;
    });
  }

  /**
   * Hands the rows over as plain data for another thread: the file's
   * descriptor (no longer this spool's to close: a borrowed one is its
   * lender's, one of its own the receiver's) and the lines in memory.
   * Cancellations must be settled first. The spool is empty afterwards.
   */
  release(): ReleasedSpool {
    if (this.deferred.size > 0) throw new Error('RowSpool.release before settle');
    // Many lines go by the file: copying it is cheaper than cloning them to the other thread.
    if (this.file.fd === undefined && this.memoryChars > WRITE_BLOCK) this.spill();
    this.flush();
    const out: ReleasedSpool = {
      fd: this.file.fd,
      bytes: this.fileBytes,
      rows: this.fileRows,
      lines: [...this.liveMemory()],
    };
    this.file.fd = undefined;
    this.file.borrowed = false;
    this.clear();
    return out;
  }

  /**
   * Appends the rows of a released spool after this one's (their file's
   * content copied into this spool's file; closing that file stays the
   * caller's). Cancellations of this spool's rows must be settled first:
   * the rows appended came after them.
   */
  adopt(r: ReleasedSpool): void {
    if (this.deferred.size > 0) throw new Error('RowSpool.adopt before settle');
    if (r.fd !== undefined && r.bytes > 0) {
      if (this.file.fd === undefined) this.spill();
      this.flush();
      copyFile(r.fd, r.bytes, this.file.fd!, this.fileBytes);
      this.fileBytes += r.bytes;
      this.fileRows += r.rows;
    }
    for (const line of r.lines) this.pushLine(line);
  }

  /** Closes the file (its name is long gone); the spool is empty afterwards. */
  close(): void {
    this.clear();
    if (this.file.fd !== undefined && !this.file.borrowed) closeSync(this.file.fd);
    this.file.fd = undefined;
  }

  private spill(): void {
    this.file.fd = this.borrowed ?? createFile();
    this.file.borrowed = this.borrowed !== undefined;
    const lines = this.liveMemory();
    this.memory = [];
    this.counts = undefined;
    this.dropped.clear();
    this.memoryChars = 0;
    this.pending = new LineBuffer(WRITE_BLOCK + 64 * 1024);
    for (const line of lines) {
      this.pending.appendString(line);
      this.endPending();
    }
    this.flush();
  }

  private flush(): void {
    if (this.pendingRows === 0 || this.file.fd === undefined) return;
    const block = this.pending.content();
    let off = 0;
    while (off < block.length) {
      off += writeSync(this.file.fd, block, off, block.length - off, this.fileBytes + off);
    }
    this.fileBytes += block.length;
    this.fileRows += this.pendingRows;
    // (Written synchronously: the buffer is free again.)
    this.pending.at = 0;
    this.pendingRows = 0;
  }
}

/** A RowSpool's rows as plain data (RowSpool.release): its file's descriptor and bytes, then lines in memory. */
export interface ReleasedSpool {
  readonly fd: number | undefined;
  readonly bytes: number;
  readonly rows: number;
  readonly lines: string[];
}

/** A row as a spool line (absent values as the NUL marker). */
function spoolLine(values: readonly ChangeValue[]): string {
  let out = '';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += '\t';
    out += v === 0 ? ABSENT_FIELD : encodeField(v ?? null);
  }
  return out;
}

/** Copies the first `bytes` of file `from` into file `to` at `at`. */
function copyFile(from: number, bytes: number, to: number, at: number): void {
  const buf = Buffer.allocUnsafe(Math.min(4 * 1024 * 1024, Math.max(bytes, 1)));
  let pos = 0;
  while (pos < bytes) {
    const n = readSync(from, buf, 0, Math.min(buf.length, bytes - pos), pos);
    if (n === 0) throw new Error('a spool file ended early');
    let off = 0;
    while (off < n) off += writeSync(to, buf, off, n - off, at + pos + off);
    pos += n;
  }
}

/** A temporary file, unlinked at once: only the descriptor keeps it. */
export function createFile(): number {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flashback-spool-'));
  const file = path.join(dir, 'rows');
  const fd = openSync(file, 'w+', 0o600);
  rmSync(dir, { recursive: true, force: true });
  return fd;
}

/** The first `bytes` of a file (whole lines), in blocks of whole lines with their count. */
async function* blocksOf(fd: number, bytes: number): AsyncGenerator<RowBlock> {
  const size = 4 * 1024 * 1024;
  let pos = 0;
  // The start of a line not yet ended, in the blocks it came in: joined once,
  // when it ends (joining at every block made a long line cost its square).
  let carry: Buffer[] = [];
  while (pos < bytes) {
    const buf = Buffer.allocUnsafe(Math.min(size, bytes - pos));
    const { bytesRead } = await readAt(fd, buf, 0, buf.length, pos);
    if (bytesRead === 0) throw new Error('a spool file ended early');
    pos += bytesRead;
    const block = buf.subarray(0, bytesRead);
    const lastNl = block.lastIndexOf(0x0a);
    if (lastNl < 0) {
      carry.push(block);
      continue;
    }
    const head = block.subarray(0, lastNl + 1);
    const content = carry.length === 0 ? head : Buffer.concat([...carry, head]);
    carry = lastNl + 1 < block.length ? [block.subarray(lastNl + 1)] : [];
    let rows = 0;
    for (let i = content.indexOf(0x0a); i >= 0; i = content.indexOf(0x0a, i + 1)) rows++;
    yield { content, rows };
  }
  // (The file holds whole lines: nothing is carried past its end.)
  if (carry.length > 0) throw new Error('a spool file ends inside a line');
}

/** The lines of the first `bytes` of a file, in batches. */
async function* linesOf(fd: number, bytes: number): AsyncGenerator<string[]> {
  for await (const { content } of blocksOf(fd, bytes)) {
    yield content.toString('utf8', 0, content.length - 1).split('\n');
  }
}
