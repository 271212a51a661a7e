/** Process helpers shared across layers. */
import { readFileSync } from 'node:fs';

/** True if a process with this PID exists (EPERM means it exists but is not ours). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * When a process started, as the kernel counts it (Linux: field 22 of
 * /proc/PID/stat, clock ticks since boot), or undefined where that cannot be
 * read (another system, the process gone). PIDs are reused (pid_max is
 * 32768 by default): a record of a dead process names a PID that another
 * process may hold by now. The PID and this value together name one process.
 */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: the fields after it start past the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = rest[22 - 3];
    return start !== undefined && /^\d+$/.test(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

/**
 * True if the process that recorded (`pid`, `start`) is still running: its
 * PID is alive, and (where the start was recorded and can be read now) it is
 * the same process, not a later one given the same PID.
 */
export function isSameProcessAlive(pid: number, start: string | undefined): boolean {
  if (!isAlive(pid)) return false;
  if (start === undefined) return true;
  const now = processStart(pid);
  return now === undefined || now === start;
}
