/**
 * Schema changes the change log holds no record of (capture without event
 * triggers: a role that is not a superuser, or the triggers disabled): a
 * table renamed or a column retyped shows only in the log's rows, and a
 * restore to a moment after it is refused, not rebuilt with the snapshot's
 * names and types.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import {
  CLI,
  url as dbUrl,
  freshDatabase,
  runCli,
  sql,
  tempDir,
  testServers,
} from '../harness/pg.js';

const server = testServers().find((s) => s.major === 15)!;

describe('a restore to a moment after a schema change the log did not record', () => {
  const name = `unrec${Math.random().toString(16).slice(2, 8)}`;
  const env = { PW: server.password };
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let capture: ChildProcess | undefined;
  let after = '';

  const clock = async (): Promise<string> =>
    String(
      (
        await sql(
          server,
          db,
          `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
        )
      )[0]!.t,
    );

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'unrec');
    await sql(
      server,
      db,
      `CREATE TABLE acct (id int PRIMARY KEY, n int, s varchar(5));
       INSERT INTO acct VALUES (1, 1, 'a'), (2, 2, 'b');
       CREATE TABLE note (id int PRIMARY KEY, body text);
       INSERT INTO note VALUES (1, 'x')`,
    );
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
    );
    let err = '';
    capture = spawn(
      process.execPath,
      [CLI, 'capture', name, '--flush-interval', '100ms', '--heartbeat', '300ms'],
      { cwd: dir, env: { PATH: process.env.PATH, ...env } },
    );
    capture.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    for (let i = 0; i < 100 && !err.includes('resuming from'); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(err).toContain('resuming from');
    const b = await runCli(['backup', name], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);
    // As a capture that is not a superuser's: no event triggers. (Values
    // that fit the old type too: rebuilt with it, nothing would fail.)
    await sql(
      server,
      db,
      `ALTER EVENT TRIGGER flashback_ddl DISABLE; ALTER EVENT TRIGGER flashback_drop DISABLE;
       ALTER EVENT TRIGGER flashback_rewrite DISABLE`,
    );
    await sql(server, db, 'ALTER TABLE acct ALTER COLUMN s TYPE text');
    await sql(server, db, "UPDATE acct SET s = 'fits' WHERE id = 1");
    await sql(server, db, 'ALTER TABLE note RENAME TO memo');
    await sql(server, db, "UPDATE memo SET body = 'renamed' WHERE id = 1");
    after = await clock();
    await new Promise((r) => setTimeout(r, 1500));
  });

  afterAll(async () => {
    if (capture !== undefined && capture.exitCode === null) {
      capture.kill('SIGTERM');
      await new Promise((r) => capture!.once('exit', r));
    }
    await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
    await cleanup();
  });

  const restoreAt = (into: string, ...more: string[]) =>
    runCli(
      [
        'restore',
        name,
        '--at',
        after,
        '--to',
        dbUrl(server, into),
        '--create',
        '--confirm',
        into,
        ...more,
      ],
      { cwd: dir, env },
    );

  it('refuses a column retyped since the snapshot, naming it, and creates nothing', async () => {
    const into = `unrec_a_${Date.now() % 100000}`;
    const r = await restoreAt(into);
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toContain('column s of public.acct changed type after snapshot');
    expect(r.stderr).toContain('the log has no record of the change');
    expect(
      await sql(server, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${into}'`),
    ).toEqual([]);
  });

  it('refuses a table renamed since the snapshot, restored alone', async () => {
    const renamed = await restoreAt(`unrec_b_${Date.now() % 100000}`, '--table', 'note');
    expect(renamed.code, renamed.stderr).toBe(ExitCode.failed);
    expect(renamed.stderr).toContain('table public.note of snapshot');
    expect(renamed.stderr).toContain('is public.memo in the change log');
  });
});
