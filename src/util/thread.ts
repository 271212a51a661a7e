/**
 * Starting a worker thread from a module beside the caller. Built (dist/),
 * the module is its compiled `.js` file. Run from TypeScript sources under
 * tsx (`npm run bench`, `npx tsx src/cli/bin.ts`), only the `.ts` file
 * exists and a worker does not inherit tsx's loader: it is started through
 * tsx's API instead, so the benchmarks measure the same threads the CLI
 * uses. Elsewhere (vitest) there is no worker and callers work inline.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** Whether a worker can be started for `jsUrl` (see startThread). */
export function threadAvailable(jsUrl: URL): boolean {
  return existsSync(fileURLToPath(jsUrl)) || tsSource(jsUrl) !== undefined;
}

/** A worker running the module at `jsUrl` (or its TypeScript source under tsx). */
export function startThread(jsUrl: URL): Worker {
  if (existsSync(fileURLToPath(jsUrl))) return new Worker(jsUrl);
  const ts = tsSource(jsUrl);
  if (ts === undefined) throw new Error(`no worker module at ${jsUrl.href}`);
  const href = JSON.stringify(ts.href);
  return new Worker(`import('tsx/esm/api').then(({ tsImport }) => tsImport(${href}, ${href}))`, {
    eval: true,
  });
}

/** The `.ts` source of a module, when this process runs under tsx and the file exists. */
function tsSource(jsUrl: URL): URL | undefined {
  if (!process.execArgv.some((a) => a.includes('tsx'))) return undefined;
  const ts = new URL(jsUrl.href.replace(/\.js$/, '.ts'));
  return existsSync(fileURLToPath(ts)) ? ts : undefined;
}

/**
 * Whether `b` is the whole of its ArrayBuffer: then it can be transferred
 * to a thread (moved, not copied) without taking other data with it.
 */
export function ownsMemory(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
}

/** A copy of `b` owning its whole ArrayBuffer, so it can be transferred rather than cloned. */
export function ownedCopy(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.byteLength);
  out.set(b);
  return out;
}

/**
 * Threads running one module. Each job goes to the least busy thread as a
 * message `{seq, ...job}`; the thread answers `{seq, ...}`, which settles
 * the job. A thread is referenced only while it holds work: an awaited job
 * keeps the process alive, an idle pool does not. When a thread dies, every
 * job in flight fails with its error, the pool stops (`broken`), and callers
 * go on inline.
 */
export class ThreadPool<Reply extends { readonly seq: number }> {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<
    number,
    { resolve: (r: Reply) => void; reject: (e: Error) => void }
  >();
  private seq = 0;
  private stopped = false;

  constructor(jsUrl: URL, size: number) {
    for (let i = 0; i < size; i++) {
      const w = startThread(jsUrl);
      w.on('message', (m: Reply) => {
        if (--this.load[i]! === 0) w.unref();
        const p = this.pending.get(m.seq);
        this.pending.delete(m.seq);
        p?.resolve(m);
      });
      w.on('error', (err) => {
        this.stopped = true;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        for (const x of this.workers) void x.terminate();
      });
      // After the listeners: adding one references the thread again.
      w.unref();
      this.workers.push(w);
      this.load.push(0);
    }
  }

  /** A thread died (or close was called): run inline instead. */
  get broken(): boolean {
    return this.stopped;
  }

  /** Runs a job; `transfer` lists buffers moved to the thread rather than copied (detached here). */
  run(job: Record<string, unknown>, transfer: readonly ArrayBuffer[] = []): Promise<Reply> {
    if (this.stopped) return Promise.reject(new Error('the thread pool has stopped'));
    const seq = this.seq++;
    let i = 0;
    for (let k = 1; k < this.load.length; k++) if (this.load[k]! < this.load[i]!) i = k;
    if (this.load[i]!++ === 0) this.workers[i]!.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.workers[i]!.postMessage({ seq, ...job }, [...transfer]);
    });
  }

  /** Stops the threads; jobs still in flight fail. */
  async close(): Promise<void> {
    this.stopped = true;
    for (const p of this.pending.values()) p.reject(new Error('the thread pool was closed'));
    this.pending.clear();
    // Referenced while they stop, and no reply unreferences them again: an
    // unreferenced thread's exit keeps nothing alive, and a process with
    // nothing else to wait for (a restore between reading the log and
    // connecting) ended, silently and with status 13, in this await.
    for (const w of this.workers) {
      w.removeAllListeners('message');
      w.ref();
    }
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
