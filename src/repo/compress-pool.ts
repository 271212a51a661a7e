/**
 * Chunk compression off the main thread. The main thread of a backup parses
 * two COPY streams, cuts chunks and hashes them; compressing there too made
 * it the bottleneck on a 2-core machine. A small pool of worker threads
 * compresses instead. Content is copied to the thread (structured clone)
 * unless the caller hands it over: then a buffer owning its whole
 * ArrayBuffer is transferred, which detaches it on the caller's side. A
 * backup hands over every chunk: the two copies of a clone (serialise,
 * deserialise) cost its main thread 0.27 s per 300 MB.
 *
 * When no worker can be started (unit tests run from TypeScript sources
 * under vitest; src/util/thread.ts), compression runs inline: same output,
 * one thread.
 */
import os from 'node:os';
import { ownsMemory, ThreadPool, threadAvailable } from '../util/thread.js';
import { type CodecName, DEFAULT_CODEC, encodeChunk } from './codec.js';

/** Encodes chunk content to its stored form. */
export interface ChunkEncoder {
  /** With `handOver`, content may be transferred to a thread (detached here). */
  encode(content: Buffer, codec?: CodecName, handOver?: boolean): Promise<Buffer>;
  /** Stops any threads. */
  close(): Promise<void>;
}

/** An encoder on the calling thread. */
export const inlineEncoder: ChunkEncoder = {
  encode: (content, codec) => encodeChunk(content, codec),
  close: async () => {},
};

const WORKER = new URL('./compress-worker.js', import.meta.url);

/** A pool of `size` worker threads (default: cores - 1, at least 1), or inline when workers are unavailable. */
export function createEncoder(size = Math.max(1, os.availableParallelism() - 1)): ChunkEncoder {
  if (!threadAvailable(WORKER)) return inlineEncoder;
  return new PoolEncoder(size);
}

class PoolEncoder implements ChunkEncoder {
  private readonly pool: ThreadPool<{ seq: number; stored?: Uint8Array; error?: string }>;

  constructor(size: number) {
    this.pool = new ThreadPool(WORKER, size);
  }

  async encode(
    content: Buffer,
    codec: CodecName = DEFAULT_CODEC,
    handOver = false,
  ): Promise<Buffer> {
    if (this.pool.broken) return encodeChunk(content, codec);
    const whole = handOver && ownsMemory(content);
    const m = await this.pool.run({ content, codec }, whole ? [content.buffer as ArrayBuffer] : []);
    if (m.stored === undefined) throw new Error(m.error ?? 'compression failed');
    return Buffer.from(m.stored.buffer, m.stored.byteOffset, m.stored.byteLength);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
