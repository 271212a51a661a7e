/**
 * Chunk reads off the main thread: decompressing and hashing a chunk is
 * most of a read's CPU, and where the main thread also filters or merges
 * rows (undo reading rows scattered over a whole table, check --read-data)
 * it was the bottleneck while the other core idled. A small pool of worker
 * threads, shared by every ChunkStore of the process, decodes and verifies;
 * the content comes back transferred, not copied. Where no worker can be
 * started (src/util/thread.ts), the same work runs inline.
 *
 * Contract: `decode(stored, id)` resolves to the content when it hashes to
 * `id`; rejects with ChunkFormatError when the stored form does not decode,
 * and with ChunkHashError when the content hashes to another id.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import { ThreadPool, threadAvailable } from '../util/thread.js';
import { ChunkFormatError, decodeChunk } from './codec.js';

/** Decodes and verifies stored chunks. */
export interface ChunkDecoder {
  decode(stored: Buffer, id: string): Promise<Buffer>;
}

/** A chunk whose content hashes to another id than the one it is stored under. */
export class ChunkHashError extends Error {
  constructor(readonly actual: string) {
    super(`its content hashes to ${actual}`);
  }
}

/** Decoding on the calling thread. */
export const inlineDecoder: ChunkDecoder = {
  async decode(stored, id) {
    const { content } = await decodeChunk(stored);
    const actual = createHash('sha256').update(content).digest('hex');
    if (actual !== id) throw new ChunkHashError(actual);
    return content;
  },
};

const WORKER = new URL('./decode-worker.js', import.meta.url);

let shared: ChunkDecoder | undefined;

/** The process's decoder: a pool of cores − 1 threads (at least 1), or inline. */
export function sharedDecoder(): ChunkDecoder {
  shared ??= threadAvailable(WORKER)
    ? new PoolDecoder(Math.max(1, os.availableParallelism() - 1))
    : inlineDecoder;
  return shared;
}

interface Reply {
  readonly seq: number;
  readonly content?: Uint8Array;
  readonly hashedTo?: string;
  readonly error?: string;
  readonly format?: boolean;
}

class PoolDecoder implements ChunkDecoder {
  private readonly pool: ThreadPool<Reply>;

  constructor(size: number) {
    this.pool = new ThreadPool<Reply>(WORKER, size);
  }

  async decode(stored: Buffer, id: string): Promise<Buffer> {
    if (this.pool.broken) return inlineDecoder.decode(stored, id);
    const m = await this.pool.run({ stored, id });
    if (m.content !== undefined) {
      return Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength);
    }
    if (m.hashedTo !== undefined) throw new ChunkHashError(m.hashedTo);
    const message = m.error ?? 'decoding failed';
    throw m.format === true ? new ChunkFormatError(message) : new Error(message);
  }
}
