/**
 * Worker thread body for picking rows out of chunks (see pick.ts): receives
 * a chunk's stored bytes and the wanted keys, answers with the wanted lines.
 */
import { parentPort } from 'node:worker_threads';
import { ChunkError } from '../repo/chunks.js';
import { ownedCopy } from '../util/thread.js';
import { type PickJob, type PickReply, pickStored } from './pick.js';

interface Job extends PickJob {
  readonly seq: number;
  readonly stored: Uint8Array;
}

parentPort?.on('message', (job: Job) => {
  const stored = Buffer.from(job.stored.buffer, job.stored.byteOffset, job.stored.byteLength);
  pickStored(job, stored).then(
    (block) => {
      const content = ownedCopy(block.content);
      const reply: PickReply = { seq: job.seq, content, rows: block.rows };
      parentPort?.postMessage(reply, [content.buffer as ArrayBuffer]);
    },
    (err: unknown) => {
      const reply: PickReply = {
        seq: job.seq,
        error: (err as Error).message,
        ...(err instanceof ChunkError ? { damagedHint: err.hint ?? '' } : {}),
      };
      parentPort?.postMessage(reply);
    },
  );
});
