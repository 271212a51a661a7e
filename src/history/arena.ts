/**
 * Where KeyedRows keeps the versions it holds as bytes: slots in blocks of
 * 1 MiB, of which at most a budget per thread stays in memory; past it, the
 * oldest blocks go to a temporary file and are read from there when asked.
 *
 * Why: an overlay holds the last version of every key its window changed.
 * A day of writes to a large table changes tens of millions of keys; at
 * about 150 bytes a version, all in memory, that was gigabytes, and past
 * 1 GiB of blocks the versions were kept decoded on the JavaScript heap,
 * which ends in "heap out of memory" near 25 million keys. With the blocks
 * on disk, memory is the budget plus the key index (KeyedRows: about 20 to
 * 40 bytes a key), and the operating system's page cache serves the reads.
 *
 * A slot is addressed by an id: its byte address in the arena divided by 8
 * (slots are 8-byte aligned), so an int32 addresses 16 GiB of blocks.
 * Each slot: capacity (u32), length (u32), then the bytes.
 *
 * Contract:
 * - `allocate(len)` gives a slot of at least `len` bytes, always in the last
 *   block, which stays in memory; -1 when none can be had (a version larger
 *   than a block, or the arena full): the caller keeps that version decoded.
 * - `view(id)` gives the slot's bytes, in the block or, for a block on disk,
 *   in a scratch buffer that the next `view` of any arena on this thread
 *   overwrites: use the bytes at once.
 * - `rewrite(id, ...)` stores new bytes in the same slot when they fit.
 * - The budget is per thread (setArenaMemory, or FLASHBACK_OVERLAY_MEMORY,
 *   a size such as `512MB`; default 256 MiB): a new block past it takes the place of the
 *   arena's own oldest one, which is written out first. An arena never
 *   evicts another's blocks; a small arena keeps its few.
 * - The file (one per thread, unlinked at once: see createTempFile) gets
 *   its blocks back when an arena is closed, or else when it is garbage
 *   collected; it is emptied whenever no arena uses it.
 * - `export()` hands the blocks to another thread (the ones in memory by
 *   transfer, those on disk by place in the file, which must then be one
 *   the receiver can read: a worker spills into a file the main thread
 *   opened, useSpillFile); `Arena.imported` reads such an export.
 */
import { closeSync, ftruncateSync, readSync } from 'node:fs';
import { parseSize } from '../config/size.js';
import { createTempFile, writeTemp } from '../util/temp-file.js';
import { ownedCopy, ownsMemory } from '../util/thread.js';

const HEADER = 8;
const BLOCK_BITS = 20;
const BLOCK = 1 << BLOCK_BITS;
/** Ids are addresses in units of 8 bytes. */
const ID_BITS = BLOCK_BITS - 3;
/** Past this many blocks (16 GiB, the most an int32 id reaches), no more slots. */
const MAX_BLOCKS = 16384;

/** Blocks on this thread's file, by place; a free list of places given back. */
class SpillFile {
  private fd: number | undefined;
  private next = 0;
  private free: number[] = [];
  private used = 0;

  /** `borrowed`: a file the caller opened (and closes), used instead of one of our own. */
  constructor(private readonly borrowed?: number) {}

  /** The descriptor (opening the file the first time). */
  descriptor(): number {
    if (this.borrowed !== undefined) return this.borrowed;
    this.fd ??= createTempFile('flashback-overlay-');
    return this.fd;
  }

  /** Writes a whole block; its place in the file. */
  put(block: Buffer): number {
    const place = this.free.pop() ?? this.next++;
    writeTemp(this.descriptor(), block, 0, BLOCK, place * BLOCK);
    this.used++;
    return place;
  }

  release(place: number): void {
    this.free.push(place);
    this.used--;
    if (this.used > 0) return;
    // Nothing uses the file: its space is given back.
    this.free = [];
    this.next = 0;
    ftruncateSync(this.descriptor(), 0);
  }

  /** Whether `fd` is this file's (without opening it). */
  is(fd: number): boolean {
    return fd >= 0 && (fd === this.borrowed || fd === this.fd);
  }

  /** Closes a file of our own (a finished worker's borrowed one is its owner's to close). */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

let spill = new SpillFile();
/** Blocks in memory on this thread, over all arenas; the most allowed. */
let resident = 0;
let budget: number | undefined;

/** The default budget: 256 MiB per thread. */
const DEFAULT_BLOCKS = 256;

function budgetBlocks(): number {
  const set = process.env.FLASHBACK_OVERLAY_MEMORY;
  budget ??= (set === undefined ? undefined : overlayMemoryBlocks(set)) ?? DEFAULT_BLOCKS;
  return budget;
}

/**
 * The budget FLASHBACK_OVERLAY_MEMORY gives (a size: `512MB`, `2GB`), in
 * blocks; undefined when it is not a size of at least 16MB (the CLI
 * refuses such a value before anything runs).
 */
export function overlayMemoryBlocks(text: string): number | undefined {
  const bytes = parseSize(text);
  if (bytes === undefined || bytes < 16 * BLOCK) return undefined;
  return Math.floor(bytes / BLOCK);
}

/** Sets this thread's budget, in blocks of 1 MiB (tests; a worker is given its parent's). */
export function setArenaMemory(blocks: number | undefined): void {
  budget = blocks;
}

/** This thread's budget in blocks (to hand to a worker). */
export function arenaMemory(): number {
  return budgetBlocks();
}

/**
 * This thread's arenas spill into `fd` (opened by the caller, who closes
 * it): called before any arena is made here (an arena keeps the file it
 * was made with). A worker does, with a file its parent opened: the files
 * a thread opens itself are closed when it ends.
 */
export function useSpillFile(fd: number): void {
  spill.close();
  spill = new SpillFile(fd);
}

/** Blocks in memory on this thread (tests). */
export function residentBlocks(): number {
  return resident;
}

/** What a collected arena gives back (kept apart from the arena, which the registry must not hold). */
interface Held {
  resident: number;
  readonly places: Set<number>;
  readonly file: SpillFile;
}

const collected = new FinalizationRegistry<Held>(giveBack);

function giveBack(h: Held): void {
  resident -= h.resident;
  h.resident = 0;
  for (const p of h.places) h.file.release(p);
  h.places.clear();
}

/** Scratch for slots read from the file (see `view`), and for slots written there. */
/** What `view` reads first from the file: the header and most versions (scratch may have grown for a larger one). */
const FIRST_READ = 4096;
let readScratch = Buffer.allocUnsafe(FIRST_READ);
let writeScratch = Buffer.allocUnsafe(4096);
/** A slot's header read from the file: apart, so that reading one leaves a `view` intact. */
const headerScratch = Buffer.allocUnsafe(HEADER);

export class Arena {
  /** Each block: in memory, or undefined when on disk (at `placeOf`). */
  private blocks: (Buffer | undefined)[] = [];
  private placeOf: number[] = [];
  /** Blocks before this one are all on disk (they go in order). */
  private firstResident = 0;
  /** Where the last block's free space begins. */
  private tail = BLOCK;
  /** Bytes of slots no key refers to any more, and of blocks' unused ends. */
  private garbage = 0;
  /** Slots allocated, and their bytes (for the mean size of a slot on disk). */
  private slots = 0;
  private slotBytes = 0;
  private readonly held: Held;
  /** Read from an export: nothing of its own to give back, no writes. */
  private readonly foreign: { readonly fd: number } | undefined;

  constructor(foreign?: { readonly fd: number }) {
    this.foreign = foreign;
    this.held = { resident: 0, places: new Set(), file: spill };
    if (foreign === undefined) collected.register(this, this.held, this.held);
  }

  /** Whether a block went to disk. */
  get spilled(): boolean {
    return this.firstResident > 0;
  }

  /** Whether a slot for `len` bytes fits in the last block (else allocate begins a new one). */
  fits(len: number): boolean {
    return this.tail + HEADER + ((len + 15) & ~7) <= BLOCK;
  }

  /** A new slot of at least `len` bytes (with room to grow a little); -1 when none can be had. */
  allocate(len: number): number {
    const capacity = (len + 15) & ~7;
    const need = HEADER + capacity;
    if (need > BLOCK || this.foreign !== undefined) return -1;
    if (this.tail + need > BLOCK) {
      if (this.blocks.length >= MAX_BLOCKS) return -1;
      if (this.blocks.length > 0) this.garbage += BLOCK - this.tail;
      this.blocks.push(this.newBlock());
      this.tail = 0;
    }
    const last = this.blocks.length - 1;
    this.blocks[last]!.writeUInt32LE(capacity, this.tail);
    this.slots++;
    this.slotBytes += need;
    const id = (last << ID_BITS) + (this.tail >>> 3);
    this.tail += need;
    return id;
  }

  /** A block for the end: a new one, or past the budget the memory of the oldest, written out first. */
  private newBlock(): Buffer {
    if (resident >= budgetBlocks() && this.firstResident < this.blocks.length - 1) {
      const old = this.evictOldest();
      this.placeOf.push(-1);
      return old;
    }
    resident++;
    this.held.resident++;
    this.placeOf.push(-1);
    return Buffer.allocUnsafe(BLOCK);
  }

  /** Writes the oldest block in memory to the file; its memory (no longer counted as this arena's block). */
  private evictOldest(): Buffer {
    const i = this.firstResident++;
    const block = this.blocks[i]!;
    const place = this.held.file.put(block);
    this.held.places.add(place);
    this.placeOf[i] = place;
    this.blocks[i] = undefined;
    return block;
  }

  /** Past the budget (blocks adopted from another thread): the oldest go to disk. */
  private trim(): void {
    while (resident > budgetBlocks() && this.firstResident < this.blocks.length - 1) {
      this.evictOldest();
      resident--;
      this.held.resident--;
    }
  }

  /** The slot's capacity in bytes. */
  capacity(id: number): number {
    const [block, off] = this.locate(id);
    if (block !== undefined) return block.readUInt32LE(off);
    return this.readHeader(id).readUInt32LE(0);
  }

  /** The slot's bytes (see the contract: a view of scratch memory when on disk). */
  view(id: number): { buf: Buffer; start: number; end: number } {
    const [block, off] = this.locate(id);
    if (block !== undefined) {
      const start = off + HEADER;
      return { buf: block, start, end: start + block.readUInt32LE(off + 4) };
    }
    const pos = this.filePos(id);
    const fd = this.fd();
    // One read for the header and, most of the time, the bytes.
    const got = readSync(fd, readScratch, 0, FIRST_READ, pos);
    const len = readScratch.readUInt32LE(4);
    if (HEADER + len > got) {
      if (readScratch.length < HEADER + len) readScratch = Buffer.allocUnsafe(2 * (HEADER + len));
      readAll(fd, readScratch, HEADER + len, pos);
    }
    return { buf: readScratch, start: HEADER, end: HEADER + len };
  }

  /** Stores [start, end) of `content` in the slot, which must hold it (capacity). */
  rewrite(id: number, content: Buffer, start: number, end: number): void {
    const [block, off] = this.locate(id);
    const len = end - start;
    if (block !== undefined) {
      block.writeUInt32LE(len, off + 4);
      content.copy(block, off + HEADER, start, end);
      return;
    }
    if (writeScratch.length < 4 + len) writeScratch = Buffer.allocUnsafe(2 * (4 + len));
    writeScratch.writeUInt32LE(len, 0);
    content.copy(writeScratch, 4, start, end);
    writeTemp(this.fd(), writeScratch, 0, 4 + len, this.filePos(id) + 4);
  }

  /** Whether the slot's block is on disk. */
  onDisk(id: number): boolean {
    return this.blocks[id >>> ID_BITS] === undefined;
  }

  /**
   * A slot no key refers to any more: counted as garbage. For a slot on
   * disk, `estimate` (or the mean slot) is counted instead of reading its
   * size: the count only decides when to compact.
   */
  release(id: number, estimate?: number): void {
    if (this.onDisk(id)) {
      this.garbage += estimate ?? (this.slots === 0 ? 0 : Math.ceil(this.slotBytes / this.slots));
      return;
    }
    this.garbage += HEADER + this.capacity(id);
  }

  /** The bytes a slot for `len` bytes takes. */
  static slotSize(len: number): number {
    return HEADER + ((len + 15) & ~7);
  }

  /**
   * Calls `visit` for each of the slots `ids[0..n)` with its bytes, block by
   * block in the arena's order, each block read once (a block on disk into
   * one buffer, used again for the next): how a compaction copies the live
   * slots without a read per slot. `visit` gets the slot's place in `ids`.
   */
  eachSlot(
    ids: Int32Array,
    n: number,
    visit: (i: number, buf: Buffer, start: number, end: number) => void,
  ): void {
    const blocks = this.blocks.length;
    // A counting sort of the slots by block.
    const from = new Int32Array(blocks + 1);
    for (let i = 0; i < n; i++) from[(ids[i]! >>> ID_BITS) + 1]!++;
    for (let b = 0; b < blocks; b++) from[b + 1]! += from[b]!;
    const next = from.slice(0, blocks);
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[next[ids[i]! >>> ID_BITS]!++] = i;
    const read = this.spilled ? Buffer.allocUnsafe(BLOCK) : undefined;
    for (let b = 0; b < blocks; b++) {
      if (from[b] === from[b + 1]) continue;
      let block = this.blocks[b];
      if (block === undefined) {
        readAll(this.fd(), read!, BLOCK, this.placeOf[b]! * BLOCK);
        block = read!;
      }
      for (let j = from[b]!; j < from[b + 1]!; j++) {
        const i = order[j]!;
        const off = (ids[i]! & ((1 << ID_BITS) - 1)) << 3;
        const start = off + HEADER;
        visit(i, block, start, start + block.readUInt32LE(off + 4));
      }
    }
  }

  /** Whether half the arena is garbage: time to compact (into a new arena). */
  get wasteful(): boolean {
    return this.garbage > (this.blocks.length * BLOCK) / 2;
  }

  /** Gives back the blocks (memory and file); the arena is not used after. */
  close(): void {
    if (this.foreign !== undefined) {
      // An export from this thread (read inline): its blocks on disk are in our file.
      if (spill.is(this.foreign.fd)) {
        for (const p of this.placeOf) if (p >= 0) spill.release(p);
      }
    } else {
      collected.unregister(this.held);
      giveBack(this.held);
    }
    this.blocks = [];
    this.placeOf = [];
    this.firstResident = 0;
    this.tail = BLOCK;
    this.garbage = 0;
  }

  /**
   * The blocks as plain data for another thread (those in memory to be
   * transferred): this arena is not used after. Its blocks on disk are the
   * receiver's from then on: they stay in the file (which is not emptied
   * while they are there) until the receiver closes what it imported, or
   * the file is closed.
   */
  export(): ExportedArena {
    const blocks = this.blocks.map((b) =>
      b === undefined ? null : ((ownsMemory(b) ? b : ownedCopy(b)).buffer as ArrayBuffer),
    );
    resident -= this.held.resident;
    this.held.resident = 0;
    this.held.places.clear();
    return {
      blocks,
      places: this.placeOf.slice(),
      fd: this.spilled ? this.held.file.descriptor() : -1,
      tail: this.tail,
      garbage: this.garbage,
    };
  }

  /** An export, for reading its slots (`view`). */
  static imported(x: ExportedArena): Arena {
    const a = new Arena({ fd: x.fd });
    a.blocks = x.blocks.map((b) => (b === null ? undefined : Buffer.from(b)));
    a.placeOf = x.places.slice();
    // (Blocks go to disk oldest first: those on disk come first.)
    while (a.firstResident < a.blocks.length && a.blocks[a.firstResident] === undefined) {
      a.firstResident++;
    }
    a.tail = x.tail;
    a.garbage = x.garbage;
    return a;
  }

  /**
   * Takes over the blocks of an imported arena that has none on disk, after
   * this one's: the id its slot `id` has here (adoptedId), or undefined when
   * they cannot be taken over (some on disk, or too many blocks): copy the
   * slots instead.
   */
  adopt(other: Arena): ((id: number) => number) | undefined {
    if (other.spilled || this.blocks.length + other.blocks.length > MAX_BLOCKS) return undefined;
    if (other.blocks.length === 0) return (id) => id;
    const base = this.blocks.length;
    if (base > 0) this.garbage += BLOCK - this.tail;
    for (const b of other.blocks) {
      this.blocks.push(b!);
      this.placeOf.push(-1);
    }
    resident += other.blocks.length;
    this.held.resident += other.blocks.length;
    this.tail = other.tail;
    this.garbage += other.garbage;
    this.trim();
    return (id) => id + (base << ID_BITS);
  }

  private locate(id: number): [Buffer | undefined, number] {
    return [this.blocks[id >>> ID_BITS], (id & ((1 << ID_BITS) - 1)) << 3];
  }

  private filePos(id: number): number {
    const place = this.placeOf[id >>> ID_BITS]!;
    return place * BLOCK + ((id & ((1 << ID_BITS) - 1)) << 3);
  }

  private fd(): number {
    return this.foreign?.fd ?? this.held.file.descriptor();
  }

  private readHeader(id: number): Buffer {
    readAll(this.fd(), headerScratch, HEADER, this.filePos(id));
    return headerScratch;
  }
}

/** An Arena as plain data (Arena.export). */
export interface ExportedArena {
  /** Blocks in memory, in order; null where the block is in the file. */
  readonly blocks: (ArrayBuffer | null)[];
  /** Each block's place in the file (-1: in memory). */
  readonly places: number[];
  /** The file's descriptor (-1: none used). */
  readonly fd: number;
  readonly tail: number;
  readonly garbage: number;
}

/** Reads `len` bytes at `pos` into the start of `buf` (a short file is an error: the slot was written). */
function readAll(fd: number, buf: Buffer, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new Error(`overlay file ended at ${pos + got}, inside a slot`);
    got += n;
  }
  return got;
}
