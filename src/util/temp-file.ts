/**
 * Temporary files for what a reader holds past its memory budget (the rows
 * a window adds to a keyless table, the changes of a very large
 * transaction, row versions past FLASHBACK_OVERLAY_MEMORY). Each is unlinked as soon as it is created: nothing is left
 * behind whatever happens to the process, and its space is freed when the
 * descriptor is closed.
 */
import { mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OperationError } from '../errors.js';

/**
 * Writes [start, end) of `buf` at `pos` of a temporary file. A full disk is
 * an OperationError naming the directory and what to do, not an internal
 * error: a long window needs room there.
 */
export function writeTemp(fd: number, buf: Buffer, start: number, end: number, pos: number): void {
  let at = start;
  try {
    while (at < end) at += writeSync(fd, buf, at, end - at, pos + (at - start));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') throw err;
    throw new OperationError(
      'temp.full',
      `the temporary directory ${os.tmpdir()} is full: what a long change-log window holds past its memory budget goes there`,
      {
        hint: 'free space there, set TMPDIR to a directory with room, or raise FLASHBACK_OVERLAY_MEMORY',
        cause: err,
      },
    );
  }
}

/** A new empty temporary file, already unlinked, open for reading and writing: its descriptor. */
export function createTempFile(prefix = 'flashback-spool-'): number {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  const fd = openSync(path.join(dir, 'data'), 'w+', 0o600);
  rmSync(dir, { recursive: true, force: true });
  return fd;
}
