/**
 * Worker thread body for the second part of a window read in two parts
 * (overlay-parts.ts): gets the window's spec, then its segments' stored
 * bytes one by one; decompresses and verifies each, folds its transactions
 * in (readWindow), acknowledges it; at the end answers with the part,
 * settled and exported. Told to stop, it frees its spool files and says so.
 * Any failure is answered as such: the part is then read on the main thread.
 */
import { parentPort } from 'node:worker_threads';
import { type ScanBoundary, type SegmentInfo, scanContents } from '../repo/changelog.js';
import { frameBody } from '../repo/changelog-format.js';
import { decodeChunk } from '../repo/codec.js';
import { setArenaMemory, useSpillFile } from './arena.js';
import {
  closeTables,
  emptyWindowState,
  exportPart,
  type PartReply,
  type PartRequest,
  settleRemoved,
} from './overlay-parts.js';
import { readWindow, type WindowSpec } from './state.js';

/** Segments received and not yet read; a waiting reader. */
const queue: Array<PartRequest & { kind: 'segment' | 'end' | 'stop' }> = [];
let waiting: (() => void) | undefined;
let stopped = false;

function reply(m: PartReply, transfer?: ArrayBuffer[]): void {
  parentPort?.postMessage(m, transfer);
}

parentPort?.on('message', (m: PartRequest) => {
  if (m.kind === 'start') {
    run(m.scope, m.spec, m.boundary);
    return;
  }
  if (m.kind === 'stop') stopped = true;
  queue.push(m);
  waiting?.();
});

/** The segments' contents as they come, until the end (or a stop). */
async function* contents(): AsyncGenerator<{
  seg: SegmentInfo;
  content: Buffer;
  verified: boolean;
}> {
  for (;;) {
    while (queue.length === 0) {
      await new Promise<void>((r) => {
        waiting = r;
      });
    }
    const m = queue.shift()!;
    if (m.kind !== 'segment' || stopped) return;
    const stored = Buffer.from(m.stored.buffer, m.stored.byteOffset, m.stored.byteLength);
    const { content } = await decodeChunk(stored);
    frameBody(content); // verifies a format-2 checksum
    yield { seg: m.seg, content, verified: true };
    reply({ kind: 'ack' });
  }
}

function run(scope: string, spec: WindowSpec, boundary: ScanBoundary): void {
  if (spec.arenaFile !== undefined) useSpillFile(spec.arenaFile);
  if (spec.arenaMemory !== undefined) setArenaMemory(spec.arenaMemory);
  const state = emptyWindowState();
  readWindow(spec, state, (o, visit) => scanContents(scope, o, contents(), visit, boundary), {
    inPlace: true,
    onProgress: (progress) => reply({ kind: 'progress', progress }),
  })
    .then(async () => {
      if (stopped) {
        closeTables(state);
        reply({ kind: 'stopped' });
        return;
      }
      await settleRemoved(state);
      const { message, transfer } = exportPart(state);
      reply({ kind: 'done', part: message }, transfer);
    })
    .catch((err: unknown) => {
      closeTables(state);
      reply({ kind: 'failed', error: (err as Error).message });
    });
}
