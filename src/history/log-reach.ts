/**
 * Whether the change log reaches a moment, checked before a window is read
 * (reading a long window only to find that it stops short cost the whole
 * read), and waited for when the moment is the last few seconds.
 *
 * The log reaches a moment once it holds a commit or a heartbeat at or
 * after it (source time). Capture stores a commit within its flush interval
 * (1 s by default) and a heartbeat every few seconds (5 s), so `restore --at
 * now` always finds the log a few seconds short: it waits for the log to
 * reach the moment, up to `waitMs`, and is refused only if it does not.
 *
 * Contract: resolves once the log reaches `at`; throws UsageError, with
 * nothing read but the newest segments, when the moment is in the future,
 * or older than `recentMs` and not reached, or recent and not reached
 * within `waitMs` (capture not running, or far behind).
 */
import { UsageError } from '../errors.js';
import { type ChangeLog, newestStoredTime } from '../repo/changelog.js';
import { isoMicro } from './time.js';

export interface LogReachOptions {
  /** The wall clock (tests); default Date.now. */
  readonly now?: (() => number) | undefined;
  /** How long to wait for a recent moment; default 15 s (three heartbeats). */
  readonly waitMs?: number | undefined;
  /** A moment no older than this is waited for; default 60 s. */
  readonly recentMs?: number | undefined;
  /** How often the log is looked at while waiting; default 1 s (each look lists the log). */
  readonly pollMs?: number | undefined;
}

/** Waits (if the moment is recent) until the log of `target` reaches `at`, an ISO time with microseconds. */
export async function awaitLogReaches(
  log: ChangeLog,
  target: string,
  at: string,
  options: LogReachOptions = {},
): Promise<void> {
  const now = options.now ?? Date.now;
  const waitMs = options.waitMs ?? 15_000;
  const pollMs = options.pollMs ?? 1_000;
  const newest = async () => (await newestStoredTime(log, await log.segments())) ?? '';
  let reached = await newest();
  if (reached >= at) return;
  const started = now();
  // (A second of slack: the moment may have been taken from this clock just now.)
  if (at > isoMicro(started + 1_000, '999')) {
    throw new UsageError(`${at} is in the future: the change log cannot say what it will hold`, {
      hint: 'choose a moment up to now (`--at now` waits a few seconds for capture to store it)',
    });
  }
  const recent = at >= isoMicro(started - (options.recentMs ?? 60_000), '000');
  while (recent && now() - started < waitMs) {
    await new Promise((r) => setTimeout(r, pollMs));
    reached = await newest();
    if (reached >= at) return;
  }
  throw new UsageError(
    `the change log of "${target}" reaches only ${reached || 'its start'}: it cannot say what changed up to ${at}${recent ? ` (waited ${Math.round((now() - started) / 1000)} s for capture to store it)` : ''}`,
    {
      hint: 'choose an earlier moment, or make sure capture is running (its heartbeats extend the log)',
    },
  );
}
