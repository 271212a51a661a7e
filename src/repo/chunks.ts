/**
 * Content-addressed chunks: `chunks/<first 2 hex>/<sha256 of the content>`.
 * A chunk is written once (write-if-absent) and never modified; the same
 * content from any table, snapshot or target is stored once. Reads verify the
 * hash, so a damaged chunk is never handed to a restore.
 */
import { createHash } from 'node:crypto';
import { DamagedError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { ObjectNotFoundError } from '../storage/storage.js';
import { ChunkFormatError, type CodecName, decodeChunk } from './codec.js';
import { type ChunkEncoder, inlineEncoder } from './compress-pool.js';

/** Result of storing a chunk. */
export interface PutResult {
  readonly id: string;
  /** Bytes of the stored object (header + compressed), whether new or not. */
  readonly storedSize: number;
  /** False when an identical chunk was already in the repository (deduplicated). */
  readonly isNew: boolean;
  /** The chunk was there but distrusted (`ChunkStore.distrust`), and was written again. */
  readonly rewritten?: boolean;
}

/** A chunk that is missing or fails its hash: data damaged (exit 8), whichever command meets it. */
export class ChunkError extends DamagedError {
  constructor(
    readonly chunkId: string,
    message: string,
    hint?: string,
  ) {
    super('repository.chunk', message, { hint });
  }
}

/** What `ChunkStore.put` does with a chunk already stored (see `ChunkStore.distrust`). */
export type ReuseVerdict = 'reuse' | 'rewrite' | 'read';

/** A chunk as listed: its id and the bytes its stored object takes. */
export interface StoredChunk {
  readonly id: string;
  readonly storedSize: number;
}

/** `chunks/<hh>/<id>` where `<hh>` is the id's first two digits. */
const CHUNK_KEY = /^chunks\/([0-9a-f]{2})\/(\1[0-9a-f]{62})$/;

/** The sha256 of content, as the chunk id (64 lower-case hex digits). */
export function chunkId(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** The storage key of a chunk id. */
export function chunkKey(id: string): string {
  return `chunks/${id.slice(0, 2)}/${id}`;
}

/** Reads and writes chunks on a storage backend. */
export class ChunkStore {
  /**
   * What to do with a chunk already stored (its id, and its stored size now)
   * instead of writing it: `reuse` it unread; `rewrite` it, replacing it
   * (known damaged, or of another size than a snapshot recorded: cut short);
   * or `read` it first, reusing it only if it decodes and hashes to its id
   * and writing it again if not. A rewrite is safe: the content is the same
   * (its id is its hash), so every snapshot using the chunk restores again.
   * Unset: an existing chunk is always reused (unread).
   */
  distrust: ((id: string, storedSize: number) => ReuseVerdict) | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly encoder: ChunkEncoder = inlineEncoder,
  ) {}

  /** Where the chunks are, for messages. */
  get location(): string {
    return this.storage.location;
  }

  /**
   * Stores content unless an identical chunk exists. The existence check comes
   * first so deduplicated chunks cost no compression.
   *
   * With `handOver`, the caller gives the buffer up: a compression thread may
   * take it by transfer instead of a copy, after which it reads as empty. For
   * buffers that own their whole ArrayBuffer (the chunker's); the caller must
   * read what it needs (its length) before calling.
   */
  async put(
    content: Buffer,
    options: { readonly codec?: CodecName; readonly handOver?: boolean } = {},
  ): Promise<PutResult> {
    const id = chunkId(content);
    const key = chunkKey(id);
    const existing = await this.storage.stat(key);
    let rewrite = false;
    if (existing !== undefined) {
      const verdict = this.distrust?.(id, existing.size) ?? 'reuse';
      rewrite = verdict === 'rewrite' || (verdict === 'read' && !(await this.isWhole(id)));
      if (!rewrite) return { id, storedSize: existing.size, isNew: false };
    }
    const stored = await this.encoder.encode(content, options.codec, options.handOver === true);
    if (rewrite) {
      // (An atomic replace: a reader sees the damaged object or the whole new one.)
      await this.storage.write(key, stored);
      return { id, storedSize: stored.length, isNew: true, rewritten: true };
    }
    const isNew = await this.storage.writeIfAbsent(key, stored);
    return { id, storedSize: stored.length, isNew };
  }

  /** Reads a chunk and verifies it: throws ChunkError if it is missing, undecodable, or its hash differs. */
  async get(id: string): Promise<Buffer> {
    return openChunk(id, await this.readStored(id));
  }

  /**
   * A chunk's stored bytes, not yet decoded or verified (`openChunk` does
   * both, on any thread): ChunkError if it is missing.
   */
  async readStored(id: string): Promise<Buffer> {
    try {
      return await this.storage.read(chunkKey(id));
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        throw new ChunkError(
          id,
          `chunk ${id} is missing from ${this.storage.location}`,
          'run `flashback check` to see what else is affected',
        );
      }
      throw err;
    }
  }

  /** True if the stored chunk decodes and hashes to its id (false also when it is gone). */
  private async isWhole(id: string): Promise<boolean> {
    try {
      await openChunk(id, await this.readStored(id));
      return true;
    } catch (err) {
      if (err instanceof ChunkError) return false;
      throw err;
    }
  }

  /** True if the chunk object exists (not verified). */
  async has(id: string): Promise<boolean> {
    return (await this.storage.stat(chunkKey(id))) !== undefined;
  }

  /**
   * Every stored chunk with its stored size, in no particular order. Objects
   * under `chunks/` not named like a chunk are skipped (never Flashback's).
   */
  async *list(): AsyncIterable<StoredChunk> {
    for await (const obj of this.storage.list('chunks/')) {
      const m = CHUNK_KEY.exec(obj.key);
      if (m !== null) yield { id: m[2]!, storedSize: obj.size };
    }
  }

  /**
   * Deletes a chunk. Only prune calls this, under the exclusive lock, for
   * chunks no manifest references. Deleting a missing chunk is not an error.
   */
  async delete(id: string): Promise<void> {
    await this.storage.delete(chunkKey(id));
  }
}

/** A chunk's content from its stored bytes: ChunkError if they cannot be decoded or do not hash to `id`. */
export async function openChunk(id: string, stored: Buffer): Promise<Buffer> {
  let content: Buffer;
  try {
    content = (await decodeChunk(stored)).content;
  } catch (err) {
    if (err instanceof ChunkFormatError) {
      throw new ChunkError(id, `chunk ${id} is damaged: ${err.message}`, DAMAGED_HINT);
    }
    throw err;
  }
  const actual = chunkId(content);
  if (actual !== id) {
    throw new ChunkError(
      id,
      `chunk ${id} is damaged: its content hashes to ${actual}`,
      DAMAGED_HINT,
    );
  }
  return content;
}

const DAMAGED_HINT = 'run `flashback check --read-data` to see what else is affected';
