/**
 * The net versions of a table's changed keys, as an overlay of the change
 * log holds them (state.ts): for each key, the row's last version in the
 * window, or null when its last change deleted it.
 *
 * Most versions are kept as the bytes the log stored them in (a pgoutput
 * TupleData), copied into an arena of 1 MiB blocks (arena.ts: in memory up
 * to a budget per thread, past it on disk), and decoded into
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
 * - `close()` gives the arena back (its memory, and its blocks on disk)
 *   for the set and its copies, which are not read after; a set that is
 *   not closed gives it back when it is collected.
 */
import {
  type ChangeValue,
  decodeTuple,
  lineRoom,
  tupleLineInto,
} from '../repo/changelog-format.js';
import { integerKey } from '../restore/pick.js';
import { Arena, type ExportedArena } from './arena.js';
import { IntIndex } from './int-index.js';
import { TextIndex } from './text-index.js';

/** A key's last version: its values (chunk column order), or null if deleted. */
export type RowVersion = ChangeValue[] | null;

export class KeyedRows implements Iterable<[string, RowVersion]> {
  /**
   * key → the address of its slot in the arena, its decoded version, or null
   * (deleted), in typed arrays off the heap (CodedVersions): integer keys
   * only in an IntIndex (the usual case); from the first text key on, every
   * key in a TextIndex (in the same order).
   */
  private index = new CodedVersions();
  /** The versions' bytes (in memory up to a budget, then on disk: arena.ts); an index entry is a slot's id. */
  private arena = new Arena();
  /** The arena is shared with a copy: nothing more is written into it. */
  private frozen = false;
  /** How many keys are held as text (not integers). */
  private textKeys = 0;

  get size(): number {
    return this.index.size;
  }

  /** Whether some versions went to disk (past the memory budget: arena.ts). */
  get spilled(): boolean {
    return this.arena.spilled;
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
    if (!this.index.integerOnly) return undefined;
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
    const { buf, start, end } = this.arena.view(at);
    out.ensure(lineRoom(start, end) + 1);
    const stop = tupleLineInto(buf, start, end, out.buf, out.at);
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
    return { keys, codes, decoded, arena: this.arena.export() };
  }

  /**
   * Folds in the versions of a later part of the window (exported by
   * another KeyedRows): each of its keys takes its version there, in its
   * order, as if its changes had been read after this set's. A later
   * version's unsent TOASTed values (0) take this set's version's, as
   * reading the changes in one go would have. The arena's blocks are taken
   * over (slots renumbered past this arena's), not copied, unless some are
   * on disk: then each version is copied.
   */
  absorb(x: ExportedRows): void {
    const other = Arena.imported(x.arena);
    const idOf = this.frozen ? undefined : this.arena.adopt(other);
    for (let i = 0; i < x.codes.length; i++) {
      const key = held(x.keys[i]!);
      const code = x.codes[i]!;
      if (code >= 0) {
        if (idOf !== undefined) this.put(key, idOf(code));
        else {
          const v = other.view(code);
          this.setStored(key, v.buf, v.start, v.end);
        }
      } else if (code === -1) {
        this.put(key, null);
      } else {
        const v = x.decoded[-2 - code]!;
        this.put(key, v.includes(0) ? resolveUnchanged(v, this.get(key) ?? undefined) : v);
      }
    }
    if (idOf === undefined) other.close();
  }

  /** Sets the version stored as the TupleData at [start, end) of `content` (its columns in chunk order). */
  setStored(key: Key, content: Buffer, start: number, end: number): void {
    key = held(key);
    const len = end - start;
    const at = this.index.get(key);
    if (typeof at === 'number' && !this.frozen) {
      if (!this.arena.onDisk(at) && len <= this.arena.capacity(at)) {
        // The same slot: no new space, no garbage.
        this.arena.rewrite(at, content, start, end);
        return;
      }
      // A slot on disk is not written again (two more system calls per
      // version): the new version goes to the end, the old one is garbage.
      this.arena.release(at, Arena.slotSize(len));
    } else this.release(key);
    if (at === undefined && typeof key === 'string') this.textKey();
    const slot = this.allocate(len);
    if (slot < 0) {
      this.index.set(key, decodeTuple(content, start, end));
      return;
    }
    this.arena.rewrite(slot, content, start, end);
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
    this.index = new CodedVersions();
    this.textKeys = 0;
    if (!this.frozen) {
      this.arena.close();
      this.arena = new Arena();
    }
  }

  /**
   * Gives back the arena's memory and its blocks on disk now, rather than
   * when the set is collected: this set and its copies are not read after.
   */
  close(): void {
    this.arena.close();
    this.index = new CodedVersions();
    this.textKeys = 0;
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
    c.index = this.index.copy();
    c.arena = this.arena;
    c.frozen = true;
    c.textKeys = this.textKeys;
    return c;
  }

  /** A text key is about to be added: counted, and the index made one that holds text. */
  private textKey(): void {
    this.textKeys++;
    this.index = this.index.withText();
  }

  private decode(at: number): ChangeValue[] {
    const { buf, start, end } = this.arena.view(at);
    return decodeTuple(buf, start, end);
  }

  /** Counts the key's slot, if it has one, as garbage. */
  private release(key: Key): void {
    const at = this.index.get(key);
    if (typeof at === 'number' && !this.frozen) this.arena.release(at);
  }

  /** A new slot of at least `len` bytes (a little more, for a version that grows); -1 when none can be had. */
  private allocate(len: number): number {
    if (this.frozen) return -1;
    if (!this.arena.fits(len) && this.arena.wasteful) this.compact();
    return this.arena.allocate(len);
  }

  /**
   * Moves every live slot into a new arena and gives the old one back. The
   * slots are copied block by block (Arena.eachSlot), so an arena mostly on
   * disk is read once, in order, not a slot at a time. A version the new
   * arena has no room for is kept decoded. The index keeps its order.
   */
  private compact(): void {
    const old = this.arena;
    const fresh = new Arena();
    const n = this.index.size;
    const ids = new Int32Array(n);
    const intKeys = this.textKeys === 0 ? new Float64Array(n) : undefined;
    const textKeys: Key[] = [];
    let m = 0;
    for (const [key, at] of this.index) {
      if (typeof at !== 'number') continue;
      ids[m] = at;
      if (intKeys !== undefined) intKeys[m] = key as number;
      else textKeys.push(key);
      m++;
    }
    old.eachSlot(ids, m, (i, buf, start, end) => {
      const key = intKeys !== undefined ? intKeys[i]! : textKeys[i]!;
      const id = fresh.allocate(end - start);
      if (id < 0) {
        this.index.set(key, decodeTuple(buf, start, end));
        return;
      }
      fresh.rewrite(id, buf, start, end);
      this.index.set(key, id);
    });
    old.close();
    this.arena = fresh;
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
  /** Per key: the id of its slot in `arena`, -1 for deleted, or -2 minus its place in `decoded`. */
  readonly codes: Int32Array;
  readonly decoded: ChangeValue[][];
  /** The versions' bytes. */
  readonly arena: ExportedArena;
}

/** What KeyedRows keeps per key (see its `index`). */
type Held = number | ChangeValue[] | null;

/**
 * The index of keys as codes: an arena address as itself, a deletion as -1,
 * a decoded version as -2 minus its place in `decoded`. Integer keys only in
 * an IntIndex (the usual case); from the first text key on, every key in a
 * TextIndex (KeyedRows moves them: `withText`). Both hold their keys
 * outside the JavaScript heap.
 */
class CodedVersions {
  private readonly ints: IntIndex | TextIndex;
  private decoded: (ChangeValue[] | undefined)[];

  constructor(
    ints: IntIndex | TextIndex = new IntIndex(),
    decoded: (ChangeValue[] | undefined)[] = [],
  ) {
    this.ints = ints;
    this.decoded = decoded;
  }

  /** Holds integer keys only (text keys may not be set: see `withText`). */
  get integerOnly(): boolean {
    return this.ints instanceof IntIndex;
  }

  /** The same entries, in order, in an index that also holds text keys. */
  withText(): CodedVersions {
    if (this.ints instanceof TextIndex) return this;
    const text = new TextIndex(this.ints.size);
    for (const [k, v] of this.ints.entries()) text.set(k, v);
    return new CodedVersions(text, this.decoded);
  }

  get size(): number {
    return this.ints.size;
  }

  /**
   * The index to find `key` in, as one that takes any key; undefined for a
   * text key while only integers are held (it is in none).
   */
  private indexFor(key: Key): Pick<TextIndex, 'get' | 'swap' | 'has' | 'delete'> | undefined {
    // (An IntIndex is only ever given numbers: checked here.)
    return typeof key === 'number' || this.ints instanceof TextIndex
      ? (this.ints as TextIndex)
      : undefined;
  }

  get(key: Key): Held | undefined {
    const v = this.indexFor(key)?.get(key);
    return v === undefined ? undefined : this.heldOf(v);
  }

  set(key: Key, value: Held): this {
    const index = this.indexFor(key);
    if (index === undefined) throw new Error('an IntIndex holds integer keys only');
    let code: number;
    if (typeof value === 'number') code = value;
    else if (value === null) code = -1;
    else {
      code = -2 - this.decoded.length;
      this.decoded.push(value);
    }
    const was = index.swap(key, code);
    // A decoded version replaced: its place freed (its array with it).
    if (was !== undefined && was <= -2) this.decoded[-2 - was] = undefined;
    return this;
  }

  has(key: Key): boolean {
    return this.indexFor(key)?.has(key) ?? false;
  }

  delete(key: Key): boolean {
    const index = this.indexFor(key);
    if (index === undefined) return false;
    const was = index.get(key);
    if (was !== undefined && was <= -2) this.decoded[-2 - was] = undefined;
    return index.delete(key);
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

  copy(): CodedVersions {
    return new CodedVersions(this.ints.copy(), this.decoded.slice());
  }

  /** The keys in ascending order with their codes (IntIndex.sorted); undefined with text keys. */
  sorted(): { keys: Float64Array; values: Int32Array } | undefined {
    return this.ints instanceof IntIndex ? this.ints.sorted() : undefined;
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
