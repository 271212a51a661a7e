/**
 * Temporary files for what a reader holds past its memory budget (the rows
 * a window adds to a keyless table, the changes of a very large
 * transaction). Each is unlinked as soon as it is created: nothing is left
 * behind whatever happens to the process, and its space is freed when the
 * descriptor is closed.
 */
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A new empty temporary file, already unlinked, open for reading and writing: its descriptor. */
export function createTempFile(prefix = 'flashback-spool-'): number {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  const fd = openSync(path.join(dir, 'data'), 'w+', 0o600);
  rmSync(dir, { recursive: true, force: true });
  return fd;
}
