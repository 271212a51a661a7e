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
 * - Rows are held as bytes, in memory and in the file: `pushTuple` writes a
 *   logged row's COPY line straight from the log's bytes, with no string
 *   between (an hour of pgbench appends 12 million rows). Only a
 *   cancellation while in memory turns the lines there into strings.
 * - The file is unlinked as soon as it is created: nothing is left behind,
 *   whatever happens to the process. `clear()` (a truncate) empties it.
 *   Its space is freed when the descriptor closes: `close()` when the
 *   overlay is done with (closeOverlay), or else when the spool is garbage
 *   collected (a long-running serve must not keep one per snapshot it made).
 */
import { closeSync, ftruncateSync, read, readSync } from 'node:fs';
import { promisify } from 'node:util';
import { encodeField } from '../pg/copy-text.js';
import type { ChangeValue } from '../repo/changelog.js';
import { lineRoom, tupleLine, tupleLineInto } from '../repo/changelog-format.js';
import type { RowBlock } from '../restore/load.js';
import { createTempFile, writeTemp } from '../util/temp-file.js';
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

/** Default in-memory budget per table (bytes of spool lines). */
const DEFAULT_SPOOL_BUDGET = 32 * 1024 * 1024;

/** Spool lines written to the file in blocks of about this many bytes. */
const WRITE_BLOCK = 1024 * 1024;

export class RowSpool {
  /**
   * Lines are held as bytes (COPY text, each ended by a newline): blocks of
   * about WRITE_BLOCK filled in memory, then written to the file once
   * spilled. A cancellation while in memory turns the lines into strings
   * (`memory`), where equal lines can be counted and taken back; most
   * keyless tables only get inserts and never pay for a string per row.
   */
  private memBlocks: RowBlock[] = [];
  private memBlockBytes = 0;
  /** The block being filled (in memory, or for the file once spilled). */
  private pending = new LineBuffer(0);
  private pendingRows = 0;
  /** In memory as strings (after a cancellation there), instead of memBlocks and pending. */
  private asStrings = false;
  private memory: string[] = [];
  /**
   * In-memory lines and how many of each (cancellation without a scan); built
   * at the first cancellation.
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
    if (this.asStrings) {
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
    if (this.asStrings) {
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

  /** Ends the line just appended to the pending block; a full block goes to the file, or is kept in memory. */
  private endPending(): void {
    this.pending.ensure(1);
    this.pending.buf[this.pending.at++] = 0x0a;
    this.pendingRows++;
    if (this.file.fd !== undefined) {
      if (this.pending.at >= WRITE_BLOCK) this.flush();
      return;
    }
    if (this.pending.at >= WRITE_BLOCK) this.retire();
    if (this.memBlockBytes + this.pending.at > this.budget) this.spill();
  }

  /** The pending block kept in memory as it is; a new one begun. */
  private retire(): void {
    if (this.pendingRows === 0) return;
    this.memBlocks.push({ content: this.pending.content(), rows: this.pendingRows });
    this.memBlockBytes += this.pending.at;
    this.pending = new LineBuffer(WRITE_BLOCK + 64 * 1024);
    this.pendingRows = 0;
  }

  /** Takes back one added row equal to `line` (see the contract); false: none was added. */
  cancel(line: string): boolean {
    if (this.file.fd !== undefined) {
      this.deferred.set(line, (this.deferred.get(line) ?? 0) + 1);
      return true;
    }
    if (!this.asStrings) {
      // The lines in memory as strings from now on (until spilled).
      this.memory = [...this.memoryBytes()].flatMap((b) => linesOfBlock(b.content));
      this.memoryChars = this.memBlockBytes + this.pending.at;
      this.memBlocks = [];
      this.memBlockBytes = 0;
      this.pending = new LineBuffer(0);
      this.pendingRows = 0;
      this.asStrings = true;
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
    this.memBlocks = [];
    this.memBlockBytes = 0;
    this.pending.at = 0;
    this.pendingRows = 0;
    this.asStrings = false;
    this.memory = [];
    this.counts = undefined;
    this.dropped.clear();
    this.memoryChars = 0;
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
    this.file.fd = createTempFile();
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
    for (const b of this.memoryBytes()) yield b;
    const live = this.liveMemory();
    for (let i = 0; i < live.length; i += 10_000) {
      const lines = live.slice(i, i + 10_000);
      yield { content: Buffer.from(`${lines.join('\n')}\n`, 'utf8'), rows: lines.length };
    }
  }

  /** The lines held in memory as bytes: the kept blocks, then (a copy of) the pending one. */
  private *memoryBytes(): Generator<RowBlock> {
    if (this.file.fd !== undefined) return;
    yield* this.memBlocks;
    if (this.pendingRows > 0) {
      yield { content: Buffer.from(this.pending.content()), rows: this.pendingRows };
    }
  }

  /** The in-memory lines held as strings, not taken back. */
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
    // Lines held as bytes, or many as strings, go by the file: copying it
    // is cheaper than cloning them to the other thread.
    if (
      this.file.fd === undefined &&
      (this.memBlocks.length > 0 || this.pendingRows > 0 || this.memoryChars > WRITE_BLOCK)
    ) {
      this.spill();
    }
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

  /** From now on the rows go to the file: those in memory first. */
  private spill(): void {
    const held = [...this.memoryBytes()];
    const lines = this.asStrings ? this.liveMemory() : [];
    this.file.fd = this.borrowed ?? createTempFile();
    this.file.borrowed = this.borrowed !== undefined;
    for (const b of held) this.write(b.content, b.rows);
    this.memBlocks = [];
    this.memBlockBytes = 0;
    this.pending = new LineBuffer(WRITE_BLOCK + 64 * 1024);
    this.pendingRows = 0;
    this.asStrings = false;
    this.memory = [];
    this.counts = undefined;
    this.dropped.clear();
    this.memoryChars = 0;
    for (const line of lines) {
      this.pending.appendString(line);
      this.endPending();
    }
    this.flush();
  }

  /** Writes the pending block to the file (when spilled). */
  private flush(): void {
    if (this.pendingRows === 0 || this.file.fd === undefined) return;
    this.write(this.pending.content(), this.pendingRows);
    // (Written synchronously: the buffer is free again.)
    this.pending.at = 0;
    this.pendingRows = 0;
  }

  private write(block: Buffer, rows: number): void {
    writeTemp(this.file.fd!, block, 0, block.length, this.fileBytes);
    this.fileBytes += block.length;
    this.fileRows += rows;
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
    writeTemp(to, buf, 0, n, at + pos);
    pos += n;
  }
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

/** The lines of a block of whole lines (each ended by a newline). */
function linesOfBlock(content: Buffer): string[] {
  return content.length === 0 ? [] : content.toString('utf8', 0, content.length - 1).split('\n');
}

/** The lines of the first `bytes` of a file, in batches. */
async function* linesOf(fd: number, bytes: number): AsyncGenerator<string[]> {
  for await (const { content } of blocksOf(fd, bytes)) yield linesOfBlock(content);
}
