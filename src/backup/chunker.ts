/**
 * Cutting a table's COPY stream into chunks at key-defined boundaries.
 *
 * A chunk ends after a row whose boundary hash (FNV-1a of the row's key
 * columns as COPY text; of the whole row for tables without a key) has its
 * low `boundaryBits` bits zero, or when it reaches `maxBytes`. Because
 * boundaries depend on keys, not on positions or sizes, a change to some rows
 * changes only the chunks holding them: unchanged key ranges produce the
 * same chunks, which the repository stores once. Chunk sizes follow a
 * geometric distribution with mean 2^boundaryBits rows.
 */
import { decodeField, endOfFields, splitFields } from '../pg/copy-text.js';

/** A finished chunk: whole COPY lines, each ending in a newline. */
export interface RawChunk {
  readonly content: Buffer;
  readonly rows: number;
  readonly first: Array<string | null> | null;
  readonly last: Array<string | null> | null;
}

/** How to cut. */
export interface ChunkerOptions {
  /** Number of leading key columns; 0 hashes the whole row and records no keys. */
  readonly keyColumns: number;
  readonly boundaryBits: number;
  /** A chunk is cut at this size even without a boundary (bounds memory). */
  readonly maxBytes: number;
  /**
   * Each chunk's content in a new buffer owning its whole ArrayBuffer, which
   * the chunk store may hand to its compression thread by transfer (a
   * backup). Otherwise a chunk within one received buffer is a view into it
   * (kept alive while the chunk is), which suits readers that only hash.
   */
  readonly ownMemory?: boolean;
}

/** Default ceiling for one chunk's content. */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
/** Target mean chunk size when choosing boundaryBits for a new table. */
export const TARGET_CHUNK_BYTES = 1024 * 1024;

/** boundaryBits giving chunks of about TARGET_CHUNK_BYTES for rows of `avgRowBytes`. */
export function chooseBoundaryBits(avgRowBytes: number): number {
  const rows = TARGET_CHUNK_BYTES / Math.max(8, avgRowBytes);
  return Math.min(20, Math.max(0, Math.round(Math.log2(rows))));
}

const NEWLINE = 0x0a;

/** Incremental chunker: feed COPY data with `push`, then call `end`. */
export class Chunker {
  private parts: Buffer[] = [];
  private size = 0;
  private rows = 0;
  /** The start of a row not yet ended, in the pieces it came in (joined once, when it ends). */
  private carry: Buffer[] = [];
  private first: Array<string | null> | null = null;
  // The last row is kept as offsets into its buffer, not as a slice: a
  // Buffer per row made this loop allocation-bound.
  private lastBuf: Buffer | undefined;
  private lastStart = 0;
  private lastEnd = 0;
  private readonly mask: number;

  constructor(private readonly options: ChunkerOptions) {
    this.mask = options.boundaryBits >= 32 ? 0xffffffff : (1 << options.boundaryBits) - 1;
  }

  /** Consumes COPY bytes (any split); returns chunks completed by them. */
  push(data: Buffer): RawChunk[] {
    const out: RawChunk[] = [];
    let from = 0;
    if (this.carry.length > 0) {
      // Only the row split across buffers is joined, not the carry with the
      // whole new buffer: that copied every byte of a backup once more. A
      // row longer than many reads is joined once, when it ends (joining at
      // every read made a large value's cost grow with its square).
      const nl = data.indexOf(NEWLINE);
      if (nl < 0) {
        this.carry.push(Buffer.from(data));
        return out;
      }
      const line = Buffer.concat([...this.carry, data.subarray(0, nl + 1)]);
      this.carry = [];
      this.scan(line, 0, out);
      from = nl + 1;
    }
    const end = this.scan(data, from, out);
    if (end < data.length) this.carry.push(Buffer.from(data.subarray(end)));
    return out;
  }

  /** Cuts the whole lines of buf from `start`; returns where the unfinished line begins. */
  private scan(buf: Buffer, start: number, out: RawChunk[]): number {
    let segStart = start;
    for (;;) {
      const nl = buf.indexOf(NEWLINE, start);
      if (nl < 0) break;
      const lineEnd = nl + 1;
      const keyEnd =
        this.options.keyColumns > 0 ? endOfFields(buf, start, nl, this.options.keyColumns) : nl;
      if (this.rows === 0 && this.options.keyColumns > 0)
        this.first = this.keyOf(buf.subarray(start, nl));
      this.rows++;
      this.size += lineEnd - start;
      const boundary =
        (fnv1a(buf, start, keyEnd) & this.mask) === 0 || this.size >= this.options.maxBytes;
      this.lastBuf = buf;
      this.lastStart = start;
      this.lastEnd = nl;
      if (boundary) {
        this.parts.push(buf.subarray(segStart, lineEnd));
        out.push(this.finish());
        segStart = lineEnd;
      }
      start = lineEnd;
    }
    if (segStart < start) this.parts.push(buf.subarray(segStart, start));
    return start;
  }

  /** Flushes the last chunk. Throws if the stream ended mid-line. */
  end(): RawChunk[] {
    if (this.carry.length > 0) throw new Error('COPY data ended in the middle of a row');
    return this.rows > 0 ? [this.finish()] : [];
  }

  private finish(): RawChunk {
    let content: Buffer;
    if (this.options.ownMemory === true) {
      // Not a view into a received buffer, nor a slice of Node's pool: the
      // chunk store hands it to the compression thread by transfer.
      content = Buffer.allocUnsafeSlow(this.size);
      let at = 0;
      for (const p of this.parts) at += p.copy(content, at);
    } else {
      content = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    }
    const chunk: RawChunk = {
      content,
      rows: this.rows,
      first: this.first,
      last:
        this.options.keyColumns > 0 && this.lastBuf !== undefined
          ? this.keyOf(this.lastBuf.subarray(this.lastStart, this.lastEnd))
          : null,
    };
    this.parts = [];
    this.size = 0;
    this.rows = 0;
    this.first = null;
    this.lastBuf = undefined;
    return chunk;
  }

  private keyOf(line: Buffer): Array<string | null> {
    return splitFields(line).slice(0, this.options.keyColumns).map(decodeField);
  }
}

/** 32-bit FNV-1a over buf[start, end). */
export function fnv1a(buf: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= buf[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
