/**
 * A map from text keys (and integer keys among them) to small integers,
 * held outside the JavaScript heap: KeyedRows' index once a table's keys
 * are text (a uuid, a composite key).
 *
 * A Map of strings costs about 105 bytes a uuid key, all on the heap, whose
 * limit (about 4 GB here, whatever the machine has) a window of some 35
 * million changed keys reached: "heap out of memory" in the middle of a
 * restore. This keeps each key's UTF-8 bytes in 1 MiB blocks and the
 * entries in typed arrays (about 60 bytes a uuid key, none on the heap),
 * with an open-addressing table as IntIndex has.
 *
 * Contract (as IntIndex's, for text):
 * - Keys are strings, or integers as KeyedRows holds them (`held`): an
 *   integer n is the key String(n), and comes back out as the number; a
 *   string key is never an integer's text (KeyedRows makes those numbers).
 * - Values are int32s other than REMOVED.
 * - get/set/has/delete/size behave as a Map's; `keys()` and `entries()`
 *   give live entries in insertion order (a key deleted and set again goes
 *   to the end, as in a Map). They must not run while keys are added (a
 *   rehash moves entries); changing an existing key's value is fine.
 */

/** The value of a deleted entry (never a caller's value). */
const REMOVED = -0x80000000;
/** Where `slots` holds no entry. */
const EMPTY = -1;
/** Key bytes are kept in blocks of this size (a longer key has a block of its own). */
const BLOCK = 1 << 20;

export class TextIndex {
  /** The key bytes, block after block; an entry's key is at (blockOf, startOf, lengthOf). */
  private blocks: Buffer[] = [Buffer.allocUnsafe(BLOCK)];
  /** Bytes used in the last block. */
  private fill = 0;
  private blockOf: Int32Array;
  private startOf: Int32Array;
  /** The key's byte length; negative for an integer key (its text's length, negated). */
  private lengthOf: Int32Array;
  private valueOf: Int32Array;
  /** Entries used, deleted ones included, and live. */
  private used = 0;
  private live = 0;
  private slots: Int32Array;
  private hashOf: Int32Array;
  /** A key's bytes, while it is looked up. */
  private scratch = Buffer.allocUnsafe(256);

  constructor(capacity = 16) {
    let n = 16;
    while (n < 2 * capacity) n *= 2;
    this.slots = new Int32Array(n).fill(EMPTY);
    this.blockOf = new Int32Array(n / 2);
    this.startOf = new Int32Array(n / 2);
    this.lengthOf = new Int32Array(n / 2);
    this.valueOf = new Int32Array(n / 2);
    this.hashOf = new Int32Array(n / 2);
  }

  get size(): number {
    return this.live;
  }

  /** Writes the key's bytes into `scratch`; their length. */
  private encode(key: string | number): number {
    const text = typeof key === 'number' ? String(key) : key;
    // (UTF-8 takes at most 3 bytes per UTF-16 code unit.)
    if (this.scratch.length < 3 * text.length) {
      this.scratch = Buffer.allocUnsafe(Math.max(2 * this.scratch.length, 3 * text.length));
    }
    return this.scratch.write(text, 0, 'utf8');
  }

  /** The entry of the key whose bytes are in `scratch` (`len` of them, hashing to `h`), or -1. */
  private find(len: number, h: number): number {
    const mask = this.slots.length - 1;
    let s = h & mask;
    for (;;) {
      const e = this.slots[s]!;
      if (e === EMPTY) return -1;
      if (
        this.hashOf[e] === h &&
        this.valueOf[e] !== REMOVED &&
        Math.abs(this.lengthOf[e]!) === len &&
        this.blocks[this.blockOf[e]!]!.compare(
          this.scratch,
          0,
          len,
          this.startOf[e]!,
          this.startOf[e]! + len,
        ) === 0
      ) {
        return e;
      }
      s = (s + 1) & mask;
    }
  }

  private lookup(key: string | number): number {
    const len = this.encode(key);
    return this.find(len, hash(this.scratch, len));
  }

  has(key: string | number): boolean {
    return this.lookup(key) >= 0;
  }

  get(key: string | number): number | undefined {
    const e = this.lookup(key);
    return e < 0 ? undefined : this.valueOf[e];
  }

  set(key: string | number, value: number): this {
    this.swap(key, value);
    return this;
  }

  /** Sets the key's value; returns the one it had (undefined: none). */
  swap(key: string | number, value: number): number | undefined {
    const len = this.encode(key);
    const h = hash(this.scratch, len);
    const e = this.find(len, h);
    if (e >= 0) {
      const was = this.valueOf[e];
      this.valueOf[e] = value;
      return was;
    }
    if (2 * (this.used + 1) > this.slots.length) this.rehash();
    const at = this.used++;
    this.place(at, this.scratch, 0, len, typeof key === 'number');
    this.hashOf[at] = h;
    this.valueOf[at] = value;
    this.live++;
    const mask = this.slots.length - 1;
    let s = h & mask;
    while (this.slots[s] !== EMPTY) s = (s + 1) & mask;
    this.slots[s] = at;
    return undefined;
  }

  delete(key: string | number): boolean {
    const e = this.lookup(key);
    if (e < 0) return false;
    this.valueOf[e] = REMOVED;
    this.live--;
    return true;
  }

  *keys(): IterableIterator<string | number> {
    for (let e = 0; e < this.used; e++) if (this.valueOf[e] !== REMOVED) yield this.keyAt(e);
  }

  *entries(): IterableIterator<[string | number, number]> {
    for (let e = 0; e < this.used; e++) {
      const v = this.valueOf[e]!;
      if (v !== REMOVED) yield [this.keyAt(e), v];
    }
  }

  /** An independent index with the same entries. */
  copy(): TextIndex {
    const c = new TextIndex(0);
    c.blocks = this.blocks.map((b) => Buffer.from(b));
    c.fill = this.fill;
    c.blockOf = this.blockOf.slice();
    c.startOf = this.startOf.slice();
    c.lengthOf = this.lengthOf.slice();
    c.valueOf = this.valueOf.slice();
    c.hashOf = this.hashOf.slice();
    c.slots = this.slots.slice();
    c.used = this.used;
    c.live = this.live;
    return c;
  }

  /** Bytes held outside the heap (tests, and measurements). */
  get bytes(): number {
    const arrays = [this.blockOf, this.startOf, this.lengthOf, this.valueOf, this.hashOf];
    return (
      this.blocks.reduce((n, b) => n + b.length, 0) +
      arrays.reduce((n, a) => n + a.byteLength, 0) +
      this.slots.byteLength
    );
  }

  private keyAt(e: number): string | number {
    const b = this.blocks[this.blockOf[e]!]!;
    const start = this.startOf[e]!;
    const len = this.lengthOf[e]!;
    if (len < 0) return Number(b.toString('latin1', start, start - len));
    return b.toString('utf8', start, start + len);
  }

  /** Stores entry `at`'s key: `len` bytes of `from` at `start`. */
  private place(at: number, from: Buffer, start: number, len: number, integer: boolean): void {
    let block = this.blocks.length - 1;
    if (this.fill + len > this.blocks[block]!.length) {
      this.blocks.push(Buffer.allocUnsafe(Math.max(BLOCK, len)));
      block++;
      this.fill = 0;
    }
    from.copy(this.blocks[block]!, this.fill, start, start + len);
    this.blockOf[at] = block;
    this.startOf[at] = this.fill;
    this.lengthOf[at] = integer ? -len : len;
    this.fill += len;
  }

  /**
   * Room for more entries: deleted ones dropped with their key bytes (order
   * kept), and the table doubled unless that left it at most a quarter full.
   */
  private rehash(): void {
    let n = this.slots.length;
    if (4 * (this.live + 1) > n) n *= 2;
    const old = {
      blocks: this.blocks,
      blockOf: this.blockOf,
      startOf: this.startOf,
      lengthOf: this.lengthOf,
      valueOf: this.valueOf,
      hashOf: this.hashOf,
    };
    this.blocks = [Buffer.allocUnsafe(BLOCK)];
    this.fill = 0;
    this.blockOf = new Int32Array(n / 2);
    this.startOf = new Int32Array(n / 2);
    this.lengthOf = new Int32Array(n / 2);
    this.valueOf = new Int32Array(n / 2);
    this.hashOf = new Int32Array(n / 2);
    const slots = new Int32Array(n).fill(EMPTY);
    const mask = n - 1;
    let at = 0;
    for (let e = 0; e < this.used; e++) {
      const v = old.valueOf[e]!;
      if (v === REMOVED) continue;
      const len = old.lengthOf[e]!;
      this.place(at, old.blocks[old.blockOf[e]!]!, old.startOf[e]!, Math.abs(len), len < 0);
      this.valueOf[at] = v;
      const h = old.hashOf[e]!;
      this.hashOf[at] = h;
      let s = h & mask;
      while (slots[s] !== EMPTY) s = (s + 1) & mask;
      slots[s] = at;
      at++;
    }
    this.slots = slots;
    this.used = at;
  }
}

/** FNV-1a over the bytes, then mixed (the table takes the low bits). */
function hash(b: Buffer, len: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  return h ^ (h >>> 13);
}
