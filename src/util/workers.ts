/**
 * Runs parallel workers so that a failure never leaves work running behind
 * the caller's back: the first failure aborts the others (through the signal
 * each receives), and the call returns only after every worker has stopped,
 * then throws that first failure. Cleanup after a failed backup or restore
 * can then rely on no write still being in flight.
 */

/** Runs `count` workers; each gets its index and a signal aborted when any worker fails or `outer` aborts. */
export async function runWorkers(
  count: number,
  worker: (index: number, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<void> {
  const controller = new AbortController();
  const onOuter = (): void => controller.abort();
  outer?.addEventListener('abort', onOuter);
  if (outer?.aborted === true) controller.abort();
  let first: { error: unknown } | undefined;
  try {
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        worker(i, controller.signal).catch((error: unknown) => {
          first ??= { error };
          controller.abort();
        }),
      ),
    );
  } finally {
    outer?.removeEventListener('abort', onOuter);
  }
  if (first !== undefined) throw first.error;
}

/**
 * Marks a promise that will be awaited later (an in-flight write, a prefetch)
 * as handled now, so a rejection before that await does not crash the process
 * as an unhandled rejection. Returns the same promise; awaiting it still throws.
 */
export function inFlight<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}
