/**
 * Running a job so that its outcome is never silent: the run is recorded in
 * the repository (runs/) whether it succeeds or fails, for `status`, `list`,
 * metrics and alerts. Used by the commands and by `serve` alike.
 */
import { FlashbackError } from '../errors.js';
import { serverRefusal } from '../pg/connect.js';
import type { Repository } from '../repo/repository.js';
import {
  type NewRun,
  type RunKind,
  type RunProblem,
  type RunRecord,
  RunStore,
  type RunTrigger,
} from '../repo/runs.js';

/** What a job reports back to be recorded with its success. */
export interface JobOutcome<T> {
  readonly value: T;
  readonly snapshot?: string | null | undefined;
  /** A job can complete and still fail (verify found differences). */
  readonly ok?: boolean | undefined;
  readonly problems?: readonly RunProblem[] | undefined;
  readonly details?: Readonly<Record<string, number | string>> | undefined;
}

/** The job's own result and its record (undefined if recording failed). */
export interface Recorded<T> {
  readonly value: T;
  readonly record: RunRecord | undefined;
}

/** Something that writes the record somewhere (the repository, and in tests anywhere). */
export interface RunIdentity {
  readonly kind: RunKind;
  readonly target: string | null;
  readonly trigger: RunTrigger;
  /** For failures before the job names its snapshot (verify of a given snapshot). */
  readonly snapshot?: string | null | undefined;
  /** Details recorded whatever the outcome (e.g. `mode: from-log`); the job's own are added on success. */
  readonly details?: Readonly<Record<string, number | string>> | undefined;
}

/** Callbacks around the record. */
export interface RecordHooks {
  /** The record was written (success or failure): e.g. for metrics. */
  readonly onRecorded?: ((record: RunRecord) => void) | undefined;
  /**
   * The record could not be written (the repository read-only or full); the
   * job's own outcome stands. `run` is the record that was not written, for
   * a caller that can keep it in memory (serve: status and alerts still see
   * the run).
   */
  readonly onRecordError?: ((err: unknown, run: RunRecord) => void) | undefined;
}

/**
 * Runs `job` and records its outcome. A job's error is recorded and then
 * rethrown unchanged; a failure to write the record is reported through
 * `hooks.onRecordError` and never hides the job's own result or error.
 */
export async function recordRun<T>(
  repo: Repository,
  who: RunIdentity,
  job: () => Promise<JobOutcome<T>>,
  hooksOrOnError: RecordHooks | ((err: unknown) => void) = {},
): Promise<Recorded<T>> {
  const hooks: RecordHooks =
    typeof hooksOrOnError === 'function' ? { onRecordError: hooksOrOnError } : hooksOrOnError;
  const started = new Date();
  const base = (): Omit<NewRun, 'ok' | 'snapshot'> => {
    const finished = new Date();
    return {
      kind: who.kind,
      target: who.target,
      trigger: who.trigger,
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      seconds: (finished.getTime() - started.getTime()) / 1000,
    };
  };
  const store = new RunStore(repo.storage);
  const write = async (run: NewRun): Promise<RunRecord | undefined> => {
    try {
      const rec = await store.record(run);
      hooks.onRecorded?.(rec);
      return rec;
    } catch (err) {
      hooks.onRecordError?.(err, {
        format: 'flashback-run',
        version: 1,
        id: `unrecorded-${run.startedAt}-${run.kind}`,
        ...run,
      });
      return undefined;
    }
  };
  let outcome: JobOutcome<T>;
  try {
    outcome = await job();
  } catch (err) {
    await write({
      ...base(),
      snapshot: who.snapshot ?? null,
      ok: false,
      error: describeError(err),
      ...(who.details === undefined ? {} : { details: who.details }),
    });
    throw err;
  }
  const record = await write({
    ...base(),
    snapshot: outcome.snapshot ?? who.snapshot ?? null,
    ok: outcome.ok ?? true,
    ...(outcome.problems === undefined ? {} : { problems: outcome.problems }),
    ...(outcome.details === undefined && who.details === undefined
      ? {}
      : { details: { ...who.details, ...outcome.details } }),
  });
  return { value: outcome.value, record };
}

/** An error as a record keeps it: the code and message a user saw. */
export function describeError(err: unknown): { code: string; message: string } {
  if (!(err instanceof FlashbackError)) err = serverRefusal(err) ?? err;
  if (err instanceof FlashbackError) return { code: err.code, message: err.message };
  return { code: 'internal', message: err instanceof Error ? err.message : String(err) };
}
