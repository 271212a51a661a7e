/**
 * The net versions of a table's changed keys, as an overlay of the change
 * log holds them (state.ts): for each key, the row's last version in the
 * window, or null when its last change deleted it.
 *
 * Most versions are kept as the bytes the log stored them in (a pgoutput
 * TupleData), copied into an arena of 1 MiB blocks, and decoded into
 * values only when asked for (or written out as a COPY line straight from
 * the bytes: `writeLine`). A long window replaces most versions many
 * times over (an hour of pgbench rewrites each of a million rows about ten
 * times): keeping each as an array of strings made reading such a log
 * allocation- and GC-bound (a quarter of its time in the collector), and
 * took about 250 bytes a key where the bytes take about 140.
 *
 * Keys are the COPY text of the key fields. One that is an integer as
 * PostgreSQL prints it is held as a number (a lookup then compares no
 * strings), and a caller that has the number may pass it instead of the
 * text: 42 and "42" are the same key.
 *
 * Contract:
 * - Map-like: `get`, `set`, `has`, `delete`, `clear`, `size`, `keys`, and
 *   iteration of [key, version] in insertion order, as a Map would give;
 *   keys come out as text (`heldKeys` gives integers as numbers). A
 *   version read back equals the one stored, whichever way it was stored.
 * - `setStored` copies the bytes: the caller's buffer may be reused.
 * - A version stored again in the same slot when it fits (a row rewritten
 *   keeps its size, most of the time); space a version leaves is reclaimed
 *   by compacting the arena once it is half garbage.
 * - `sorted()` gives the integer keys in ascending order with their
 *   versions (SortedVersions), for a merge that meets rows in key order;
 *   the set must not change while it is used.
 * - `copy()` gives an independent set of keys over the same arena: after
 *   it, neither writes into the arena again (versions set later are kept
 *   decoded), so each copy reads what it was given.
 */
import {
  type ChangeValue,
  decodeTuple,
  lineRoom,
  tupleLineInto,
} from '../repo/changelog-format.js';
import { integerKey } from '../restore/pick.js';
import { ownedCopy, ownsMemory } from '../util/thread.js';
import { IntIndex } from './int-index.js';

/** A key's last version: its values (chunk column order), or null if deleted. */
export type RowVersion = ChangeValue[] | null;

/** Each slot: capacity (u32), length (u32), then the bytes. */
const HEADER = 8;
/**
 * The arena is blocks of this size, added as needed (growing one buffer by
 * copying it cost more than filling it); a slot's address is its block's
 * index times this plus its offset. A version too large for a block is kept
 * decoded.
 */
const BLOCK_BITS = 20;
const BLOCK = 1 << BLOCK_BITS;
/** Past this many blocks (1 GiB), versions are kept decoded. */
const MAX_BLOCKS = 1024;

export class KeyedRows implements Iterable<[string, RowVersion]> {
  /**
   * key → the address of its slot in the arena, its decoded version, or null
   * (deleted). Integer keys only (the usual case): typed arrays (IntVersions);
   * from the first text key on, a Map (in the same order).
   */
  private index: VersionIndex = new IntVersions();
  private blocks: Buffer[] = [];
  /** Where the last block's free space begins. */
  private tail = BLOCK;
  /** Bytes of slots no key refers to any more, and of blocks' unused ends. */
  private garbage = 0;
  /** The arena is shared with a copy: nothing more is written into it. */
  private frozen = false;
  /** How many keys are held as text (not integers). */
  private textKeys = 0;

  get size(): number {
    return this.index.size;
  }

  /** Every key is an integer as PostgreSQL prints it (a merge may then read keys as numbers). */
  get integerKeysOnly(): boolean {
    return this.textKeys === 0;
  }

  /** Whether every key's last change deleted it (true when there are none). */
  get onlyDeletions(): boolean {
    for (const v of this.index.values()) if (v !== null) return false;
    return true;
  }

  /** Whether the key's last change deleted it. */
  deleted(key: Key): boolean {
    return this.index.get(held(key)) === null;
  }

  /**
   * Appends the key's version to `out` as a COPY line with its newline, made
   * from the stored bytes; false, with nothing appended, when it cannot be
   * (not stored as bytes, or a value needs an escape): then `get` it.
   */
  writeLine(key: Key, out: LineBuffer): boolean {
    const at = this.index.get(held(key));
    return typeof at === 'number' && this.writeSlot(at, out);
  }

  /**
   * The integer keys in ascending order with their versions (see
   * SortedVersions); undefined when a key is text, or the keys' range is
   * too wide to sort so. The set must not change while the view is used.
   */
  sorted(): SortedVersions | undefined {
    if (!(this.index instanceof IntVersions)) return undefined;
    const s = this.index.sorted();
    if (s === undefined) return undefined;
    const index = this.index;
    return new SortedVersions(
      s.keys,
      s.values,
      (at, out) => this.writeSlot(at, out),
      (code) => {
        const v = index.heldOf(code);
        return typeof v === 'number' ? this.decode(v) : v;
      },
    );
  }

  /** writeLine of the version in the slot at `at`. */
  private writeSlot(at: number, out: LineBuffer): boolean {
    const block = this.blocks[at >>> BLOCK_BITS]!;
    const start = (at & (BLOCK - 1)) + HEADER;
    const end = start + block.readUInt32LE(start - 4);
    out.ensure(lineRoom(start, end) + 1);
    const stop = tupleLineInto(block, start, end, out.buf, out.at);
    if (stop < 0) return false;
    out.buf[stop] = 0x0a;
    out.at = stop + 1;
    return true;
  }

  /** The keys as held: an integer key as its number (writeLine and get take either). */
  heldKeys(): IterableIterator<Key> {
    return this.index.keys();
  }

  has(key: Key): boolean {
    return this.index.has(held(key));
  }

  get(key: Key): RowVersion | undefined {
    const v = this.index.get(held(key));
    return typeof v === 'number' ? this.decode(v) : v;
  }

  set(key: Key, version: RowVersion): this {
    this.put(held(key), version);
    return this;
  }

  /** Sets what the index holds for a key as held (an arena address, or a version). */
  private put(k: Key, v: Held): void {
    if (typeof k === 'string' && !this.index.has(k)) this.textKey();
    this.release(k);
    this.index.set(k, v);
  }

  /**
   * The keys and versions as plain data for another thread, the arena's
   * blocks with them (to be transferred, not copied): this set is not used
   * after.
   */
  export(): ExportedRows {
    const n = this.index.size;
    const ints = this.textKeys === 0;
    const keys: Float64Array | Key[] = ints ? new Float64Array(n) : [];
    const codes = new Int32Array(n);
    const decoded: ChangeValue[][] = [];
    let i = 0;
    for (const [key, v] of this.index) {
      if (ints) (keys as Float64Array)[i] = key as number;
      else (keys as Key[]).push(key);
      if (typeof v === 'number') codes[i] = v;
      else if (v === null) codes[i] = -1;
      else {
        codes[i] = -2 - decoded.length;
        decoded.push(v);
      }
      i++;
    }
    const blocks = this.blocks.map((b) => (ownsMemory(b) ? b : ownedCopy(b)).buffer as ArrayBuffer);
    return { keys, codes, decoded, blocks, tail: this.tail, garbage: this.garbage };
  }

  /**
   * Folds in the versions of a later part of the window (exported by
   * another KeyedRows): each of its keys takes its version there, in its
   * order, as if its changes had been read after this set's. A later
   * version's unsent TOASTed values (0) take this set's version's, as
   * reading the changes in one go would have. The arena's blocks are taken
   * over (addresses moved past this arena's), not copied.
   */
  absorb(x: ExportedRows): void {
    const base = this.blocks.length;
    const blocks = x.blocks.map((b) => Buffer.from(b));
    const adopt = !this.frozen && base + blocks.length <= MAX_BLOCKS;
    if (adopt && blocks.length > 0) {
      // This arena's last block's free end is garbage from now on.
      if (base > 0) this.garbage += BLOCK - this.tail;
      this.blocks.push(...blocks);
      this.tail = x.tail;
      this.garbage += x.garbage;
    }
    for (let i = 0; i < x.codes.length; i++) {
      const key = held(x.keys[i]!);
      const code = x.codes[i]!;
      if (code >= 0) {
        const block = blocks[code >>> BLOCK_BITS]!;
        const off = code & (BLOCK - 1);
        if (adopt) this.put(key, (base + (code >>> BLOCK_BITS)) * BLOCK + off);
        else {
          const start = off + HEADER;
          this.setStored(key, block, start, start + block.readUInt32LE(off + 4));
        }
      } else if (code === -1) {
        this.put(key, null);
      } else {
        const v = x.decoded[-2 - code]!;
        this.put(key, v.includes(0) ? resolveUnchanged(v, this.get(key) ?? undefined) : v);
      }
    }
  }

  /** Sets the version stored as the TupleData at [start, end) of `content` (its columns in chunk order). */
  setStored(key: Key, content: Buffer, start: number, end: number): void {
    key = held(key);
    const len = end - start;
    const at = this.index.get(key);
    if (typeof at === 'number' && !this.frozen) {
      const block = this.blocks[at >>> BLOCK_BITS]!;
      const off = at & (BLOCK - 1);
      if (len <= block.readUInt32LE(off)) {
        // The same slot: no new space, no garbage.
        block.writeUInt32LE(len, off + 4);
        content.copy(block, off + HEADER, start, end);
        return;
      }
    }
    if (at === undefined && typeof key === 'string') this.textKey();
    this.release(key);
    const slot = this.allocate(len);
    if (slot < 0) {
      this.index.set(key, decodeTuple(content, start, end));
      return;
    }
    const block = this.blocks[slot >>> BLOCK_BITS]!;
    const off = slot & (BLOCK - 1);
    block.writeUInt32LE(len, off + 4);
    content.copy(block, off + HEADER, start, end);
    this.index.set(key, slot);
  }

  delete(key: Key): boolean {
    const k = held(key);
    this.release(k);
    const had = this.index.delete(k);
    if (had && typeof k === 'string') this.textKeys--;
    return had;
  }

  clear(): void {
    this.index = new IntVersions();
    this.textKeys = 0;
    if (!this.frozen) {
      this.blocks = [];
      this.tail = BLOCK;
      this.garbage = 0;
    }
  }

  *keys(): IterableIterator<string> {
    for (const key of this.index.keys()) yield typeof key === 'number' ? String(key) : key;
  }

  *entries(): IterableIterator<[string, RowVersion]> {
    for (const [key, v] of this.index) {
      yield [
        typeof key === 'number' ? String(key) : key,
        typeof v === 'number' ? this.decode(v) : v,
      ];
    }
  }

  [Symbol.iterator](): IterableIterator<[string, RowVersion]> {
    return this.entries();
  }

  /** The same keys and versions, independent of this one (see the contract). */
  copy(): KeyedRows {
    this.frozen = true;
    const c = new KeyedRows();
    c.index = this.index instanceof IntVersions ? this.index.copy() : new Map(this.index);
    c.blocks = this.blocks;
    c.frozen = true;
    c.textKeys = this.textKeys;
    return c;
  }

  /** A text key is about to be added: counted, and the index made one that holds text. */
  private textKey(): void {
    this.textKeys++;
    if (this.index instanceof IntVersions) this.index = new Map(this.index.entries());
  }

  private decode(at: number): ChangeValue[] {
    const block = this.blocks[at >>> BLOCK_BITS]!;
    const off = at & (BLOCK - 1);
    const len = block.readUInt32LE(off + 4);
    return decodeTuple(block, off + HEADER, off + HEADER + len);
  }

  /** Counts the key's slot, if it has one, as garbage. */
  private release(key: Key): void {
    const at = this.index.get(key);
    if (typeof at === 'number' && !this.frozen) {
      this.garbage += HEADER + this.blocks[at >>> BLOCK_BITS]!.readUInt32LE(at & (BLOCK - 1));
    }
  }

  /** A new slot of at least `len` bytes (a little more, for a version that grows); -1 when none can be had. */
  private allocate(len: number): number {
    const capacity = (len + 15) & ~7;
    const need = HEADER + capacity;
    if (this.frozen || need > BLOCK) return -1;
    if (this.tail + need > BLOCK) {
      if (this.garbage > (this.blocks.length * BLOCK) / 2) this.compact();
      if (this.tail + need > BLOCK) {
        if (this.blocks.length >= MAX_BLOCKS) return -1;
        if (this.blocks.length > 0) this.garbage += BLOCK - this.tail;
        this.blocks.push(Buffer.allocUnsafe(BLOCK));
        this.tail = 0;
      }
    }
    const slot = (this.blocks.length - 1) * BLOCK + this.tail;
    this.blocks[this.blocks.length - 1]!.writeUInt32LE(capacity, this.tail);
    this.tail += need;
    return slot;
  }

  /** Moves every live slot into new blocks, in order (the index updated in place: same iteration order). */
  private compact(): void {
    const old = this.blocks;
    this.blocks = [];
    this.tail = BLOCK;
    this.garbage = 0;
    for (const [key, at] of this.index) {
      if (typeof at !== 'number') continue;
      const block = old[at >>> BLOCK_BITS]!;
      const off = at & (BLOCK - 1);
      const size = HEADER + block.readUInt32LE(off);
      if (this.tail + size > BLOCK) {
        if (this.blocks.length > 0) this.garbage += BLOCK - this.tail;
        this.blocks.push(Buffer.allocUnsafe(BLOCK));
        this.tail = 0;
      }
      block.copy(this.blocks[this.blocks.length - 1]!, this.tail, off, off + size);
      this.index.set(key, (this.blocks.length - 1) * BLOCK + this.tail);
      this.tail += size;
    }
  }
}

/** Bytes being appended to (a block of COPY lines): writeLine's output. */
export class LineBuffer {
  buf: Buffer;
  at = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(Math.max(size, 64));
  }

  /** Room for `n` more bytes. */
  ensure(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.at + n));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
  }

  append(from: Buffer, start: number, end: number): void {
    this.ensure(end - start);
    from.copy(this.buf, this.at, start, end);
    this.at += end - start;
  }

  appendString(text: string): void {
    this.ensure(3 * text.length);
    this.at += this.buf.write(text, this.at, 'utf8');
  }

  /** What was appended (the buffer's own memory: not to be appended to after). */
  content(): Buffer {
    return this.buf.subarray(0, this.at);
  }
}

/** A KeyedRows as plain data (KeyedRows.export), for another thread. */
export interface ExportedRows {
  /** In insertion order; all integers (a Float64Array) unless a key was text. */
  readonly keys: Float64Array | Key[];
  /** Per key: the address of its bytes in `blocks`, -1 for deleted, or -2 minus its place in `decoded`. */
  readonly codes: Int32Array;
  readonly decoded: ChangeValue[][];
  /** The arena's blocks, in order. */
  readonly blocks: ArrayBuffer[];
  /** Where the last block's free space begins, and the bytes no key refers to. */
  readonly tail: number;
  readonly garbage: number;
}

/** What KeyedRows keeps per key (see its `index`). */
type Held = number | ChangeValue[] | null;

/** The part of a Map KeyedRows' index uses (a Map, or IntVersions). */
interface VersionIndex {
  readonly size: number;
  get(key: Key): Held | undefined;
  set(key: Key, value: Held): unknown;
  has(key: Key): boolean;
  delete(key: Key): boolean;
  keys(): IterableIterator<Key>;
  values(): IterableIterator<Held>;
  [Symbol.iterator](): IterableIterator<[Key, Held]>;
}

/**
 * The index of integer keys only, in an IntIndex: an arena address as
 * itself, a deletion as -1, a decoded version as -2 minus its place in
 * `decoded`. A text key is not in it (and may not be set: KeyedRows moves
 * to a Map first).
 */
class IntVersions implements VersionIndex {
  private readonly ints: IntIndex;
  private decoded: (ChangeValue[] | undefined)[];

  constructor(ints = new IntIndex(), decoded: (ChangeValue[] | undefined)[] = []) {
    this.ints = ints;
    this.decoded = decoded;
  }

  get size(): number {
    return this.ints.size;
  }

  get(key: Key): Held | undefined {
    if (typeof key !== 'number') return undefined;
    const v = this.ints.get(key);
    return v === undefined ? undefined : this.heldOf(v);
  }

  set(key: Key, value: Held): this {
    if (typeof key !== 'number') throw new Error('IntVersions holds integer keys only');
    let code: number;
    if (typeof value === 'number') code = value;
    else if (value === null) code = -1;
    else {
      code = -2 - this.decoded.length;
      this.decoded.push(value);
    }
    const was = this.ints.swap(key, code);
    // A decoded version replaced: its place freed (its array with it).
    if (was !== undefined && was <= -2) this.decoded[-2 - was] = undefined;
    return this;
  }

  has(key: Key): boolean {
    return typeof key === 'number' && this.ints.has(key);
  }

  delete(key: Key): boolean {
    if (typeof key !== 'number') return false;
    const was = this.ints.get(key);
    if (was !== undefined && was <= -2) this.decoded[-2 - was] = undefined;
    return this.ints.delete(key);
  }

  keys(): IterableIterator<Key> {
    return this.ints.keys();
  }

  *values(): IterableIterator<Held> {
    for (const [, v] of this.ints.entries()) yield this.heldOf(v);
  }

  *entries(): IterableIterator<[Key, Held]> {
    for (const [k, v] of this.ints.entries()) yield [k, this.heldOf(v)];
  }

  [Symbol.iterator](): IterableIterator<[Key, Held]> {
    return this.entries();
  }

  copy(): IntVersions {
    return new IntVersions(this.ints.copy(), this.decoded.slice());
  }

  /** The keys in ascending order with their codes (IntIndex.sorted). */
  sorted(): { keys: Float64Array; values: Int32Array } | undefined {
    return this.ints.sorted();
  }

  /** What a code stands for: an arena address, null (deleted), or a decoded version. */
  heldOf(v: number): Held {
    return v >= 0 ? v : v === -1 ? null : this.decoded[-2 - v]!;
  }
}

/**
 * A KeyedRows' integer keys in ascending order, each with its version, for
 * a merge that meets a table's rows in key order (pointInTimeSource): a
 * cursor walks the keys in sequence instead of a hash lookup per row, which
 * with a million keys is a cache miss or more each, and most find nothing.
 *
 * Contract: `find(n)` gives the place of key n (or -1); it is fastest
 * called with ascending keys (the cursor walks on), and right in any order
 * (a binary search from the first key out of order on). `taken` is the
 * caller's, one flag per place.
 */
export class SortedVersions {
  readonly taken: Uint8Array;
  private cursor = 0;
  private last = Number.NEGATIVE_INFINITY;
  private ordered = true;

  constructor(
    readonly keys: Float64Array,
    private readonly codes: Int32Array,
    private readonly writeAt: (at: number, out: LineBuffer) => boolean,
    private readonly versionOf: (code: number) => RowVersion,
  ) {
    this.taken = new Uint8Array(keys.length);
  }

  get length(): number {
    return this.keys.length;
  }

  find(n: number): number {
    const keys = this.keys;
    if (this.ordered && n > this.last) {
      this.last = n;
      let p = this.cursor;
      while (p < keys.length && keys[p]! < n) p++;
      this.cursor = p;
      return p < keys.length && keys[p] === n ? p : -1;
    }
    this.ordered = false;
    let lo = 0;
    let hi = keys.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const k = keys[mid]!;
      if (k === n) return mid;
      if (k < n) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Whether the key at place i was deleted by its last change. */
  deleted(i: number): boolean {
    return this.codes[i] === -1;
  }

  /** KeyedRows.writeLine of the key at place i. */
  writeLine(i: number, out: LineBuffer): boolean {
    const code = this.codes[i]!;
    return code >= 0 && this.writeAt(code, out);
  }

  /** KeyedRows.get of the key at place i. */
  get(i: number): RowVersion {
    return this.versionOf(this.codes[i]!);
  }
}

/** Fills "unchanged TOASTed value" markers (0) from the previous version; what remains is resolved against the snapshot row. */
export function resolveUnchanged(
  row: ChangeValue[],
  prev: ChangeValue[] | undefined,
): ChangeValue[] {
  if (prev === undefined || !row.includes(0)) return row;
  return row.map((v, i) => (v === 0 ? (prev[i] ?? 0) : v));
}

/** A key: its text, or the number an integer key's text is. */
export type Key = string | number;

/** The key as the index holds it: an integer's text as its number. */
function held(key: Key): Key {
  return typeof key === 'number' ? key : (integerKey(key) ?? key);
}
