/**
 * Continuous capture inside `flashback serve`: one loop per target with
 * `capture: true`, beside the scheduled jobs. A capture never finishes, so it
 * cannot take a turn in the one-at-a-time job queue; it runs on its own.
 *
 * A capture that fails (the walsender was terminated, the server restarted,
 * the repository could not be written, the target is unreachable) is started
 * again after 1 s, 2 s, 4 s, … at most 60 s; the delay starts over once a
 * session has stored a segment, i.e. works again. Nothing is lost meanwhile:
 * the slot keeps every change not yet stored (src/capture/capture.ts). Each
 * failure is logged and reported to `serve`, which re-evaluates the status
 * at once, so the first failure of a streak is alerted (finding
 * `capture-failed`), and so is its recovery.
 */
import { capture, newLogAdvice } from '../capture/capture.js';
import type { ResolvedTarget } from '../config/targets.js';
import { OperationError } from '../errors.js';
import type { Metrics } from '../monitor/metrics.js';
import { describeError } from '../monitor/record.js';
import type { CaptureFailure } from '../monitor/status.js';
import type { Repository } from '../repo/repository.js';
import type { Logger } from './log.js';

/** What a capture loop needs. */
export interface CaptureLoopOptions {
  readonly target: ResolvedTarget;
  readonly repo: Repository;
  /** Aborted to stop: the running capture stores what it received, then the loop ends. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** After each failure (the service re-evaluates the status). */
  readonly onFailure?: (() => void) | undefined;
  /** Once a failing capture stores again. */
  readonly onRecovered?: (() => void) | undefined;
  /** First retry delay; default 1000 ms, doubled per failure. */
  readonly minBackoffMs?: number | undefined;
  /** Longest retry delay; default 60,000 ms. */
  readonly maxBackoffMs?: number | undefined;
}

/** Where a capture loop is. */
export type CaptureLoopState = 'starting' | 'streaming' | 'waiting' | 'stopped';

/** A running capture loop; `done` resolves once it has stopped. */
export class CaptureLoop {
  state: CaptureLoopState = 'starting';
  /** Failures since capture last stored a segment. */
  private failures = 0;
  private since: string | undefined;
  private lastError: { at: string; code: string; message: string } | undefined;
  private retryAt: string | undefined;
  private settle: (() => void) | undefined;
  /** Resolves at the first start or failure: the service's first status waits for it. */
  readonly settled: Promise<void>;
  readonly done: Promise<void>;

  constructor(private readonly o: CaptureLoopOptions) {
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
    this.done = this.run();
  }

  get target(): string {
    return this.o.target.name;
  }

  /** The current failure streak, for the status evaluation; undefined while working. */
  failure(): CaptureFailure | undefined {
    if (this.failures === 0 || this.since === undefined || this.lastError === undefined) {
      return undefined;
    }
    return {
      target: this.target,
      since: this.since,
      failures: this.failures,
      message: this.lastError.message,
    };
  }

  /** For /healthz. */
  describe(): Record<string, unknown> {
    return {
      target: this.target,
      state: this.state,
      failures: this.failures,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
      ...(this.state === 'waiting' && this.retryAt !== undefined ? { retryAt: this.retryAt } : {}),
    };
  }

  private async run(): Promise<void> {
    const { target, repo, signal, log, metrics } = this.o;
    const name = target.name;
    const min = this.o.minBackoffMs ?? 1000;
    const max = this.o.maxBackoffMs ?? 60_000;
    let delay = min;
    while (!signal.aborted) {
      this.state = 'starting';
      let stored = false;
      try {
        const r = await capture({
          target,
          repo,
          signal,
          onWarning: (m) => log.warn({ target: name }, `capture ${name}: ${m}`),
          onStart: (s) => {
            this.state = 'streaming';
            metrics.captureState(name, 'streaming');
            this.settle?.();
            log.info(
              { target: name, slot: s.slot, created: s.created, resumeFrom: s.resumeFrom },
              `capture ${name}: streaming (${s.created ? `created slot "${s.slot}"` : `slot "${s.slot}"`}, resuming from ${s.resumeFrom})`,
            );
            if (s.created) log.warn({ target: name }, `capture ${name}: ${newLogAdvice(name)}`);
          },
          onSegment: (s) => {
            metrics.observeSegment(name, s);
            if (stored) return;
            stored = true;
            delay = min;
            if (this.failures > 0) {
              log.info(
                { target: name, failures: this.failures, since: this.since },
                `capture ${name}: storing again after ${this.failures} failure(s)`,
              );
              this.failures = 0;
              this.since = undefined;
              this.o.onRecovered?.();
            }
          },
        });
        if (signal.aborted) {
          log.info(
            {
              target: name,
              transactions: r.transactions,
              changes: r.changes,
              committed: r.committed,
            },
            `capture ${name}: stopped; the change log is complete up to ${r.committed}`,
          );
          break;
        }
        throw new OperationError(
          'capture.ended',
          `the replication stream of "${name}" ended without an error`,
        );
      } catch (err) {
        const e = describeError(err);
        if (signal.aborted) {
          log.error(
            { target: name, error: e },
            `capture ${name}: failed while stopping: ${e.message}`,
          );
          break;
        }
        const at = new Date();
        this.failures++;
        this.since ??= at.toISOString();
        this.lastError = { at: at.toISOString(), ...e };
        this.state = 'waiting';
        this.retryAt = new Date(at.getTime() + delay).toISOString();
        metrics.captureState(name, 'failed');
        log.error(
          { target: name, error: e, failures: this.failures, retryInMs: delay },
          `capture ${name}: failed: ${e.message}; retrying in ${delay / 1000} s`,
        );
        this.settle?.();
        this.o.onFailure?.();
        await sleep(delay, signal);
        delay = Math.min(delay * 2, max);
      }
    }
    this.state = 'stopped';
    metrics.captureState(name, 'stopped');
    this.settle?.();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
