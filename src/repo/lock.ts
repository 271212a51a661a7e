/**
 * Repository locks: `locks/<uuid>.json`, one object per holder.
 *
 * Writers that add data (backup) take a shared lock; writers that remove data
 * (prune) take an exclusive one; readers that must not lose chunks mid-way
 * (restore) take a shared one. A holder writes its lock, then lists the
 * others: if any conflicts, it removes its own and fails, naming the holder.
 * Two simultaneous acquirers may both back off; neither proceeds wrongly.
 *
 * A lock is stale when its process is gone (same host: the PID is checked) or
 * it has not been refreshed for STALE_AFTER_MS (another host). Holders refresh
 * every REFRESH_MS. `flashback unlock` removes stale locks.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { RepositoryLockedError } from '../errors.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import { isAlive } from '../util/process.js';

/** A lock as stored. */
export interface LockInfo {
  readonly id: string;
  readonly exclusive: boolean;
  readonly pid: number;
  readonly hostname: string;
  /** What holds it, e.g. `backup prod`. */
  readonly command: string;
  readonly created: string;
  readonly refreshed: string;
}

/** A lock with its staleness judged now. */
export interface LockStatus extends LockInfo {
  readonly stale: boolean;
  readonly staleReason?: string | undefined;
}

/** A lock not refreshed for this long is stale (holders on other hosts). */
export const STALE_AFTER_MS = 30 * 60_000;
const REFRESH_MS = 5 * 60_000;

/** A held lock; call `release()` when done. */
export class RepositoryLock {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly storage: Storage,
    readonly info: LockInfo,
  ) {}

  /** Acquires a lock or throws RepositoryLockedError naming the conflicting holder. */
  static async acquire(
    storage: Storage,
    options: { exclusive: boolean; command: string },
  ): Promise<RepositoryLock> {
    const now = new Date().toISOString();
    const info: LockInfo = {
      id: randomUUID(),
      exclusive: options.exclusive,
      pid: process.pid,
      hostname: os.hostname(),
      command: options.command,
      created: now,
      refreshed: now,
    };
    await storage.write(lockKey(info.id), serialize(info));
    const others = (await listLocks(storage)).filter((l) => l.id !== info.id && !l.stale);
    const conflict = others.find((l) => l.exclusive || info.exclusive);
    if (conflict !== undefined) {
      await storage.delete(lockKey(info.id));
      throw new RepositoryLockedError(
        `the repository at ${storage.location} is locked${conflict.exclusive ? ' exclusively' : ''} by "${conflict.command}" (pid ${conflict.pid} on ${conflict.hostname}, since ${conflict.created})`,
        {
          hint: 'wait for it to finish; if that process is gone, `flashback unlock` removes stale locks',
        },
      );
    }
    const lock = new RepositoryLock(storage, info);
    lock.timer = setInterval(() => void lock.refresh(), REFRESH_MS);
    lock.timer.unref();
    return lock;
  }

  private async refresh(): Promise<void> {
    const info = { ...this.info, refreshed: new Date().toISOString() };
    await this.storage.write(lockKey(info.id), serialize(info)).catch(() => {});
  }

  /** Releases the lock. Safe to call twice. */
  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.storage.delete(lockKey(this.info.id));
  }
}

/**
 * Runs `fn` holding a shared lock: for readers that must not lose chunks or
 * change-log segments to a prune half-way (prune's exclusive lock then waits
 * for them, or they for it, each told who holds the repository).
 */
export async function whileShared<T>(
  storage: Storage,
  command: string,
  fn: () => Promise<T>,
): Promise<T> {
  const lock = await RepositoryLock.acquire(storage, { exclusive: false, command });
  try {
    return await fn();
  } finally {
    await lock.release().catch(() => {});
  }
}

/** Every lock in the repository with its staleness. */
export async function listLocks(storage: Storage, now = Date.now()): Promise<LockStatus[]> {
  const out: LockStatus[] = [];
  for await (const obj of storage.list('locks/')) {
    let info: LockInfo;
    try {
      info = JSON.parse((await storage.read(obj.key)).toString('utf8')) as LockInfo;
    } catch (err) {
      if (err instanceof ObjectNotFoundError) continue; // released while listing
      if (err instanceof SyntaxError) {
        out.push({ ...unreadable(obj.key), stale: true, staleReason: 'unreadable lock file' });
        continue;
      }
      throw err;
    }
    out.push({ ...info, ...staleness(info, now) });
  }
  return out;
}

/** Removes stale locks (or every lock with `all`); returns what was removed. */
export async function removeLocks(
  storage: Storage,
  options: { all: boolean },
): Promise<LockStatus[]> {
  const removed: LockStatus[] = [];
  for (const l of await listLocks(storage)) {
    if (options.all || l.stale) {
      await storage.delete(lockKey(l.id));
      removed.push(l);
    }
  }
  return removed;
}

function staleness(info: LockInfo, now: number): { stale: boolean; staleReason?: string } {
  if (info.hostname === os.hostname() && !isAlive(info.pid)) {
    return { stale: true, staleReason: `process ${info.pid} is not running` };
  }
  const age = now - Date.parse(info.refreshed);
  if (age > STALE_AFTER_MS) {
    return { stale: true, staleReason: `not refreshed for ${Math.round(age / 60_000)} min` };
  }
  return { stale: false };
}

function unreadable(key: string): LockInfo {
  const id = key.slice('locks/'.length).replace(/\.json$/, '');
  return { id, exclusive: true, pid: 0, hostname: '?', command: '?', created: '?', refreshed: '?' };
}

function lockKey(id: string): string {
  return `locks/${id}.json`;
}

function serialize(info: LockInfo): Buffer {
  return Buffer.from(`${JSON.stringify(info, null, 2)}\n`);
}
