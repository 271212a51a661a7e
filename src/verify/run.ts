/**
 * Verifying a set of snapshots as one job: one scratch server per major
 * version (started once, reused), each snapshot's outcome recorded in the
 * repository. Shared by `flashback verify` and the scheduler of `serve`.
 */
import type { FlashbackConfig } from '../config/schema.js';
import { resolveTarget } from '../config/targets.js';
import { UsageError } from '../errors.js';
import { type Recorded, type RecordHooks, recordRun } from '../monitor/record.js';
import type { SchemaModel } from '../pg/schema/model.js';
import type { Repository } from '../repo/repository.js';
import { type RunRecord, RunStore, type RunTrigger } from '../repo/runs.js';
import { type SnapshotManifest, SnapshotStore } from '../repo/snapshots.js';
import { embeddedScratch, type Scratch, targetScratch } from './scratch.js';
import { type VerifyProgress, type VerifyReport, verifySnapshot } from './verify.js';

/** Which snapshots to verify. */
export type VerifySelection =
  | { readonly kind: 'snapshot'; readonly ref: string }
  /** The newest snapshot of each target (or of `target`). */
  | { readonly kind: 'latest'; readonly target?: string | undefined }
  /** Every snapshot with no verification record yet (of `target`, if given). */
  | { readonly kind: 'unverified'; readonly target?: string | undefined };

/** Resolves a selection to manifests, oldest first. */
export async function selectSnapshots(
  repo: Repository,
  selection: VerifySelection,
): Promise<Array<SnapshotManifest<SchemaModel>>> {
  const store = SnapshotStore.of(repo);
  if (selection.kind === 'snapshot') {
    return [(await store.resolve(selection.ref)) as SnapshotManifest<SchemaModel>];
  }
  const all = (await store.all(selection.target)) as Array<SnapshotManifest<SchemaModel>>;
  if (selection.kind === 'latest') {
    const newest = new Map<string, SnapshotManifest<SchemaModel>>();
    for (const m of all) newest.set(m.target, m);
    if (newest.size === 0) {
      throw new UsageError(
        `no snapshots${selection.target === undefined ? '' : ` of target "${selection.target}"`} to verify`,
        { hint: 'take one with `flashback backup TARGET`' },
      );
    }
    return [...newest.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }
  const verified = await new RunStore(repo.storage).verifications();
  return all.filter((m) => !verified.has(m.id));
}

/** How to run a set of verifications. */
export interface VerifyRunOptions {
  readonly repo: Repository;
  readonly config: FlashbackConfig;
  readonly env: NodeJS.ProcessEnv;
  readonly manifests: ReadonlyArray<SnapshotManifest<SchemaModel>>;
  readonly trigger: RunTrigger;
  readonly signal?: AbortSignal | undefined;
  readonly onStart?: ((m: SnapshotManifest, scratch: string) => void) | undefined;
  readonly onProgress?: ((m: SnapshotManifest, p: VerifyProgress) => void) | undefined;
  readonly onRecordError?: RecordHooks['onRecordError'];
  readonly onRecorded?: ((record: RunRecord) => void) | undefined;
}

/**
 * Verifies each manifest in turn, recording every outcome. Differences are
 * results (in the reports); an error that stops a verification from running
 * at all (no scratch server, a snapshot that cannot be read) is recorded and
 * thrown, and the rest are not attempted.
 */
export async function verifyAll(options: VerifyRunOptions): Promise<Array<Recorded<VerifyReport>>> {
  const scratches = new Map<number, Scratch>();
  const scratchFor = async (major: number): Promise<Scratch> => {
    let s = scratches.get(major);
    if (s === undefined) {
      const named = options.config.verify.scratch;
      s =
        named === 'embedded'
          ? await embeddedScratch(major)
          : targetScratch(resolveTarget(named, options.config, options.env));
      scratches.set(major, s);
    }
    return s;
  };
  const out: Array<Recorded<VerifyReport>> = [];
  try {
    for (const m of options.manifests) {
      const recorded = await recordRun(
        options.repo,
        { kind: 'verify', target: m.target, trigger: options.trigger, snapshot: m.id },
        async () => {
          const scratch = await scratchFor(Math.floor(m.serverVersionNum / 10_000));
          options.onStart?.(m, scratch.description);
          const r = await verifySnapshot({
            manifest: m,
            repo: options.repo,
            scratch,
            workers: options.config.verify.workers,
            signal: options.signal,
            onProgress: (p) => options.onProgress?.(m, p),
          });
          return {
            value: r,
            snapshot: m.id,
            ok: r.ok,
            problems: r.problems,
            details: {
              restoreSeconds: round(r.restoreSeconds),
              compareSeconds: round(r.compareSeconds),
              bytes: r.bytes,
              rows: r.tables.reduce((a, t) => a + t.rows, 0),
              scratch: r.scratch,
            },
          };
        },
        { onRecordError: options.onRecordError, onRecorded: options.onRecorded },
      );
      out.push(recorded);
    }
  } finally {
    for (const s of scratches.values()) await s.close().catch(() => {});
  }
  return out;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
