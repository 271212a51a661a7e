/**
 * One `serve` per repository: `serve/<uuid>.json`, a lease its holder
 * writes as it starts, refreshes every minute and removes as it stops.
 *
 * Two serves on one repository took every scheduled backup twice, sent
 * every alert twice, and fought over each target's capture slot (the loser
 * alerted "capture failed" while the other captured fine), without a word.
 * A serve that finds a live lease refuses to start (exit 7), naming the
 * other. A lease is live while its process runs (same host: the PID is
 * checked) or, from another host, while it was refreshed in the last
 * STALE_AFTER_MS; a stale one (a serve killed with SIGKILL, a host gone) is
 * removed by the next serve, saying so. Not a repository lock: the jobs
 * serve runs take those as the commands do (a prune must still be able to
 * lock the repository exclusively).
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { RepositoryLockedError } from '../errors.js';
import { ownStart, staleness, unwritable } from '../repo/lock.js';
import type { Storage } from '../storage/storage.js';

/** A lease as stored. */
interface LeaseInfo {
  readonly id: string;
  readonly pid: number;
  /** When that process started (LockInfo.pidStart). */
  readonly pidStart?: string | undefined;
  readonly hostname: string;
  readonly started: string;
  readonly refreshed: string;
}

const PREFIX = 'serve/';
const REFRESH_MS = 60_000;
/** A lease from another host not refreshed for this long is stale. */
const STALE_AFTER_MS = 5 * 60_000;

/** A held lease; `release()` removes it. */
export interface ServeLease {
  release(): Promise<void>;
}

/**
 * Takes the repository's serve lease, or throws RepositoryLockedError
 * (exit 7) naming the serve that holds it. `onNote` is told of each stale
 * lease removed, and of a lease that cannot be written (the repository
 * read-only or full: serve then runs without one).
 */
export async function takeServeLease(
  storage: Storage,
  onNote: (message: string) => void,
): Promise<ServeLease> {
  const now = new Date().toISOString();
  const info: LeaseInfo = {
    id: randomUUID(),
    pid: process.pid,
    ...ownStart(),
    hostname: os.hostname(),
    started: now,
    refreshed: now,
  };
  const key = `${PREFIX}${info.id}.json`;
  try {
    await storage.write(key, Buffer.from(`${JSON.stringify(info)}\n`));
  } catch (err) {
    const why = unwritable(err);
    if (why === undefined) throw err;
    // A full repository is what serve's prune frees, and its alerts matter
    // most then: it runs, unguarded, and says so.
    onNote(
      `could not write the serve lease (the repository is ${why}): another serve on this repository would not be noticed`,
    );
    return { release: async () => {} };
  }
  // Written first, then the others listed: of two starting at once, each
  // sees the other and both stop, rather than both run.
  for await (const o of storage.list(PREFIX)) {
    if (o.key === key || !o.key.endsWith('.json')) continue;
    let other: LeaseInfo;
    try {
      other = JSON.parse((await storage.read(o.key)).toString('utf8')) as LeaseInfo;
    } catch {
      continue; // (removed meanwhile, or not ours to judge)
    }
    const sameHost = other.hostname === os.hostname();
    // Gone as a lock's holder is (its process, or refreshed lately: a pid
    // reused after a reboot), or this very process: a container restarted
    // after a kill keeps its hostname and runs serve as pid 1 again.
    const live =
      !staleness(other, Date.now(), STALE_AFTER_MS).stale &&
      !(sameHost && other.pid === process.pid);
    if (!live) {
      await storage.delete(o.key).catch(() => {});
      onNote(
        `removed the lease of a serve that is gone (pid ${other.pid} on ${other.hostname}, started ${other.started})`,
      );
      continue;
    }
    await storage.delete(key).catch(() => {});
    throw new RepositoryLockedError(
      `another flashback serve runs on the repository at ${storage.location} (pid ${other.pid} on ${other.hostname}, started ${other.started}): two would take every backup twice, send every alert twice and fight over the capture slots`,
      {
        hint: `stop that one first${sameHost ? ` (kill ${other.pid})` : ''}; a serve that was killed is noticed ${sameHost ? 'at once' : 'after 5 minutes'}`,
      },
    );
  }
  const timer = setInterval(() => {
    const refreshed = { ...info, refreshed: new Date().toISOString() };
    void storage.write(key, Buffer.from(`${JSON.stringify(refreshed)}\n`)).catch(() => {});
  }, REFRESH_MS);
  timer.unref();
  return {
    release: async () => {
      clearInterval(timer);
      await storage.delete(key).catch(() => {});
    },
  };
}
