import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { ExitCode, RepositoryLockedError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { listLocks, RepositoryLock, removeLocks } from './lock.js';

describe('repository locks', () => {
  it('lets shared locks coexist and refuses an exclusive one, naming the holder', async () => {
    const s = new MemoryStorage();
    const a = await RepositoryLock.acquire(s, { exclusive: false, command: 'backup prod' });
    const b = await RepositoryLock.acquire(s, { exclusive: false, command: 'restore x' });
    const err = await RepositoryLock.acquire(s, { exclusive: true, command: 'prune' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RepositoryLockedError);
    expect((err as RepositoryLockedError).exitCode).toBe(ExitCode.locked);
    expect((err as Error).message).toMatch(/locked by "(backup prod|restore x)" \(pid \d+ on /);
    // The refused attempt left no lock behind.
    expect((await listLocks(s)).map((l) => l.command).sort()).toEqual(['backup prod', 'restore x']);
    await a.release();
    await b.release();
    const c = await RepositoryLock.acquire(s, { exclusive: true, command: 'prune' });
    await expect(
      RepositoryLock.acquire(s, { exclusive: false, command: 'backup' }),
    ).rejects.toThrow(/locked exclusively by "prune"/);
    await c.release();
    expect(await listLocks(s)).toEqual([]);
  });

  it('ignores and removes the lock of a dead process; keeps live ones unless --all', async () => {
    const s = new MemoryStorage();
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    const now = new Date().toISOString();
    await s.write(
      'locks/dead.json',
      Buffer.from(
        JSON.stringify({
          id: 'dead',
          exclusive: true,
          pid: dead,
          hostname: os.hostname(),
          command: 'prune',
          created: now,
          refreshed: now,
        }),
      ),
    );
    const old = new Date(Date.now() - 3600_000).toISOString();
    await s.write(
      'locks/far.json',
      Buffer.from(
        JSON.stringify({
          id: 'far',
          exclusive: true,
          pid: 1,
          hostname: 'elsewhere',
          command: 'prune',
          created: old,
          refreshed: old,
        }),
      ),
    );
    const statuses = await listLocks(s);
    expect(statuses.find((l) => l.id === 'dead')).toMatchObject({
      stale: true,
      staleReason: `process ${dead} is not running`,
    });
    expect(statuses.find((l) => l.id === 'far')).toMatchObject({
      stale: true,
      staleReason: 'not refreshed for 60 min',
    });
    // Stale exclusive locks do not block.
    const live = await RepositoryLock.acquire(s, { exclusive: false, command: 'backup' });
    expect((await removeLocks(s, { all: false })).map((l) => l.id).sort()).toEqual(['dead', 'far']);
    expect((await listLocks(s)).map((l) => l.command)).toEqual(['backup']);
    expect((await removeLocks(s, { all: true })).map((l) => l.command)).toEqual(['backup']);
    await live.release();
  });
});
