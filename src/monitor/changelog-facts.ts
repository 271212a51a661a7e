/**
 * What `status` needs to know about each target's change log: how old the
 * newest change or heartbeat durably stored is (the recovery point), and the
 * state of the replication slot on the server. Read here, judged by the pure
 * rules in status.ts.
 *
 * The repository answers the first; the second needs a connection to the
 * target, made best effort (short timeout, any failure becomes a fact the
 * rules turn into a warning, never an exception).
 */
import { captureSlotInfo } from '../capture/capture.js';
import { type SlotState, slotState } from '../capture/slot-health.js';
import type { FlashbackConfig } from '../config/schema.js';
import { resolveTarget } from '../config/targets.js';
import { DamagedError, FlashbackError, RepositoryError } from '../errors.js';
import { connect } from '../pg/connect.js';
import { lsnText, newestStoredTime } from '../repo/changelog.js';
import { newestLog } from '../repo/changelogs.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';

/** The slot as seen from the server: its state, gone, or why it could not be looked at. */
export type SlotFacts = SlotState | { readonly missing: true } | { readonly error: string };

/** A target's change log, as the status rules see it. */
export interface ChangeLogFacts {
  readonly target: string;
  /** When the log began (`capture.json` `created`). */
  readonly created: string;
  /**
   * Where it begins (`capture.json` `startLsn`): a snapshot at or after it
   * is continued by the log; one before it is not.
   */
  readonly startLsn: string;
  /**
   * Which of the target's logs this is (the newest; 1 unless `capture
   * --new-log` began more). A later log continues only snapshots taken
   * since it began (src/repo/changelogs.ts).
   */
  readonly number: number;
  /** Source time of the newest heartbeat or commit stored; undefined while nothing is. */
  readonly newestAt: string | undefined;
  /** The log is complete up to this LSN (the newest segment's `<committed>`). */
  readonly committed: string | undefined;
  readonly segments: number;
  /** Each segment's `<committed>` LSN and stored size, in order. */
  readonly segmentSizes: ReadonlyArray<{ readonly committed: bigint; readonly size: number }>;
  /** Undefined when the slot was not checked (repository only). */
  readonly slot?: SlotFacts | undefined;
  /** With the slot: the log's directory, and acknowledged.json's `since` when written (judgeSlot's SlotLog). */
  readonly dir?: string | undefined;
  readonly ackSince?: string | undefined;
}

/** Options for `readChangeLogFacts`. */
export interface ChangeLogFactsOptions {
  /** Connect to each target to read its slot; default false (the repository alone). */
  readonly slots?: boolean | undefined;
  /** Environment for target passwords; needed with `slots`. */
  readonly env?: NodeJS.ProcessEnv | undefined;
  /** Connect timeout per target; default 3 s: status must not hang on one target. */
  readonly timeoutSeconds?: number | undefined;
  /**
   * Told of a target whose log cannot be read (damaged, or of a newer
   * format): left out of the facts, so that one log does not stop the
   * judgement of every target. Without it, the error is thrown.
   */
  readonly onUnreadable?: ((log: UnreadableLog) => void) | undefined;
}

/** A target's change log that cannot be read, and why. */
export interface UnreadableLog {
  readonly target: string;
  /** Damaged; otherwise written by a newer Flashback. */
  readonly damaged: boolean;
  readonly message: string;
}

/**
 * The change logs of the named targets (those without one are left out).
 * Targets are looked up by name, as capture stores them
 * (`changes/<scope>/capture.json`); of a target's several logs, the newest.
 */
export async function readChangeLogFacts(
  repo: Repository,
  config: FlashbackConfig,
  targets: readonly string[],
  options: ChangeLogFactsOptions = {},
): Promise<ChangeLogFacts[]> {
  const found = await Promise.all(
    targets.map(async (target): Promise<ChangeLogFacts | undefined> => {
      let newest: Awaited<ReturnType<typeof newestLog>>;
      try {
        newest = await newestLog(repo.storage, runScope(target));
      } catch (err) {
        const damaged = err instanceof DamagedError;
        if (options.onUnreadable === undefined || !(damaged || err instanceof RepositoryError))
          throw err;
        options.onUnreadable({ target, damaged, message: (err as Error).message });
        return undefined;
      }
      if (newest === undefined) return undefined;
      const { log, info } = newest;
      // The slot before the segments (as capture does): a segment stored and
      // acknowledged between the two reads would otherwise look lost
      // (confirmed past the listed log's end: judgeSlot's slot-ahead).
      const slot = options.slots === true ? await readSlot(target, config, options) : undefined;
      const segments = await log.segments();
      const newestAt = await newestStoredTime(log, segments);
      const last = segments.at(-1);
      const base = {
        target,
        created: info.created,
        startLsn: info.startLsn,
        number: log.number,
        newestAt,
        committed: last === undefined ? undefined : lsnText(last.committed),
        segments: segments.length,
        segmentSizes: segments.map((s) => ({ committed: s.committed, size: s.size })),
      };
      if (options.slots !== true) return base;
      const ack = await log.ackRecord().catch(() => undefined);
      return {
        ...base,
        slot,
        dir: log.dir,
        ackSince: ack?.since,
      };
    }),
  );
  return found.filter((f): f is ChangeLogFacts => f !== undefined);
}

async function readSlot(
  target: string,
  config: FlashbackConfig,
  options: ChangeLogFactsOptions,
): Promise<SlotFacts> {
  if (config.targets[target] === undefined) {
    return { error: `"${target}" is not a target in the configuration file` };
  }
  try {
    const resolved = resolveTarget(target, config, options.env ?? {});
    const client = await connect(resolved, {
      timeoutSeconds: options.timeoutSeconds ?? 3,
      applicationName: 'flashback status',
    });
    try {
      const info = await captureSlotInfo(client, runScope(target));
      return info === undefined ? { missing: true } : slotState(info);
    } finally {
      await client.end().catch(() => {});
    }
  } catch (err) {
    return {
      error: err instanceof FlashbackError || err instanceof Error ? err.message : String(err),
    };
  }
}
