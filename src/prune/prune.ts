/**
 * `prune`: removes the snapshots each target's retention policy no longer
 * keeps, then every chunk no remaining snapshot references.
 *
 * Deletes run in an order that is safe to kill at any point
 * (docs/REPOSITORY.md "Pruning"): first the manifests of the removed
 * snapshots (a snapshot disappears atomically with its manifest), then the
 * chunks that the manifests still present, read again after those deletes,
 * do not reference. A crash between any two deletes leaves unreferenced
 * chunks, never a manifest naming a missing chunk; the next prune collects
 * them. The whole run holds the exclusive repository lock, so no backup can
 * be about to reference a chunk this deletes.
 *
 * Then each change log of a target with a policy is cut back to its oldest
 * remaining snapshot (the log is what rebuilds moments after a snapshot;
 * before the oldest one there is nothing to rebuild from): the log's new
 * start is written to capture.json first, then the segments before it are
 * deleted, so a crash leaves extra segments, never a log that claims to
 * cover moments it lost. Capture keeps running meanwhile: it only appends.
 */
import type { FlashbackConfig, RetentionConfig } from '../config/schema.js';
import { retentionFor } from '../config/schema.js';
import {
  DamagedError,
  InterruptedError,
  OperationError,
  RepositoryError,
  UsageError,
} from '../errors.js';
import {
  type CaptureInfo,
  lsnText,
  lsnValue,
  type SchemaRecordRef,
  type SegmentInfo,
} from '../repo/changelog.js';
import { logOfSnapshot, snapshotsOfLog, targetLogs } from '../repo/changelogs.js';
import { ChunkStore, type StoredChunk } from '../repo/chunks.js';
import { damagedSnapshots, readKnownDamage } from '../repo/damage.js';
import { RepositoryLock, unwritable } from '../repo/lock.js';
import type { Repository } from '../repo/repository.js';
import type { RunRecord } from '../repo/runs.js';
import { RunStore, runScope } from '../repo/runs.js';
import { type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import type { Storage } from '../storage/storage.js';
import { faultpoint } from '../util/faultpoint.js';
import { runWorkers } from '../util/workers.js';
import { planRetention, type SnapshotDecision } from './policy.js';

/** What to prune. */
export interface PruneOptions {
  readonly repo: Repository;
  readonly config: FlashbackConfig;
  /** Only this target's snapshots (chunks are collected repository-wide either way). */
  readonly target?: string | undefined;
  /** Plan and count, delete nothing; takes a shared lock instead of the exclusive one. */
  readonly dryRun?: boolean | undefined;
  /** The time `keep_within` counts back from; default now. */
  readonly now?: Date | undefined;
  /** Deletes in flight at once; default 8 (latency-bound on object storage, cheap locally). */
  readonly concurrency?: number | undefined;
  /** Stops between deletes (the repository stays consistent; the next prune finishes). */
  readonly signal?: AbortSignal | undefined;
}

/** A snapshot's decision with what `list` shows of it. */
export interface PlannedSnapshot extends SnapshotDecision {
  readonly target: string;
  readonly rows: number;
  /** Stored bytes of every chunk it references (shared chunks included). */
  readonly storedBytes: number;
}

/** The decisions for one target, oldest first. */
export interface TargetPrunePlan {
  readonly target: string;
  /** The policy applied; null when the target has none (nothing of it is removed). */
  readonly policy: RetentionConfig | null;
  readonly snapshots: readonly PlannedSnapshot[];
}

/** The whole plan: what `--dry-run` prints and what a real run executes. */
export interface PrunePlan {
  /** The time `keep_within` counted back from. */
  readonly now: string;
  readonly targets: readonly TargetPrunePlan[];
  /** Ids of the snapshots to remove, oldest first. */
  readonly remove: readonly string[];
}

/** What a prune did (or, for a dry run, would do). */
export interface PruneResult {
  readonly dryRun: boolean;
  readonly plan: PrunePlan;
  readonly snapshotsRemoved: number;
  readonly chunksRemoved: number;
  /** Chunks still referenced, so kept. */
  readonly chunksKept: number;
  /** Stored bytes of the chunks removed (manifests are not counted). */
  readonly bytesFreed: number;
  /** Change logs cut back to their oldest remaining snapshot (targets with a policy and a log). */
  readonly logs: readonly LogPrune[];
  readonly seconds: number;
}

/** What pruning did (or would do) to one target's change log. */
export interface LogPrune {
  readonly target: string;
  /** Which of the target's logs (1 unless `capture --new-log` began more). */
  readonly log: number;
  /**
   * An older log no kept snapshot is taken under, while kept snapshots are
   * all of later logs: every segment and schema record of it is removed
   * (its capture.json stays, so the logs after it are still found).
   */
  readonly emptied: boolean;
  /** Where the log began before, and begins after (the oldest remaining snapshot's LSN). */
  readonly fromLsn: string;
  readonly toLsn: string;
  readonly segmentsRemoved: number;
  readonly schemaRecordsRemoved: number;
  /** Stored bytes of the segments removed. */
  readonly bytesFreed: number;
}

/** Input of `planPrune`. */
export interface PrunePlanInput {
  /** Every manifest in the repository. */
  readonly snapshots: readonly SnapshotManifest[];
  /** Ids of snapshots whose latest verification passed. */
  readonly verified: ReadonlySet<string>;
  readonly config: FlashbackConfig;
  readonly target?: string | undefined;
  readonly now: Date;
}

const DEFAULT_CONCURRENCY = 8;

const NO_POLICY_HINT =
  'set retention (e.g. `retention: {keep_last: 7, keep_daily: 14}`) at the top level of flashback.yaml or under the target; see docs/CONFIG.md';

/**
 * Plans a prune: per target (those with snapshots, or only `target`), its
 * policy's decisions. Throws UsageError when the named target has no policy,
 * when no target considered has one, or when a policy keeps nothing.
 */
export function planPrune(input: PrunePlanInput): PrunePlan {
  const byTarget = new Map<string, SnapshotManifest[]>();
  for (const m of input.snapshots) {
    const list = byTarget.get(m.target) ?? [];
    list.push(m);
    byTarget.set(m.target, list);
  }
  let names = [...byTarget.keys()].sort();
  if (input.target !== undefined) {
    if (!byTarget.has(input.target) && input.config.targets[input.target] === undefined) {
      throw new UsageError(
        `target "${input.target}" has no snapshots and is not in the configuration`,
        { hint: '`flashback list` shows the snapshots and their targets' },
      );
    }
    names = [input.target];
  }
  const targets = names.map((target): TargetPrunePlan => {
    const manifests = new Map((byTarget.get(target) ?? []).map((m) => [m.id, m]));
    const r = planRetention({
      target,
      // (The moment of the data: a snapshot from the log may be of an earlier one than its start.)
      snapshots: [...manifests.values()].map((m) => ({
        id: m.id,
        time: m.consistentAt ?? m.startedAt,
      })),
      policy: retentionFor(input.config, target),
      now: input.now,
      verified: input.verified,
    });
    return {
      target,
      policy: r.policy,
      snapshots: r.decisions.map((d) => {
        const m = manifests.get(d.id)!;
        return { ...d, target, rows: m.totals.rows, storedBytes: m.totals.storedBytes };
      }),
    };
  });
  const without = targets.filter((t) => t.policy === null).map((t) => t.target);
  if (input.target !== undefined && without.length > 0) {
    throw new UsageError(
      `no retention policy for target "${input.target}": prune removes nothing without one`,
      { hint: NO_POLICY_HINT },
    );
  }
  if (targets.length > 0 && without.length === targets.length) {
    throw new UsageError(
      `no retention policy configured (targets with snapshots: ${without.join(', ')}): prune removes nothing without one`,
      { hint: NO_POLICY_HINT },
    );
  }
  const remove = targets
    .flatMap((t) => t.snapshots)
    .filter((s) => !s.keep)
    .sort((a, b) => Date.parse(a.time) - Date.parse(b.time) || (a.id < b.id ? -1 : 1))
    .map((s) => s.id);
  return { now: input.now.toISOString(), targets, remove };
}

/**
 * The ids whose newest verification passed, less those that use a chunk
 * known bad since (src/repo/damage.ts): kept as "the newest verified", a
 * snapshot that does not restore would stand in for one that does.
 */
export function verifiedIds(
  verifications: ReadonlyMap<string, RunRecord>,
  broken: ReadonlySet<string> = new Set(),
): Set<string> {
  return new Set([...verifications].filter(([id, r]) => r.ok && !broken.has(id)).map(([id]) => id));
}

/** Plans and (unless dry-run) executes a prune under the repository lock. */
export async function prune(options: PruneOptions): Promise<PruneResult> {
  const started = Date.now();
  const dryRun = options.dryRun === true;
  const storage = options.repo.storage;
  // A dry run deletes nothing, so it need not stop backups; a real run must.
  const lock = await RepositoryLock.acquire(storage, {
    exclusive: !dryRun,
    command: dryRun ? 'prune --dry-run' : 'prune',
    reader: dryRun,
    // (A prune killed holding it is then a failed prune in status, not nothing.)
    ...(dryRun ? {} : { run: { kind: 'prune' as const, target: options.target ?? null } }),
    // A full repository is what prune is for: see RepositoryLock.record below.
    deferOnFull: true,
  });
  try {
    // Strict (no onUnreadable): an unreadable manifest's chunks look unused.
    const snapshots = new SnapshotStore(storage);
    const chunks = new ChunkStore(storage);
    const manifests = await snapshots.all().catch((err: unknown) => {
      throw unreadableRefusal(err);
    });
    const plan = planPrune({
      snapshots: manifests,
      verified: verifiedIds(
        await new RunStore(storage).verifications(),
        damagedSnapshots(await readKnownDamage(storage)),
      ),
      config: options.config,
      target: options.target,
      now: options.now ?? new Date(),
    });
    const removing = new Set(plan.remove);
    const done = (
      removed: number,
      garbage: readonly StoredChunk[],
      kept: number,
      logs: readonly LogPrune[],
    ): PruneResult => ({
      dryRun,
      plan,
      snapshotsRemoved: removed,
      chunksRemoved: garbage.length,
      chunksKept: kept,
      bytesFreed: garbage.reduce((n, c) => n + c.storedSize, 0),
      logs,
      seconds: (Date.now() - started) / 1000,
    });
    const withPolicy = plan.targets.filter((t) => t.policy !== null).map((t) => t.target);

    if (dryRun) {
      const remaining = manifests.filter((m) => !removing.has(m.id));
      const { garbage, kept } = await unreferenced(chunks, remaining);
      const logs = await pruneLogs(storage, withPolicy, remaining, { dryRun: true });
      return done(plan.remove.length, garbage, kept, logs);
    }

    return await deleting(storage, plan.remove.length, async () => {
      const limit = options.concurrency ?? DEFAULT_CONCURRENCY;
      // (1) Manifests first: each delete removes one whole snapshot.
      await forEachLimited(plan.remove, limit, (id) => snapshots.delete(id), options.signal);
      await faultpoint('prune.after-manifests');
      // On a full repository the lock was held unrecorded: with the manifests'
      // space free, it is written now, before any chunk is removed (a backup
      // that started meanwhile makes this stop; its chunks stay).
      await lock.record().catch((err: unknown) => {
        if (!(err instanceof OperationError && err.code === 'repository.full')) throw err;
        throw new OperationError(
          'prune.full',
          `the repository at ${storage.location} is still full after removing ${plan.remove.length} snapshot manifest(s): prune could not record its lock, so it stopped before removing any chunk`,
          {
            hint: 'free a little space on that disk (any file), then run prune again: it removes the chunks no snapshot uses',
            cause: err,
          },
        );
      });
      // (2) Chunks: the referenced set comes from the manifests present now,
      // not from the plan, so that it can only be larger than needed.
      const { garbage, kept } = await unreferenced(chunks, await snapshots.all());
      const [first, ...rest] = garbage;
      if (first !== undefined) {
        // One delete alone first, so a test can stop the run with some chunks
        // gone and others not (deterministically, not racing parallel deletes).
        await chunks.delete(first.id);
        await faultpoint('prune.during-chunks');
        await forEachLimited(rest, limit, (c) => chunks.delete(c.id), options.signal);
      }
      // Tombstones a full disk refused, now that chunks are freed. (Still
      // refused: status will take those snapshots for lost, and say so loudly.)
      await snapshots.writeTombstones().catch(() => {});
      // (3) Change logs, back to the oldest snapshot remaining.
      const logs = await pruneLogs(storage, withPolicy, await snapshots.all(), {
        dryRun: false,
        limit,
        signal: options.signal,
      });
      // (4) Run records are kept, also those of removed snapshots: they are
      // the history `status` reads for failures, and tiny.
      return done(plan.remove.length, garbage, kept, logs);
    });
  } finally {
    await lock.release();
  }
}

/**
 * Runs prune's deletions; a repository that turned out not to allow them
 * (a read-only mount or permissions, where the lock's own write went
 * through, or only some directories are read-only) is a repository error
 * naming what to do, not an internal error. What was deleted before stays
 * consistent: each manifest with its tombstone, then chunks no snapshot uses.
 */
async function deleting<T>(storage: Storage, planned: number, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (unwritable(err) !== 'read-only') throw err;
    throw new RepositoryError(
      'read-only',
      `prune cannot delete from the repository at ${storage.location} (${(err as NodeJS.ErrnoException).code}: ${(err as Error).message}); it stopped (of ${planned} snapshot(s) to remove, those done are gone whole, and chunks no snapshot uses stay)`,
      {
        hint: 'make the repository writable (mount, permissions) and run prune again: it goes on where it stopped',
        cause: err,
      },
    );
  }
}

/**
 * Cuts each target's change log back to the LSN of its oldest snapshot in
 * `manifests` that joins the log (taken after the log began). A target whose
 * snapshots all predate its log keeps the whole log (it still answers
 * `history`). Of a target's several logs (src/repo/changelogs.ts), each is
 * cut by the snapshots taken under it; an older log under which no kept
 * snapshot was taken, when every kept snapshot is of a later log, is
 * emptied: retention reaches no moment of it. Order: capture.json with the
 * new start, then the segments (oldest first), then the schema records.
 */
async function pruneLogs(
  storage: Storage,
  targets: readonly string[],
  manifests: readonly SnapshotManifest[],
  o: { dryRun: boolean; limit?: number; signal?: AbortSignal | undefined },
): Promise<LogPrune[]> {
  const out: LogPrune[] = [];
  for (const target of targets) {
    const logs = await targetLogs(storage, runScope(target));
    const own = manifests.filter((m) => m.target === target);
    for (const [k, { log, info }] of logs.entries()) {
      const start = lsnValue(info.startLsn);
      const joined = snapshotsOfLog(logs, k, own)
        .filter((m) => lsnValue(m.lsn) >= start)
        .map((m) => lsnValue(m.lsn));
      let to: bigint;
      let cut: { segments: SegmentInfo[]; schemas: SchemaRecordRef[]; firstSegment: number };
      let emptied = false;
      if (joined.length > 0) {
        to = joined.reduce((a, b) => (b < a ? b : a));
        cut = await log.prunable(info, to);
      } else if (
        k < logs.length - 1 &&
        own.every((m) => {
          const of = logOfSnapshot(logs, m);
          return of === undefined || of > k;
        })
      ) {
        // All of it goes; it starts where the next log says it ends.
        const all = await log.segments();
        to = lsnValue(logs[k + 1]!.info.previousEnd ?? lsnText(all.at(-1)?.committed ?? start));
        const last = all.at(-1)?.seq ?? (info.firstSegment ?? 1) - 1;
        cut = { segments: all, schemas: await log.schemaRecords(), firstSegment: last + 1 };
        emptied = true;
      } else continue;
      const { segments, schemas, firstSegment } = cut;
      const result: LogPrune = {
        target,
        log: log.number,
        emptied,
        fromLsn: info.startLsn,
        toLsn: lsnText(to > start ? to : start),
        segmentsRemoved: segments.length,
        schemaRecordsRemoved: schemas.length,
        bytesFreed: segments.reduce((n, s) => n + s.size, 0),
      };
      if (segments.length === 0 && schemas.length === 0) continue;
      out.push(result);
      if (o.dryRun) continue;
      if (to > start || firstSegment !== (info.firstSegment ?? 1)) {
        const moved: CaptureInfo = {
          ...info,
          version: 2,
          startLsn: result.toLsn,
          firstSegment,
          originLsn: info.originLsn ?? info.startLsn,
          prunedAt: new Date().toISOString(),
        };
        await log.writeInfo(moved);
      }
      await faultpoint('prune.after-log-start');
      await forEachLimited(
        [...segments.map((s) => s.key), ...schemas.map((r) => r.key)],
        o.limit ?? DEFAULT_CONCURRENCY,
        (key) => log.remove(key),
        o.signal,
      );
    }
  }
  return out;
}

/** The stored chunks no manifest in `manifests` references, and how many are referenced. */
async function unreferenced(
  chunks: ChunkStore,
  manifests: readonly SnapshotManifest[],
): Promise<{ garbage: StoredChunk[]; kept: number }> {
  const referenced = new Set<string>();
  for (const m of manifests) {
    for (const t of m.tables) for (const c of t.chunks) referenced.add(c.id);
  }
  const garbage: StoredChunk[] = [];
  let kept = 0;
  for await (const c of chunks.list()) {
    if (referenced.has(c.id)) kept++;
    else garbage.push(c);
  }
  // Sorted, so a run's order of deletes is reproducible.
  garbage.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { garbage, kept };
}

/** Runs `fn` on every item, at most `limit` at once; stops taking new items when `signal` aborts. */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  let next = 0;
  await runWorkers(
    Math.max(1, Math.min(limit, items.length)),
    async (_i, stop) => {
      while (next < items.length) {
        if (signal?.aborted === true) {
          throw new InterruptedError(
            'prune interrupted: the repository is consistent (unreferenced chunks may remain); run prune again to finish',
          );
        }
        if (stop.aborted) return; // another delete failed: its error is the one reported
        await fn(items[next++]!);
      }
    },
    signal,
  );
}

/**
 * Prune decides what to delete from every manifest: one it cannot read
 * would make that snapshot's chunks look unused, and deleting them would
 * lose a snapshot that a copied-back manifest could still restore.
 */
function unreadableRefusal(err: unknown): unknown {
  if (err instanceof RepositoryError && err.code === 'repository.version') {
    return new RepositoryError(
      'version',
      `prune refused: ${err.message}: prune cannot tell which chunks that snapshot uses. Nothing was deleted.`,
      { hint: 'prune with the newer Flashback that wrote it', cause: err },
    );
  }
  if (err instanceof DamagedError && err.code === 'snapshot.damaged') {
    return new DamagedError(
      'prune.manifest-unreadable',
      `prune refused: ${err.message}: prune cannot tell which chunks that snapshot uses. Nothing was deleted.`,
      {
        hint: 'copy the manifest back from a copy of the repository; if there is none, move it out of snapshots/ (its snapshot is lost) and prune again',
        cause: err,
      },
    );
  }
  return err;
}
