import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { ExitCode, RepositoryLockedError } from '../errors.js';
import { MemoryStorage } from '../storage/memory.js';
import { takeServeLease } from './lease.js';

const lease = (pid: number, refreshed: string, hostname = os.hostname()) =>
  Buffer.from(JSON.stringify({ id: 'x', pid, hostname, started: refreshed, refreshed }));

describe('the serve lease', () => {
  it('refuses while another serve runs, and takes over from one that is gone', async () => {
    const s = new MemoryStorage();
    const notes: string[] = [];
    const first = await takeServeLease(s, (m) => notes.push(m));
    await first.release();

    // A live serve: another process of this host, refreshed lately.
    await s.write('serve/live.json', lease(process.ppid, new Date().toISOString()));
    const refused = await takeServeLease(s, () => {}).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RepositoryLockedError);
    expect((refused as RepositoryLockedError).exitCode).toBe(ExitCode.locked);
    expect((refused as Error).message).toContain(`another flashback serve runs on the repository`);
    const left: string[] = [];
    for await (const o of s.list('serve/')) left.push(o.key);
    expect(left).toEqual(['serve/live.json']);
  });

  it('takes a lease of its own pid (a container restarted after a kill), or one not refreshed, as stale', async () => {
    const s = new MemoryStorage();
    await s.write('serve/self.json', lease(process.pid, new Date().toISOString()));
    await s.write('serve/old.json', lease(process.ppid, '2026-01-01T00:00:00.000Z'));
    await s.write('serve/away.json', lease(1, '2026-01-01T00:00:00.000Z', 'another-host'));
    const notes: string[] = [];
    const l = await takeServeLease(s, (m) => notes.push(m));
    expect(notes).toHaveLength(3);
    for (const n of notes) expect(n).toMatch(/^removed the lease of a serve that is gone/);
    await l.release();
  });
});
