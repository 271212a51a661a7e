/**
 * Worker thread body for chunk compression (see compress-pool.ts): receives
 * chunk content, returns the encoded chunk. Kept tiny: it only runs the codec.
 */
import { parentPort } from 'node:worker_threads';
import { ownedCopy } from '../util/thread.js';
import { type CodecName, encodeChunk } from './codec.js';

interface Job {
  readonly seq: number;
  readonly content: Uint8Array;
  readonly codec: CodecName;
}

parentPort?.on('message', (job: Job) => {
  const content = Buffer.from(job.content.buffer, job.content.byteOffset, job.content.byteLength);
  encodeChunk(content, job.codec).then(
    (stored) => {
      const out = ownedCopy(stored);
      parentPort?.postMessage({ seq: job.seq, stored: out }, [out.buffer as ArrayBuffer]);
    },
    (err: unknown) => parentPort?.postMessage({ seq: job.seq, error: (err as Error).message }),
  );
});
