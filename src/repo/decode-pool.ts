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
import type { Worker } from 'node:worker_threads';
import { startThread, threadAvailable } from '../util/thread.js';
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
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<
    number,
    { resolve: (b: Buffer) => void; reject: (e: Error) => void }
  >();
  private readonly load: number[] = [];
  private seq = 0;
  /** A thread died: what it held failed, and reads run inline from then on. */
  private broken = false;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const w = startThread(WORKER);
      w.on('message', (m: Reply) => {
        if (--this.load[i]! === 0) w.unref();
        const p = this.pending.get(m.seq);
        this.pending.delete(m.seq);
        if (p === undefined) return;
        if (m.content !== undefined) {
          p.resolve(Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength));
        } else if (m.hashedTo !== undefined) {
          p.reject(new ChunkHashError(m.hashedTo));
        } else {
          const message = m.error ?? 'decoding failed';
          p.reject(m.format === true ? new ChunkFormatError(message) : new Error(message));
        }
      });
      w.on('error', (err) => {
        this.broken = true;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        for (const x of this.workers) void x.terminate();
      });
      // Referenced only while it holds work (an awaited read must keep the
      // process alive; an idle pool must not). After the listeners: adding
      // one references the thread again.
      w.unref();
      this.workers.push(w);
      this.load.push(0);
    }
  }

  decode(stored: Buffer, id: string): Promise<Buffer> {
    if (this.broken) return inlineDecoder.decode(stored, id);
    const seq = this.seq++;
    let i = 0;
    for (let k = 1; k < this.load.length; k++) if (this.load[k]! < this.load[i]!) i = k;
    if (this.load[i]!++ === 0) this.workers[i]!.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[i]!.postMessage({ seq, stored, id });
    });
  }
}
