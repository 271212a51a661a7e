/**
 * A map from integer keys to small integers, for KeyedRows' common case:
 * a table keyed by one integer column, whose window changes a million keys.
 *
 * A Map of a million numbers costs a heap object per entry and a hash of a
 * boxed double per lookup: reading an hour of pgbench spent more time in
 * the Map (setting, and looking up each snapshot row's key in the merge)
 * than in decoding the log. This keeps the keys and values in typed arrays,
 * in insertion order, with an open-addressing table (linear probing, the
 * table at most half full) of indexes into them.
 *
 * Contract:
 * - Keys are integers of magnitude below 2^53 (KeyedRows' integer keys are
 *   below 10^15); -0 is 0. Values are int32s other than REMOVED.
 * - get/set/has/delete/size/clear behave as a Map's; `keys()` and
 *   `entries()` give live entries in insertion order (a key deleted and set
 *   again goes to the end, as in a Map). They must not run while keys are
 *   added (a rehash moves entries); changing an existing key's value is fine.
 */

/** The value of a deleted entry (never a caller's value). */
const REMOVED = -0x80000000;
/** Where `slots` holds no entry. */
const EMPTY = -1;

export class IntIndex {
  /** Keys and values of entries, in insertion order (dense; deleted ones marked REMOVED). */
  private keyOf: Float64Array;
  private valueOf: Int32Array;
  /** Entries used in the dense arrays, deleted ones included. */
  private used = 0;
  private live = 0;
  /** Open addressing: each slot an entry's index, or EMPTY. */
  private slots: Int32Array;
  /** 32 minus log2(slots.length): the hash's top bits pick a slot. */
  private shift: number;

  constructor(capacity = 16) {
    let n = 16;
    while (n < 2 * capacity) n *= 2;
    this.slots = new Int32Array(n).fill(EMPTY);
    this.shift = 32 - Math.log2(n);
    this.keyOf = new Float64Array(n / 2);
    this.valueOf = new Int32Array(n / 2);
  }

  get size(): number {
    return this.live;
  }

  /** The entry of `key`, or -1. */
  private find(key: number): number {
    const mask = this.slots.length - 1;
    let s = slotOf(key, this.shift);
    for (;;) {
      const e = this.slots[s]!;
      if (e === EMPTY) return -1;
      // A deleted entry keeps its slot (the probe runs on past it); the key
      // set again has an entry further along.
      if (this.keyOf[e] === key && this.valueOf[e] !== REMOVED) return e;
      s = (s + 1) & mask;
    }
  }

  has(key: number): boolean {
    return this.find(key) >= 0;
  }

  get(key: number): number | undefined {
    const e = this.find(key);
    return e < 0 ? undefined : this.valueOf[e];
  }

  set(key: number, value: number): this {
    this.swap(key, value);
    return this;
  }

  /** Sets the key's value; returns the one it had (undefined: none). */
  swap(key: number, value: number): number | undefined {
    const e = this.find(key);
    if (e >= 0) {
      const was = this.valueOf[e];
      this.valueOf[e] = value;
      return was;
    }
    if (2 * (this.used + 1) > this.slots.length) this.rehash();
    const at = this.used++;
    this.keyOf[at] = key + 0; // (-0 as 0, as a Map keeps it)
    this.valueOf[at] = value;
    this.live++;
    const mask = this.slots.length - 1;
    let s = slotOf(key, this.shift);
    while (this.slots[s] !== EMPTY) s = (s + 1) & mask;
    this.slots[s] = at;
    return undefined;
  }

  delete(key: number): boolean {
    const e = this.find(key);
    if (e < 0) return false;
    this.valueOf[e] = REMOVED;
    this.live--;
    return true;
  }

  clear(): void {
    const fresh = new IntIndex();
    this.keyOf = fresh.keyOf;
    this.valueOf = fresh.valueOf;
    this.slots = fresh.slots;
    this.shift = fresh.shift;
    this.used = 0;
    this.live = 0;
  }

  *keys(): IterableIterator<number> {
    for (let e = 0; e < this.used; e++) if (this.valueOf[e] !== REMOVED) yield this.keyOf[e]!;
  }

  *entries(): IterableIterator<[number, number]> {
    for (let e = 0; e < this.used; e++) {
      const v = this.valueOf[e]!;
      if (v !== REMOVED) yield [this.keyOf[e]!, v];
    }
  }

  /** An independent index with the same entries. */
  copy(): IntIndex {
    const c = new IntIndex(0);
    c.keyOf = this.keyOf.slice();
    c.valueOf = this.valueOf.slice();
    c.slots = this.slots.slice();
    c.shift = this.shift;
    c.used = this.used;
    c.live = this.live;
    return c;
  }

  /**
   * The live entries in ascending key order, as two arrays (keys, and the
   * value of each): a merge meeting keys in order walks them with a cursor,
   * in sequence, instead of probing the table per key (a cache miss or more
   * each, with a million keys). Undefined when the keys' range is too wide
   * for the one native sort of doubles this is (key and entry packed into
   * one exact double: range times entries below 2^53).
   */
  sorted(): { keys: Float64Array; values: Int32Array } | undefined {
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let e = 0; e < this.used; e++) {
      if (this.valueOf[e] === REMOVED) continue;
      const k = this.keyOf[e]!;
      if (k < min) min = k;
      if (k > max) max = k;
    }
    const n = this.live;
    const keys = new Float64Array(n);
    const values = new Int32Array(n);
    if (n === 0) return { keys, values };
    let scale = 1;
    while (scale < this.used) scale *= 2;
    if ((max - min + 1) * scale > 2 ** 53) return undefined;
    const packed = new Float64Array(n);
    let i = 0;
    for (let e = 0; e < this.used; e++) {
      if (this.valueOf[e] !== REMOVED) packed[i++] = (this.keyOf[e]! - min) * scale + e;
    }
    packed.sort();
    for (i = 0; i < n; i++) {
      const x = packed[i]!;
      const high = Math.floor(x / scale);
      keys[i] = high + min;
      values[i] = this.valueOf[x - high * scale]!;
    }
    return { keys, values };
  }

  /**
   * Room for more entries: deleted ones dropped (order kept), and the table
   * doubled unless that left it at most a quarter full.
   */
  private rehash(): void {
    let n = this.slots.length;
    if (4 * (this.live + 1) > n) n *= 2;
    const keys = new Float64Array(n / 2);
    const values = new Int32Array(n / 2);
    let at = 0;
    for (let e = 0; e < this.used; e++) {
      const v = this.valueOf[e]!;
      if (v === REMOVED) continue;
      keys[at] = this.keyOf[e]!;
      values[at++] = v;
    }
    const slots = new Int32Array(n).fill(EMPTY);
    const shift = 32 - Math.log2(n);
    const mask = n - 1;
    for (let e = 0; e < at; e++) {
      let s = slotOf(keys[e]!, shift);
      while (slots[s] !== EMPTY) s = (s + 1) & mask;
      slots[s] = e;
    }
    this.keyOf = keys;
    this.valueOf = values;
    this.slots = slots;
    this.shift = shift;
    this.used = at;
  }
}

/**
 * The slot a key hashes to: its low and high 32 bits mixed, then the top
 * bits of a multiplicative (Fibonacci) hash, so consecutive keys spread.
 */
function slotOf(key: number, shift: number): number {
  const lo = key | 0;
  const hi = Math.floor(key / 4294967296) | 0;
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> shift;
}
