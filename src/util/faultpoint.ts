/**
 * Fault points for tests: named places in long operations where a test can
 * stop the process dead (SIGKILL) to prove that a crash at exactly that point
 * leaves the repository consistent. A crash cannot be simulated faithfully in
 * the same process (finally blocks would run), so the process parks itself
 * and the test kills it from outside.
 *
 * Inert unless FLASHBACK_FAULTPOINT names the point (docs/CONFIG.md): then
 * the process writes `faultpoint <name> reached` to stderr and waits forever.
 */

/** Fault points in use, so a typo in a test or a call site is a type error. */
export type FaultPointName =
  | 'backup.during-data'
  | 'backup.before-manifest'
  | 'backup.after-manifest'
  | 'capture.after-slot'
  | 'prune.after-manifests'
  | 'prune.during-chunks'
  | 'prune.after-log-start';

let parked: Promise<never> | undefined;
let announced = false;

/**
 * Returns at once, unless FLASHBACK_FAULTPOINT equals `name`: then it never
 * returns. Every caller reaching the point parks; the marker is written once.
 */
export function faultpoint(name: FaultPointName, signal?: AbortSignal): Promise<void> {
  if (process.env.FLASHBACK_FAULTPOINT !== name) return Promise.resolve();
  if (!announced) {
    announced = true;
    process.stderr.write(`faultpoint ${name} reached\n`);
  }
  if (signal === undefined) {
    // A pending promise alone does not keep Node alive; a referenced timer does.
    parked ??= new Promise<never>(() => {
      setInterval(() => {}, 60_000);
    });
    return parked;
  }
  // With a signal, the caller is released when it aborts: tests of a
  // cooperative stop (SIGTERM to `serve` mid-backup) park the work here,
  // then signal, and the work must wind down by itself.
  return new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
