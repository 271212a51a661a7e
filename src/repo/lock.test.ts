import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { ExitCode, RepositoryLockedError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { processStart } from '../util/process.js';
import { listLocks, RepositoryLock, removeLocks } from './lock.js';

describe('repository locks', () => {
  it('a lock whose removal fails on a repository turned read-only is removed at the next lock, not kept live for good', async () => {
    const s = new MemoryStorage();
    const a = await RepositoryLock.acquire(s, { exclusive: false, command: 'backup prod' });
    const deleteOnce = s.delete.bind(s);
    s.delete = async () => {
      throw Object.assign(new Error('EROFS: read-only file system, unlink'), { code: 'EROFS' });
    };
    await a.release(); // (no error: the job's own outcome stands)
    expect((await listLocks(s)).map((l) => l.command)).toEqual(['backup prod']);
    s.delete = deleteOnce;
    // Writable again: the next lock of this process (a prune: exclusive) clears it first.
    const p = await RepositoryLock.acquire(s, { exclusive: true, command: 'prune' });
    expect((await listLocks(s)).map((l) => l.command)).toEqual(['prune']);
    await p.release();
    expect(await listLocks(s)).toEqual([]);
  });

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

  it('knows a dead holder whose PID another process has since been given (by its start time)', async () => {
    const s = new MemoryStorage();
    const now = new Date().toISOString();
    const start = processStart(process.pid);
    expect(start).toMatch(/^\d+$/);
    // This process's PID, recorded by a process that started at another time.
    const lock = (id: string, pidStart?: string) =>
      s.write(
        `locks/${id}.json`,
        Buffer.from(
          JSON.stringify({
            id,
            exclusive: true,
            pid: process.pid,
            ...(pidStart === undefined ? {} : { pidStart }),
            hostname: os.hostname(),
            command: 'prune',
            created: now,
            refreshed: now,
          }),
        ),
      );
    await lock('reused', String(Number(start) - 1));
    await lock('same', start);
    await lock('older', undefined); // (written before start times were recorded)
    const statuses = await listLocks(s);
    expect(statuses.find((l) => l.id === 'reused')).toMatchObject({
      stale: true,
      staleReason: `process ${process.pid} is not running`,
    });
    expect(statuses.find((l) => l.id === 'same')?.stale).toBe(false);
    expect(statuses.find((l) => l.id === 'older')?.stale).toBe(false);
    // Locks taken now record it.
    const mine = await RepositoryLock.acquire(new MemoryStorage(), {
      exclusive: false,
      command: 'x',
    });
    expect(mine.info.pidStart).toBe(start);
    await mine.release();
  });

  it('on a repository it cannot write: readers go on unrecorded, prune records once it can, writers are told why', async () => {
    /** A storage whose writes fail as a full (or read-only) disk's do, until `fixed`. */
    class Unwritable extends MemoryStorage {
      fixed = false;
      constructor(private readonly errno: string) {
        super();
      }
      override async write(key: string, data: Uint8Array): Promise<void> {
        if (!this.fixed)
          throw Object.assign(new Error(`${this.errno}: write`), { code: this.errno });
        return super.write(key, data);
      }
    }
    const full = new Unwritable('ENOSPC');
    const reader = await RepositoryLock.acquire(full, {
      exclusive: false,
      command: 'restore',
      reader: true,
    });
    expect(reader.unrecorded).toBe('the repository is full');
    await reader.release();
    const writer = await RepositoryLock.acquire(full, {
      exclusive: false,
      command: 'backup prod',
    }).catch((e: unknown) => e);
    expect(writer).toMatchObject({ code: 'repository.full', exitCode: ExitCode.failed });
    expect((writer as Error).message).toContain('"backup prod" cannot write to it');

    // Prune: refused while anyone holds a lock; else held unrecorded, and recorded when it can be.
    full.fixed = true;
    const held = await RepositoryLock.acquire(full, { exclusive: false, command: 'restore' });
    full.fixed = false;
    await expect(
      RepositoryLock.acquire(full, { exclusive: true, command: 'prune', deferOnFull: true }),
    ).rejects.toThrow(/locked by "restore"/);
    await held.release();
    const prune = await RepositoryLock.acquire(full, {
      exclusive: true,
      command: 'prune',
      deferOnFull: true,
    });
    expect(prune.unrecorded).toBe('the repository is full');
    await expect(prune.record()).rejects.toMatchObject({ code: 'repository.full' });
    full.fixed = true;
    await prune.record();
    expect((await listLocks(full)).map((l) => l.command)).toEqual(['prune']);
    await prune.release();
    expect(await listLocks(full)).toEqual([]);

    // A backup that came while prune was unrecorded: prune's record gives way.
    full.fixed = false;
    const late = await RepositoryLock.acquire(full, {
      exclusive: true,
      command: 'prune',
      deferOnFull: true,
    });
    full.fixed = true;
    const backup = await RepositoryLock.acquire(full, { exclusive: false, command: 'backup prod' });
    await expect(late.record()).rejects.toThrow(/locked by "backup prod"/);
    expect((await listLocks(full)).map((l) => l.command)).toEqual(['backup prod']);
    await backup.release();

    // Read-only: readers read, while no exclusive lock is held; writers are told.
    const ro = new Unwritable('EROFS');
    expect(
      (await RepositoryLock.acquire(ro, { exclusive: false, command: 'check', reader: true }))
        .unrecorded,
    ).toBe('the repository is read-only');
    await expect(
      RepositoryLock.acquire(ro, { exclusive: true, command: 'prune', deferOnFull: true }),
    ).rejects.toMatchObject({ code: 'repository.read-only', exitCode: ExitCode.repository });
  });
});
