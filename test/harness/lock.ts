/** Repository locks as another process would leave them, for tests of what waits for what. */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * Writes the exclusive lock a running prune holds (this live process on this
 * host, so it is not stale) into the repository at `repo`; returns its removal.
 */
export async function holdPruneLock(repo: string): Promise<() => Promise<void>> {
  const file = path.join(repo, 'locks', 'prune.json');
  await mkdir(path.dirname(file), { recursive: true });
  const now = new Date().toISOString();
  await writeFile(
    file,
    JSON.stringify({
      id: 'prune',
      exclusive: true,
      pid: process.pid,
      hostname: os.hostname(),
      command: 'prune',
      created: now,
      refreshed: now,
    }),
  );
  return () => rm(file);
}
