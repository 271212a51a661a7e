/**
 * Worker thread body for reading change-log segments (see ChangeLog.contents):
 * receives a segment's stored bytes, answers with its content decompressed
 * and, for format 2, its checksum verified. Kept tiny: the codec and the
 * checksum only.
 */
import { parentPort } from 'node:worker_threads';
import { ownedCopy, ownsMemory } from '../util/thread.js';
import { frameBody, SegmentFormatError } from './changelog-format.js';
import { decodeChunk } from './codec.js';

interface Job {
  readonly seq: number;
  readonly stored: Uint8Array;
}

/** The reply: the content, or the error and whether it was the segment's format (else the chunk's). */
export interface SegmentReply {
  readonly seq: number;
  readonly content?: Uint8Array;
  readonly error?: string;
  readonly segmentFormat?: boolean;
}

parentPort?.on('message', (job: Job) => {
  const stored = Buffer.from(job.stored.buffer, job.stored.byteOffset, job.stored.byteLength);
  decodeChunk(stored)
    .then(({ content }) => {
      frameBody(content); // verifies a format-2 checksum (throws SegmentFormatError)
      const out = ownsMemory(content) ? content : ownedCopy(content);
      const reply: SegmentReply = { seq: job.seq, content: out };
      parentPort?.postMessage(reply, [out.buffer as ArrayBuffer]);
    })
    .catch((err: unknown) => {
      const reply: SegmentReply = {
        seq: job.seq,
        error: (err as Error).message,
        segmentFormat: err instanceof SegmentFormatError,
      };
      parentPort?.postMessage(reply);
    });
});
