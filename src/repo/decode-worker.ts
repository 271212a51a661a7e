/**
 * Worker thread body for chunk reads (see decode-pool.ts): receives a stored
 * chunk and the id it must hash to, returns its content, or why it is damaged.
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { ChunkFormatError, decodeChunk } from './codec.js';

interface Job {
  readonly seq: number;
  readonly stored: Uint8Array;
  readonly id: string;
}

parentPort?.on('message', (job: Job) => {
  const stored = Buffer.from(job.stored.buffer, job.stored.byteOffset, job.stored.byteLength);
  decodeChunk(stored).then(
    ({ content }) => {
      // (The chunk id: sha256 of the content, as chunks.ts computes it.)
      const actual = createHash('sha256').update(content).digest('hex');
      if (actual !== job.id) {
        parentPort?.postMessage({ seq: job.seq, hashedTo: actual });
        return;
      }
      // A copy owning its whole buffer: transferred, not cloned.
      const out = new Uint8Array(content.length);
      out.set(content);
      parentPort?.postMessage({ seq: job.seq, content: out }, [out.buffer as ArrayBuffer]);
    },
    (err: unknown) =>
      parentPort?.postMessage({
        seq: job.seq,
        error: (err as Error).message,
        format: err instanceof ChunkFormatError,
      }),
  );
});
