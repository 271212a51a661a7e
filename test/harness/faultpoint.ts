/**
 * Stopping the CLI dead at a fault point (src/util/faultpoint.ts): started
 * with FLASHBACK_FAULTPOINT, it parks there and says so; the test then
 * SIGKILLs it, so no cleanup code runs, as in a crash.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { FaultPointName } from '../../src/util/faultpoint.js';
import { CLI } from './pg.js';

/** Starts `flashback ARGS` in `cwd` and resolves once it is parked at `point` (fails if it exits first, or after 20 s). */
export async function cliAt(
  point: FaultPointName,
  args: readonly string[],
  cwd: string,
  env: Record<string, string>,
): Promise<ChildProcess> {
  // Settings of the test process must not leak into the CLI's.
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(PG|DATABASE_URL$|FLASHBACK_)/.test(k)) base[k] = v;
  }
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...base, ...env, FLASHBACK_FAULTPOINT: point },
  });
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args[0]} never reached ${point}: ${stderr}`));
    }, 20_000);
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`faultpoint ${point} reached\n`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited (${code}) before ${point}: ${stderr}`));
    });
  });
  return child;
}

/** SIGKILLs a process; resolves with the signal it died of. */
export async function killHard(child: ChildProcess): Promise<NodeJS.Signals | null> {
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, s) => r(s)));
  child.kill('SIGKILL');
  return exited;
}
