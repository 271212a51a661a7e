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
 *
 * A repository that cannot be written (a read-only mount or permissions, a
 * full disk) must still be readable on the day it is needed: a reader
 * (`reader: true`) whose lock file cannot be written checks that no
 * exclusive lock is held and goes on without one (nobody can prune a
 * read-only repository; on a full one, a prune that starts meanwhile could
 * remove what the reader reads: it then fails, it never reads wrong data).
 * Prune (`deferOnFull`) on a full disk checks that no lock is held, goes on
 * without a file, and records its lock (`record()`, checking again) as soon
 * as it has freed space, before it removes any chunk.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import {
  type FlashbackError,
  OperationError,
  RepositoryError,
  RepositoryLockedError,
} from '../errors.js';
import { ObjectNotFoundError, type Storage } from '../storage/storage.js';
import { isSameProcessAlive, processStart } from '../util/process.js';
import type { RunKind } from './runs.js';

/** A lock as stored. */
export interface LockInfo {
  readonly id: string;
  readonly exclusive: boolean;
  readonly pid: number;
  /**
   * When that process started (processStart; absent in older locks and where
   * it cannot be read): with it, a PID reused by another process after the
   * holder died does not keep the lock alive.
   */
  readonly pidStart?: string | undefined;
  readonly hostname: string;
  /** What holds it, e.g. `backup prod`. */
  readonly command: string;
  readonly created: string;
  readonly refreshed: string;
  /**
   * The run the lock is held for, when it leaves a run record as it ends
   * (backups, prunes). A stale lock with a run is a run that was killed before it
   * could record anything: `status` reports it (killedRuns). Absent in
   * locks of other commands and of older versions.
   */
  readonly run?: LockRun | undefined;
}

/** The run a lock is held for: what its run record would say. */
export interface LockRun {
  readonly kind: RunKind;
  readonly target: string | null;
  /** A backup from the change log (`backup --from-log`), judged apart from direct backups. */
  readonly fromLog?: boolean | undefined;
}

/** A lock with its staleness judged now. */
export interface LockStatus extends LockInfo {
  readonly stale: boolean;
  readonly staleReason?: string | undefined;
}

/** A lock not refreshed for this long is stale (holders on other hosts). */
export const STALE_AFTER_MS = 30 * 60_000;
const REFRESH_MS = 5 * 60_000;

/** How to take a lock. */
export interface LockOptions {
  readonly exclusive: boolean;
  /** What holds it, e.g. `backup prod` (shown to whoever it blocks). */
  readonly command: string;
  /** A holder that only reads: on a repository it cannot write, it goes on without a lock file. */
  readonly reader?: boolean | undefined;
  /** On a full disk, hold the lock unrecorded until `record()` (prune: deleting frees the space). */
  readonly deferOnFull?: boolean | undefined;
  /** The run it is held for (LockInfo.run). */
  readonly run?: LockRun | undefined;
}

/** A held lock; call `release()` when done. */
export class RepositoryLock {
  private timer: NodeJS.Timeout | undefined;
  private written = false;

  private constructor(
    private readonly storage: Storage,
    readonly info: LockInfo,
    /** Why the lock file could not be written (the lock is held unrecorded), or undefined. */
    readonly unrecorded?: string | undefined,
  ) {}

  /**
   * Acquires a lock or throws RepositoryLockedError naming the conflicting
   * holder. A lock file that cannot be written because the repository is
   * read-only or full is a typed error for a writer (cannotWrite); readers
   * and prune go on as LockOptions allow. Other storage errors pass as raised.
   */
  static async acquire(storage: Storage, options: LockOptions): Promise<RepositoryLock> {
    // An orphan of ours would conflict with this very lock (an exclusive one).
    await removeOrphans(storage);
    const now = new Date().toISOString();
    const info: LockInfo = {
      id: randomUUID(),
      exclusive: options.exclusive,
      pid: process.pid,
      ...ownStart(),
      hostname: os.hostname(),
      command: options.command,
      created: now,
      refreshed: now,
      ...(options.run === undefined ? {} : { run: options.run }),
    };
    try {
      await storage.write(lockKey(info.id), serialize(info));
    } catch (err) {
      const why = unwritable(err);
      if (why === undefined) throw err;
      const reader = options.reader === true && !options.exclusive;
      if (!(reader || (why === 'full' && options.deferOnFull === true))) {
        throw cannotWrite(storage, why, options.command, err);
      }
      // Unrecorded: only while nobody holds what it would conflict with.
      const others = (await listLocks(storage)).filter((l) => !l.stale);
      const conflict = others.find((l) => l.exclusive || info.exclusive);
      if (conflict !== undefined) throw lockedBy(storage, conflict);
      return new RepositoryLock(storage, info, `the repository is ${why}`);
    }
    const lock = new RepositoryLock(storage, info);
    await lock.claimed();
    return lock;
  }

  /** The lock file is written: give way to a conflicting holder, else keep it fresh. */
  private async claimed(): Promise<void> {
    this.written = true;
    const others = (await listLocks(this.storage)).filter((l) => l.id !== this.info.id && !l.stale);
    const conflict = others.find((l) => l.exclusive || this.info.exclusive);
    if (conflict !== undefined) {
      this.written = false;
      await this.storage.delete(lockKey(this.info.id));
      throw lockedBy(this.storage, conflict);
    }
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
  }

  /**
   * Writes the file of a lock held unrecorded (deferOnFull) and checks for
   * holders that came meanwhile (RepositoryLockedError: stop before doing
   * what needs the lock). Nothing to do for a recorded lock.
   */
  async record(): Promise<void> {
    if (this.written) return;
    try {
      await this.storage.write(lockKey(this.info.id), serialize(this.info));
    } catch (err) {
      const why = unwritable(err);
      if (why === undefined) throw err;
      throw cannotWrite(this.storage, why, this.info.command, err);
    }
    await this.claimed();
  }

  private async refresh(): Promise<void> {
    if (!this.written) return;
    const info = { ...this.info, refreshed: new Date().toISOString() };
    await this.storage.write(lockKey(info.id), serialize(info)).catch(() => {});
  }

  /** Releases the lock. Safe to call twice. */
  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.written) return;
    this.written = false;
    const key = lockKey(this.info.id);
    try {
      await this.storage.delete(key);
    } catch (err) {
      if (unwritable(err) === undefined) throw err;
      // The repository turned read-only or full while the lock was held: the
      // file stays, live for as long as this process runs (a serve: for
      // good), and a prune would be locked out. Removed when next possible.
      orphansOf(this.storage).add(key);
      return;
    }
    await removeOrphans(this.storage);
  }
}

/** Lock files of this process whose removal failed, per storage (see release). */
const orphans = new WeakMap<Storage, Set<string>>();

function orphansOf(storage: Storage): Set<string> {
  let s = orphans.get(storage);
  if (s === undefined) {
    s = new Set();
    orphans.set(storage, s);
  }
  return s;
}

/** Removes what it can of this process's orphaned lock files. */
async function removeOrphans(storage: Storage): Promise<void> {
  const left = orphans.get(storage);
  if (left === undefined) return;
  for (const key of [...left]) {
    try {
      await storage.delete(key);
      left.delete(key);
    } catch {
      // (still not writable: tried again at the next lock)
    }
  }
}

function lockedBy(storage: Storage, conflict: LockStatus): RepositoryLockedError {
  return new RepositoryLockedError(
    `the repository at ${storage.location} is locked${conflict.exclusive ? ' exclusively' : ''} by "${conflict.command}" (pid ${conflict.pid} on ${conflict.hostname}, since ${conflict.created})`,
    {
      hint: 'wait for it to finish; if that process is gone, `flashback unlock` removes stale locks',
    },
  );
}

/** A writer's lock that cannot be written: the repository is read-only or full. */
function cannotWrite(
  storage: Storage,
  why: 'read-only' | 'full',
  command: string,
  cause: unknown,
): FlashbackError {
  const code = (cause as NodeJS.ErrnoException).code;
  if (why === 'read-only') {
    return new RepositoryError(
      'read-only',
      `cannot write to the repository at ${storage.location} (${code}): "${command}" writes to it`,
      {
        hint: 'make it writable (mount, permissions) and run again; restore, history, impact, undo and check read a read-only repository',
        cause,
      },
    );
  }
  return new OperationError(
    'repository.full',
    `no space left in the repository at ${storage.location} (${code}): "${command}" cannot write to it`,
    {
      hint: '`flashback prune` runs on a full repository and frees what the retention policy allows; or free space or move the repository',
      cause,
    },
  );
}

/** Why a write failed, when the repository cannot be written at all: read-only (mount, permissions) or full. */
export function unwritable(err: unknown): 'read-only' | 'full' | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') return 'read-only';
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'full';
  return undefined;
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
  const lock = await RepositoryLock.acquire(storage, { exclusive: false, command, reader: true });
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

/**
 * Whether a holder that writes `info` and refreshes it is gone: its process
 * (same host) is not running, or it was not refreshed for `staleAfterMs`.
 * Also judges serve's lease (src/service/lease.ts).
 */
export function staleness(
  info: Pick<LockInfo, 'pid' | 'hostname' | 'refreshed' | 'pidStart'>,
  now: number,
  staleAfterMs = STALE_AFTER_MS,
): { stale: boolean; staleReason?: string } {
  if (info.hostname === os.hostname() && !isSameProcessAlive(info.pid, info.pidStart)) {
    return { stale: true, staleReason: `process ${info.pid} is not running` };
  }
  const age = now - Date.parse(info.refreshed);
  if (age > staleAfterMs) {
    return { stale: true, staleReason: `not refreshed for ${Math.round(age / 60_000)} min` };
  }
  return { stale: false };
}

function unreadable(key: string): LockInfo {
  const id = key.slice('locks/'.length).replace(/\.json$/, '');
  return { id, exclusive: true, pid: 0, hostname: '?', command: '?', created: '?', refreshed: '?' };
}

/** This process's start, for the records that name it by PID (LockInfo.pidStart). */
export function ownStart(): { pidStart?: string } {
  const start = processStart(process.pid);
  return start === undefined ? {} : { pidStart: start };
}

function lockKey(id: string): string {
  return `locks/${id}.json`;
}

function serialize(info: LockInfo): Buffer {
  return Buffer.from(`${JSON.stringify(info, null, 2)}\n`);
}
