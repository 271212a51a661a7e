/**
 * Chunk compression off the main thread. The main thread of a backup parses
 * two COPY streams, cuts chunks and hashes them; compressing there too made
 * it the bottleneck on a 2-core machine. A small pool of worker threads
 * compresses instead. Content is copied to the thread (structured clone),
 * never transferred: a transfer would detach the caller's buffer, and
 * callers still read it (a chunk's length goes into the manifest).
 *
 * When no worker can be started (unit tests run from TypeScript sources
 * under vitest; src/util/thread.ts), compression runs inline: same output,
 * one thread.
 */
import os from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startThread, threadAvailable } from '../util/thread.js';
import { type CodecName, DEFAULT_CODEC, encodeChunk } from './codec.js';

/** Encodes chunk content to its stored form. */
export interface ChunkEncoder {
  encode(content: Buffer, codec?: CodecName): Promise<Buffer>;
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

interface Pending {
  readonly resolve: (b: Buffer) => void;
  readonly reject: (e: Error) => void;
}

class PoolEncoder implements ChunkEncoder {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly load: number[] = [];
  private seq = 0;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const w = startThread(WORKER);
      w.on('message', (m: { seq: number; stored?: Uint8Array; error?: string }) => {
        if (--this.load[i]! === 0) w.unref();
        const p = this.pending.get(m.seq);
        this.pending.delete(m.seq);
        if (m.stored !== undefined)
          p?.resolve(Buffer.from(m.stored.buffer, m.stored.byteOffset, m.stored.byteLength));
        else p?.reject(new Error(m.error ?? 'compression failed'));
      });
      w.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
      // Referenced only while it holds work, after the listeners (adding one references it again).
      w.unref();
      this.workers.push(w);
      this.load.push(0);
    }
  }

  encode(content: Buffer, codec: CodecName = DEFAULT_CODEC): Promise<Buffer> {
    const seq = this.seq++;
    // The least busy worker.
    let i = 0;
    for (let k = 1; k < this.load.length; k++) if (this.load[k]! < this.load[i]!) i = k;
    if (this.load[i]!++ === 0) this.workers[i]!.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[i]!.postMessage({ seq, content, codec });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
