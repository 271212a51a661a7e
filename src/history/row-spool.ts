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
 * - `batches()` hands the rows out in order, in batches of lines; it may be
 *   called more than once.
 * - The file is unlinked as soon as it is created: nothing is left behind,
 *   whatever happens to the process. `clear()` (a truncate) empties it.
 *   Its space is freed when the descriptor closes: `close()` when the
 *   overlay is done with (closeOverlay), or else when the spool is garbage
 *   collected (a long-running serve must not keep one per snapshot it made).
 */
import { closeSync, ftruncateSync, mkdtempSync, openSync, read, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { encodeField } from '../pg/copy-text.js';
import type { ChangeValue } from '../repo/changelog.js';

const readAt = promisify(read);

/** Closes the descriptor of a spool that was collected without close(). */
const collected = new FinalizationRegistry<{ fd: number | undefined }>((file) => {
  if (file.fd !== undefined) closeSync(file.fd);
});

/** The marker of an absent value in a spool line. */
export const ABSENT_FIELD = '\u0000';

/** Default in-memory budget per table (characters of spool lines). */
const DEFAULT_SPOOL_BUDGET = 32 * 1024 * 1024;

/** Spool lines written to the file in blocks of about this many characters. */
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
  private readonly file: { fd: number | undefined } = { fd: undefined };
  private fileBytes = 0;
  private fileRows = 0;
  private pending: string[] = [];
  private pendingChars = 0;
  /** Cancellations asked for after spilling, resolved by settle(). */
  private deferred = new Map<string, number>();

  constructor(private readonly budget: number = DEFAULT_SPOOL_BUDGET) {
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
    this.pending.push(line);
    this.pendingChars += line.length + 1;
    if (this.pendingChars >= WRITE_BLOCK) this.flush();
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
    this.pending = [];
    this.pendingChars = 0;
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
    this.file.fd = createFile();
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
          this.pending.push(line);
          this.pendingChars += line.length + 1;
          if (this.pendingChars >= WRITE_BLOCK) this.flush();
        }
      }
      this.flush();
    } finally {
      closeSync(old);
    }
    return unmatched;
  }

  /** The spool lines in order, in batches (file first, then memory). */
  async *batches(): AsyncGenerator<readonly string[]> {
    this.flush();
    if (this.file.fd !== undefined) yield* linesOf(this.file.fd, this.fileBytes);
    const live = this.liveMemory();
    for (let i = 0; i < live.length; i += 10_000) yield live.slice(i, i + 10_000);
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

  /** Closes the file (its name is long gone); the spool is empty afterwards. */
  close(): void {
    this.clear();
    if (this.file.fd !== undefined) closeSync(this.file.fd);
    this.file.fd = undefined;
  }

  private spill(): void {
    this.file.fd = createFile();
    this.pending = this.liveMemory();
    this.pendingChars = this.memoryChars;
    this.memory = [];
    this.counts = undefined;
    this.dropped.clear();
    this.memoryChars = 0;
    this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0 || this.file.fd === undefined) return;
    const block = Buffer.from(`${this.pending.join('\n')}\n`, 'utf8');
    let off = 0;
    while (off < block.length) {
      off += writeSync(this.file.fd, block, off, block.length - off, this.fileBytes + off);
    }
    this.fileBytes += block.length;
    this.fileRows += this.pending.length;
    this.pending = [];
    this.pendingChars = 0;
  }
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

/** A temporary file, unlinked at once: only the descriptor keeps it. */
function createFile(): number {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flashback-spool-'));
  const file = path.join(dir, 'rows');
  const fd = openSync(file, 'w+', 0o600);
  rmSync(dir, { recursive: true, force: true });
  return fd;
}

/** The lines of the first `bytes` of a file, in batches. */
async function* linesOf(fd: number, bytes: number): AsyncGenerator<string[]> {
  const size = 4 * 1024 * 1024;
  let pos = 0;
  // The start of a line not yet ended, in the blocks it came in: joined once,
  // when it ends (joining at every block made a long line cost its square).
  let carry: Buffer[] = [];
  while (pos < bytes) {
    const buf = Buffer.allocUnsafe(Math.min(size, bytes - pos));
    const { bytesRead } = await readAt(fd, buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    pos += bytesRead;
    const block = buf.subarray(0, bytesRead);
    const lastNl = block.lastIndexOf(0x0a);
    if (lastNl < 0) {
      carry.push(block);
      continue;
    }
    const data = carry.length === 0 ? block : Buffer.concat([...carry, block]);
    const end = data.length - (block.length - lastNl);
    const text = data.toString('utf8', 0, end);
    carry = lastNl + 1 < block.length ? [Buffer.from(block.subarray(lastNl + 1))] : [];
    yield text.split('\n');
  }
  if (carry.length > 0) yield [Buffer.concat(carry).toString('utf8')];
}
