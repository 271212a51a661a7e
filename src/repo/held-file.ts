/**
 * The changes of one very large transaction, kept in a temporary file while
 * the transaction is read (changelog.ts, Held): a reader holds every change
 * of a transaction until its commit, and holding them as places in their
 * segments' contents kept those contents in memory, about 400 MB for a
 * 3,000,000-row UPDATE. Past a budget they are copied here, message by
 * message, and the contents let go.
 *
 * Records, in the transaction's order:
 *   relation index u32 (or OBJECT) | segment index u32 | length u32 | message body
 * A change that came as an object (a truncate, a format-1 segment's change)
 * is kept in memory; its record has the OBJECT marker, its index in place
 * of the segment's, and no body.
 *
 * Contract:
 * - `append` and `appendObject` add in order; `records()` gives them back in
 *   that order, any number of times, each message as its place in a buffer
 *   of its own block (never reused: a visitor may keep a view of it).
 * - Writes are buffered (1 MiB): a record is in the file once `records()`
 *   or `flush()` has run.
 * - `close()` frees the file's space; reading after it throws. A file never
 *   closed is closed when collected.
 */
import { closeSync, readSync } from 'node:fs';
import { createTempFile, writeTemp } from '../util/temp-file.js';
import type { Change, SegmentInfo, StoredRelation } from './changelog.js';

/** The marker of a change kept as an object. */
export const OBJECT = 0xffffffff;
const HEADER = 12;
const WRITE_BLOCK = 1 << 20;
const READ_BLOCK = 4 << 20;

/** Closes the descriptor of a file collected without close(). */
const collected = new FinalizationRegistry<number>((fd) => closeSync(fd));

/** One record as `records()` gives it (the same object each time, updated). */
export interface HeldRecord {
  /** The block holding the message, and the message's place in it. */
  content: Buffer;
  start: number;
  end: number;
  /** The relation index, or OBJECT. */
  relation: number;
  /** The segment index (for an object: its index in `objects`). */
  segment: number;
}

export class HeldFile {
  private fd: number | undefined = createTempFile('flashback-held-');
  private size = 0;
  private readonly buf = Buffer.allocUnsafe(WRITE_BLOCK);
  private used = 0;
  /** The relations and segments records refer to, by index (few per transaction). */
  readonly relations: StoredRelation[] = [];
  readonly segments: SegmentInfo[] = [];
  readonly objects: Change[] = [];
  private readonly relationIndex = new Map<StoredRelation, number>();
  private lastRelation: StoredRelation | undefined;
  private lastIndex = 0;
  private closed = false;

  constructor() {
    collected.register(this, this.fd!, this);
  }

  append(seg: SegmentInfo, content: Buffer, start: number, end: number, r: StoredRelation): void {
    if (r !== this.lastRelation) {
      let i = this.relationIndex.get(r);
      if (i === undefined) {
        i = this.relations.push(r) - 1;
        this.relationIndex.set(r, i);
      }
      this.lastRelation = r;
      this.lastIndex = i;
    }
    if (this.segments.at(-1) !== seg) this.segments.push(seg);
    this.header(this.lastIndex, this.segments.length - 1, end - start);
    this.write(content, start, end);
  }

  appendObject(change: Change): void {
    this.header(OBJECT, this.objects.push(change) - 1, 0);
  }

  private header(relation: number, segment: number, length: number): void {
    if (this.used + HEADER > WRITE_BLOCK) this.flush();
    this.buf.writeUInt32BE(relation, this.used);
    this.buf.writeUInt32BE(segment, this.used + 4);
    this.buf.writeUInt32BE(length, this.used + 8);
    this.used += HEADER;
  }

  private write(content: Buffer, start: number, end: number): void {
    while (start < end) {
      if (this.used === WRITE_BLOCK) this.flush();
      const n = Math.min(end - start, WRITE_BLOCK - this.used);
      content.copy(this.buf, this.used, start, start + n);
      this.used += n;
      start += n;
    }
  }

  /** Writes what is buffered. */
  flush(): void {
    const fd = this.open();
    writeTemp(fd, this.buf, 0, this.used, this.size);
    this.size += this.used;
    this.used = 0;
  }

  /** The records in order. */
  *records(): Generator<HeldRecord> {
    this.flush();
    const r: HeldRecord = { content: Buffer.alloc(0), start: 0, end: 0, relation: 0, segment: 0 };
    let block = r.content;
    let blockAt = 0;
    let pos = 0;
    while (pos < this.size) {
      if (pos + HEADER > blockAt + block.length) {
        block = this.read(pos, HEADER);
        blockAt = pos;
      }
      const h = pos - blockAt;
      r.relation = block.readUInt32BE(h);
      r.segment = block.readUInt32BE(h + 4);
      const length = block.readUInt32BE(h + 8);
      if (pos + HEADER + length > blockAt + block.length) {
        block = this.read(pos, HEADER + length);
        blockAt = pos;
      }
      r.content = block;
      r.start = pos - blockAt + HEADER;
      r.end = r.start + length;
      pos += HEADER + length;
      yield r;
    }
  }

  /** A new buffer holding the file from `pos`: a block, or `min` bytes if more. */
  private read(pos: number, min: number): Buffer {
    const fd = this.open();
    const n = Math.min(Math.max(READ_BLOCK, min), this.size - pos);
    const b = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const k = readSync(fd, b, got, n - got, pos + got);
      if (k === 0) throw new Error('a temporary file of held changes ended early');
      got += k;
    }
    return b;
  }

  private open(): number {
    if (this.fd === undefined) {
      throw new Error(
        this.closed
          ? 'the changes of a transaction were read after the next transaction (their temporary file is closed)'
          : 'no temporary file',
      );
    }
    return this.fd;
  }

  /** Frees the file (idempotent). */
  close(): void {
    if (this.fd === undefined) return;
    collected.unregister(this);
    closeSync(this.fd);
    this.fd = undefined;
    this.closed = true;
  }
}
