/**
 * Reading change-log segments ahead on a worker thread, as built (dist/):
 * the same transactions as read inline, checksums verified on the thread,
 * and a damaged or missing segment failing with the segment's error, after
 * the transactions before it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const dist = async <T>(m: string): Promise<T> =>
  (await import(new URL(`../../dist/${m}`, import.meta.url).href)) as T;
const changelog = await dist<typeof import('../../src/repo/changelog.js')>('repo/changelog.js');
const codec = await dist<typeof import('../../src/repo/codec.js')>('repo/codec.js');
const errors = await dist<typeof import('../../src/errors.js')>('errors.js');
const memory = await dist<typeof import('../../src/storage/memory.js')>('storage/memory.js');

const rel = ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]] as const;

/** A log of `n` segments, each one transaction inserting its number. */
async function logOf(n: number) {
  const storage = new memory.MemoryStorage();
  const log = new changelog.ChangeLog(storage, 'prod');
  log.threadBytes = 0; // (a few small segments: read on the thread all the same)
  for (let i = 1; i <= n; i++) {
    const lsn = `0/${(i * 0x100).toString(16)}`;
    const end = `0/${(i * 0x100 + 8).toString(16)}`;
    await log.writeSegment(i, changelog.lsnValue(end), [
      rel,
      ['B', i, lsn, '2026-11-21T10:00:00.000000Z'],
      ['I', 1, [String(i)]],
      ['C', lsn, end, '2026-11-21T10:00:00.000000Z'],
    ]);
  }
  return { storage, log };
}

async function xids(log: InstanceType<typeof changelog.ChangeLog>) {
  const seen: number[] = [];
  const err = await (async () => {
    for await (const tx of changelog.readTransactions(log)) seen.push(tx.xid);
  })().catch((e: unknown) => e);
  return { seen, err };
}

/** A process that reads a log of 12 segments, stops after the third transaction, and has nothing else to wait for. */
const STOPS_EARLY = `
const changelog = await import(${JSON.stringify(new URL('../../dist/repo/changelog.js', import.meta.url).href)});
const memory = await import(${JSON.stringify(new URL('../../dist/storage/memory.js', import.meta.url).href)});
const log = new changelog.ChangeLog(new memory.MemoryStorage(), 'prod');
log.threadBytes = 0;
for (let i = 1; i <= 12; i++) {
  const lsn = '0/' + (i * 256).toString(16), end = '0/' + (i * 256 + 8).toString(16);
  await log.writeSegment(i, changelog.lsnValue(end), [
    ['R', 1, 'public', 't', 'd', [['id', 23, -1, true]]],
    ['B', i, lsn, '2026-11-21T10:00:00.000000Z'], ['I', 1, [String(i)]], ['C', lsn, end, '2026-11-21T10:00:00.000000Z'],
  ]);
}
let n = 0;
await changelog.scanTransactions(log, {}, () => (++n < 3 ? undefined : false));
console.log('read ' + n);
`;

describe('change-log segments read ahead', () => {
  it('a reader that stops early goes on: closing the thread does not end the process', async () => {
    // Before the fix, about half the runs ended in the close's await with
    // status 13 and no output (run from a file; rarer from -e).
    const dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-stops-early-'));
    const script = path.join(dir, 'stops-early.mjs');
    await writeFile(script, STOPS_EARLY);
    try {
      for (let run = 0; run < 12; run++) {
        const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
          execFile(process.execPath, [script], (err, out) =>
            resolve({ code: err === null ? 0 : (err.code as number), out }),
          );
        });
        expect(r).toEqual({ code: 0, out: 'read 3\n' });
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads on a thread what inline reading gives, checksums verified there', async () => {
    const { log } = await logOf(12);
    const segments = await log.segments();
    const verified: boolean[] = [];
    for await (const c of log.contents(segments)) verified.push(c.verified);
    expect(verified).toEqual(Array(12).fill(true));
    // Too few to be worth a thread: inline.
    const few: boolean[] = [];
    for await (const c of log.contents(segments.slice(0, 2))) few.push(c.verified);
    expect(few).toEqual([false, false]);
    // Too few bytes, by default (a thread costs more to start than they take to read): inline.
    const small: boolean[] = [];
    const byDefault = new changelog.ChangeLog(log.storage, 'prod');
    for await (const c of byDefault.contents(segments)) small.push(c.verified);
    expect(small).toEqual(Array(12).fill(false));
    const { seen, err } = await xids(log);
    expect(err).toBeUndefined();
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  it('fails at a damaged segment with its error, after the transactions before it', async () => {
    const { storage, log } = await logOf(12);
    const key = (await log.segments())[5]!.key;
    const { content } = await codec.decodeChunk(await storage.read(key));
    content[content.length - 45]! ^= 0x01; // inside the frames: the checksum no longer matches
    await storage.write(key, await codec.encodeChunk(content));
    const { seen, err } = await xids(log);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(err).toBeInstanceOf(errors.DamagedError);
    expect((err as Error).message).toMatch(
      /segment .*000000000006-.* is damaged \(checksum mismatch/,
    );

    // Not a chunk at all, and missing.
    await storage.write(key, Buffer.from('not a chunk'));
    const bad = await xids(log);
    expect(bad.seen).toEqual([1, 2, 3, 4, 5]);
    expect((bad.err as Error).message).toMatch(
      /000000000006-.* is damaged \(not a Flashback chunk/,
    );
    await storage.delete(key);
    const gone = await xids(log);
    // (Not listed: the gap in the numbers tells, once reading reaches it;
    // what comes before it is read, a moment before it needs nothing more.)
    expect(gone.seen).toEqual([1, 2, 3, 4, 5]);
    expect(gone.err).toBeInstanceOf(errors.DamagedError);
    expect((gone.err as Error).message).toMatch(
      /change-log segment 6 of "prod" is missing \(segments 5 and 7 are stored\)/,
    );
  });
});
