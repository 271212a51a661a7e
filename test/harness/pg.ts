/** Helpers for integration tests: the shared servers, fresh databases, and running the CLI. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import type { ConnectionParams } from '../../src/config/targets.js';
import { connectParams, type PgClient } from '../../src/pg/connect.js';
import type { TestServer } from './servers.js';

export type { TestServer } from './servers.js';

/** The servers started by global setup, one per major version. */
export function testServers(): TestServer[] {
  return inject('pgServers');
}

/** Connection parameters for a database on a test server. */
export function params(server: TestServer, database = 'postgres'): ConnectionParams {
  return {
    host: server.host,
    port: server.port,
    user: server.user,
    password: server.password,
    database,
  };
}

/** A postgres:// URL (with password) for a database on a test server. */
export function url(server: TestServer, database = 'postgres'): string {
  return `postgres://${server.user}:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${database}`;
}

/** Connects to a database on a test server. */
export function connectTo(server: TestServer, database = 'postgres'): Promise<PgClient> {
  return connectParams(`test-pg${server.major}`, params(server, database));
}

/** Creates an empty database with a unique name; returns its name. */
export async function freshDatabase(server: TestServer, prefix = 'db'): Promise<string> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  const c = await connectTo(server);
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  return name;
}

/** Runs SQL in a database and closes the connection. */
export async function sql(
  server: TestServer,
  database: string,
  text: string,
): Promise<Array<Record<string, string | null>>> {
  const c = await connectTo(server, database);
  try {
    return (await c.query<Record<string, string | null>>(text)).rows;
  } finally {
    await c.end();
  }
}

/** A temporary directory, removed by the returned cleanup. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'flashback-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Path of the built CLI entry point (tests run against dist/, as users do). */
export const CLI = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

/** The result of running the CLI. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `flashback ARGS` as a child process with a clean environment (no
 * DATABASE_URL, PG*, FLASHBACK_* from the developer's shell) plus `env`.
 */
export function runCli(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<CliResult> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(PG|DATABASE_URL$|FLASHBACK_)/.test(k)) base[k] = v;
  }
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: options.cwd ?? os.tmpdir(), env: { ...base, ...options.env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(options.input ?? '');
  });
}
