/** Faults during backup: a full disk and Ctrl-C leave no snapshot, no temporary files, no lock, no slot; the next run works. */
import { execFile, spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { CLI, connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const run = promisify(execFile);
const server = testServers().find((s) => s.major === 17)!;

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  }
  return out.sort();
}

describe('backup faults', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  const env = { PW: server.password };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'faults');
    const c = await connectTo(server, db);
    await createSampleDatabase(c, { tenants: 40 });
    await c.end();
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
  });
  afterAll(async () => cleanup());

  it('fails cleanly when the repository disk is full, and works once there is space', async () => {
    const small = path.join(dir, 'small');
    await run('mkdir', ['-p', small]);
    // A real full disk: a 1 MB tmpfs (the tests run as root, as CI does).
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
    try {
      expect((await runCli(['init', '--force', '--repo', small], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
      );
      const r = await runCli(['backup', 'prod', '--repo', small], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(ExitCode.failed);
      expect(r.stderr).toContain('no space left in the repository');
      expect(r.stderr).toContain('nothing was committed');
      const left = await files(small);
      expect(left.filter((f) => f.startsWith('snapshots/'))).toEqual([]);
      expect(left.filter((f) => f.includes('.tmp-'))).toEqual([]);
      expect(left.filter((f) => f.startsWith('locks/'))).toEqual([]);
      expect((await runCli(['list', '--repo', small], { cwd: dir })).stdout).toContain(
        'no snapshots',
      );
    } finally {
      await run('umount', [small]);
    }
    // The temporary replication slot goes with the failed backup's connection;
    // the server drops it when it notices the disconnect, so allow it a moment.
    const slots = async () =>
      (
        await sql(
          server,
          db,
          "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name LIKE 'flashback_tmp_%' AND database = current_database()",
        )
      )[0]?.n;
    for (let i = 0; i < 100 && (await slots()) !== '0'; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(await slots()).toBe('0');
  });

  it('a full or read-only repository: restore and check still read it, backup says why it cannot write, prune frees a full one', async () => {
    const repo = path.join(dir, 'tight');
    await run('mkdir', ['-p', repo]);
    // Real file systems (the tests run as root, as CI does): full, then read-only.
    await run('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', repo]);
    const config = `retention:\n  keep_last: 1\ntargets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`;
    const cli = (args: string[]) => runCli([...args, '--repo', repo], { cwd: dir, env });
    const restoreInto = async (into: string) => {
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
      const r = await cli(['restore', 'latest', '--to', url, '--create', '--confirm', into]);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${into}`);
      return r;
    };
    try {
      expect((await runCli(['init', '--force', '--repo', repo], { cwd: dir })).code).toBe(0);
      await writeFile(path.join(dir, 'flashback.yaml'), config); // (init --force wrote its own)
      const first = await cli(['backup', 'prod']);
      expect(first.code, first.stderr).toBe(0);
      // Every workflow step changed: the next snapshot's chunks of that table are new.
      await sql(server, db, "UPDATE workflow_steps SET updated_at = updated_at + interval '1 s'");
      expect((await cli(['backup', 'prod'])).code).toBe(0);
      // Fill the disk to the last byte.
      await run('sh', [
        '-c',
        `dd if=/dev/zero of=${repo}/fill bs=64k 2>/dev/null; dd if=/dev/zero of=${repo}/fill2 bs=512 2>/dev/null; true`,
      ]);

      const restored = await restoreInto('tight_full');
      expect(restored.code, restored.stderr).toBe(0);
      const checked = await cli(['check']);
      expect(checked.code, checked.stderr).toBe(0);
      const backup = await cli(['backup', 'prod']);
      expect(backup.code).toBe(ExitCode.failed);
      expect(backup.stderr).toContain('no space left in the repository');
      // Prune takes its lock once it has freed the room for it.
      const pruned = await cli(['prune', '--json']);
      expect(pruned.code, pruned.stderr).toBe(0);
      const p = JSON.parse(pruned.stdout) as { snapshotsRemoved: number; chunksRemoved: number };
      expect(p.snapshotsRemoved).toBe(1);
      expect(p.chunksRemoved).toBeGreaterThan(0);
      expect((await files(repo)).filter((f) => f.startsWith('locks/'))).toEqual([]);
      // The removed snapshot has its tombstone, full disk or not: not taken for lost.
      expect((await files(repo)).filter((f) => f.endsWith('.pruned')).length).toBe(1);
      expect((await cli(['backup', 'prod'])).code).toBe(0);

      await run('mount', ['-o', 'remount,ro', repo]);
      const readOnly = await restoreInto('tight_ro');
      expect(readOnly.code, readOnly.stderr).toBe(0);
      expect((await cli(['check'])).code).toBe(0);
      const refused = await cli(['backup', 'prod']);
      expect(refused.code).toBe(ExitCode.repository);
      expect(refused.stderr).toContain(`cannot write to the repository at ${repo} (EROFS)`);
      const prunedRo = await cli(['prune']);
      expect(prunedRo.code).toBe(ExitCode.repository);
      expect(prunedRo.stderr).toContain('"prune" writes to it');
    } finally {
      await run('umount', [repo]);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
      );
    }
  });

  it('stops on Ctrl-C without committing, and the next backup works', async () => {
    const repo = path.join(dir, 'repo');
    expect((await runCli(['init', '--force', '--repo', repo], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
    const child = spawn(
      process.execPath,
      [CLI, 'backup', 'prod', '--repo', repo, '--workers', '1'],
      { cwd: dir, env: { ...process.env, ...env } },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    // Interrupt once the first chunks are being written (up to 30 s: on a
    // busy machine 2 s were not always enough, and the interrupt then came
    // while the backup still waited for its snapshot).
    const writing = async () => (await files(repo)).some((f) => f.startsWith('chunks/'));
    for (let i = 0; i < 3000 && !(await writing()); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await writing(), 'the backup never began writing chunks').toBe(true);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(ExitCode.interrupted);
    expect(stderr).toContain('backup interrupted: no snapshot was committed');
    const left = await files(repo);
    expect(
      left.filter(
        (f) => f.startsWith('snapshots/') || f.startsWith('locks/') || f.includes('.tmp-'),
      ),
    ).toEqual([]);
    const again = await runCli(['backup', 'prod', '--repo', repo, '--json'], { cwd: dir, env });
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).totals.tables).toBe(6);
  });

  it('waits for a transaction left open, saying which, and stops on Ctrl-C with nothing written', async () => {
    const repo = path.join(dir, 'repo');
    expect((await runCli(['init', '--force', '--repo', repo], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`,
    );
    const stored = (await files(repo)).filter((f) => /^(snapshots|locks)\//.test(f));
    // An open transaction holding a transaction id: no snapshot can begin before it ends.
    const open = await connectTo(server, db);
    try {
      await open.query('BEGIN');
      const xid = (await open.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
      const child = spawn(process.execPath, [CLI, 'backup', 'prod', '--repo', repo], {
        cwd: dir,
        env: { ...process.env, ...env },
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      for (let i = 0; i < 100 && !stderr.includes('waiting'); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(stderr).toMatch(
        new RegExp(
          `warning: backup prod: waiting \\d+ s for [^\\n]*transaction ${xid} \\(pid \\d+, user postgres`,
        ),
      );
      child.kill('SIGINT');
      const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
      expect(code, stderr).toBe(ExitCode.interrupted);
      expect(stderr).toContain(
        'backup interrupted while waiting for a consistent snapshot: nothing was written',
      );
      // Nothing left behind: no snapshot, no lock, no temporary slot; the run is on record.
      expect((await files(repo)).filter((f) => /^(snapshots|locks)\//.test(f))).toEqual(stored);
      expect(
        await sql(
          server,
          db,
          "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'flashback_tmp_%' AND database = current_database()",
        ),
      ).toEqual([]);
      const status = await runCli(['status', '--repo', repo], { cwd: dir, env });
      expect(status.stdout).toContain('backup interrupted while waiting for a consistent snapshot');
    } finally {
      await open.query('ROLLBACK').catch(() => {});
      await open.end();
    }
  });
});
