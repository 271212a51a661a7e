/**
 * A real PgBouncer (Debian's package) in front of a test server, for tests
 * of what works through a connection pooler. Throws, never skips, when
 * PgBouncer is missing: `.ci/run` installs it (apt-get install pgbouncer).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestServer } from './servers.js';

/** Where Debian installs it. */
const PGBOUNCER = '/usr/sbin/pgbouncer';

/** A running PgBouncer; `stop()` ends it and removes its files. */
export interface Pooler {
  readonly host: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** Starts PgBouncer forwarding every database of `server`, in the given pool mode. */
export async function startPgbouncer(
  server: TestServer,
  poolMode: 'session' | 'transaction' = 'session',
): Promise<Pooler> {
  if (!existsSync(PGBOUNCER)) {
    throw new Error(
      `${PGBOUNCER} is missing: this test runs Flashback through PgBouncer (apt-get install pgbouncer)`,
    );
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-pgbouncer-'));
  const port = await freePort();
  // PgBouncer refuses to run as root; -u switches to the postgres user,
  // which must then read its files (the embedded servers run as that user too).
  const asRoot = process.getuid?.() === 0;
  await writeFile(path.join(dir, 'users.txt'), `"${server.user}" "${server.password}"\n`);
  await writeFile(
    path.join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${server.host} port=${server.port}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      // Clients are trusted (the test's own); PgBouncer logs in to the server with users.txt's password.
      'auth_type = trust',
      `auth_file = ${path.join(dir, 'users.txt')}`,
      `pool_mode = ${poolMode}`,
      `logfile = ${path.join(dir, 'pgbouncer.log')}`,
      '',
    ].join('\n'),
  );
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    for (const f of ['', 'users.txt', 'pgbouncer.ini']) await chown(path.join(dir, f), uid, gid);
  }
  const args = [...(asRoot ? ['-u', 'postgres'] : []), path.join(dir, 'pgbouncer.ini')];
  const child: ChildProcess = spawn(PGBOUNCER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  try {
    await waitForPort(port, child, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    host: '127.0.0.1',
    port,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGINT');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`pgbouncer exited with ${child.exitCode}: ${log()}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`pgbouncer did not listen on port ${port} within 10 s: ${log()}`);
}
