/** The test harness itself: one server per version, and no postmaster outlives a crashed owner. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isAlive, reapOrphanedServers } from '../../src/pg/embedded.js';
import { sql, tempDir, testServers } from '../harness/pg.js';

describe('test servers', () => {
  it('run at least PostgreSQL 15 and 17, each on its own port with wal_level=logical', async () => {
    const servers = testServers();
    const majors = servers.map((s) => s.major);
    expect(majors).toEqual(expect.arrayContaining([15, 17]));
    expect(new Set(servers.map((s) => s.port)).size).toBe(servers.length);
    for (const s of servers) {
      const [row] = await sql(
        s,
        'postgres',
        `SELECT current_setting('server_version_num') AS v, current_setting('wal_level') AS wal, current_setting('data_directory') AS dir`,
      );
      expect(Math.floor(Number(row?.v) / 10000)).toBe(s.major);
      expect(row?.wal).toBe('logical');
    }
    const dirs = await Promise.all(
      servers.map(
        async (s) => (await sql(s, 'postgres', 'SHOW data_directory'))[0]?.data_directory,
      ),
    );
    expect(new Set(dirs).size).toBe(servers.length);
  });
});

describe('crash cleanup', () => {
  it('reaps the postmaster of an owner process killed with SIGKILL, by its PID file', async () => {
    const { dir: baseDir, cleanup } = await tempDir();
    const embedded = fileURLToPath(new URL('../../dist/pg/embedded.js', import.meta.url));
    // A separate Node process starts a server, reports it, and then is killed.
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { EmbeddedServer } from ${JSON.stringify(embedded)};
         const s = await EmbeddedServer.start({ major: 15, baseDir: ${JSON.stringify(baseDir)} });
         console.log(JSON.stringify({ pid: s.pid, dir: s.dir }));
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) =>
        reject(new Error(`child exited with ${code} before starting a server`)),
      );
    });
    const started = JSON.parse(line) as { pid: number; dir: string };
    expect(isAlive(started.pid)).toBe(true);

    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // The postmaster survives its owner: this is what the reaper is for.
    expect(isAlive(started.pid)).toBe(true);
    expect(existsSync(path.join(started.dir, 'data', 'postmaster.pid'))).toBe(true);

    expect(await reapOrphanedServers(baseDir)).toBe(1);
    expect(isAlive(started.pid)).toBe(false);
    expect(existsSync(started.dir)).toBe(false);
    await cleanup();
  });

  it("removes only its own server directories: a dead owner's, even without owner.json", async () => {
    const { dir: baseDir, cleanup } = await tempDir();
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await mkdir(path.join(baseDir, `pg15-${dead}-deadbeef`, 'data'), { recursive: true });
    await mkdir(path.join(baseDir, 'my-notes'));
    await writeFile(path.join(baseDir, 'pg15-not-ours.txt'), 'keep');
    expect(await reapOrphanedServers(baseDir)).toBe(1);
    expect((await readdir(baseDir)).sort()).toEqual(['my-notes', 'pg15-not-ours.txt']);
    await cleanup();
  });

  it('restarts a server cleanly and after a crash, keeping its data, port and password', async () => {
    const { dir: baseDir, cleanup } = await tempDir();
    const { EmbeddedServer } = await import('../../src/pg/embedded.js');
    const { connectParams } = await import('../../src/pg/connect.js');
    const s = await EmbeddedServer.start({ major: 17, baseDir });
    try {
      const c = await connectParams('t', s.connection());
      await c.query('CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)');
      await c.end();
      for (const mode of ['fast', 'immediate'] as const) {
        const before = s.pid;
        await s.restart(mode);
        expect(s.pid).not.toBe(before);
        expect(isAlive(before)).toBe(false);
        const again = await connectParams('t', s.connection());
        expect((await again.query('SELECT count(*) AS n FROM kept')).rows[0]).toEqual({ n: '1' });
        await again.end();
      }
    } finally {
      await s.stop();
      await cleanup();
    }
  });

  it('leaves servers of a live owner alone', async () => {
    const { dir: baseDir, cleanup } = await tempDir();
    const { EmbeddedServer } = await import('../../src/pg/embedded.js');
    const s = await EmbeddedServer.start({ major: 17, baseDir });
    expect(await reapOrphanedServers(baseDir)).toBe(0);
    expect(isAlive(s.pid)).toBe(true);
    await s.stop();
    expect(isAlive(s.pid)).toBe(false);
    await cleanup();
  });
});
