/**
 * SIGKILL of a backup at several points (no cleanup code runs): the
 * repository stays consistent (`check --read-data` clean), no partial
 * snapshot is listed, the dead process's lock and replication slot do not
 * linger in anyone's way, and the next backup succeeds and restores.
 */
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { StatusReport } from '../../src/monitor/status.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import type { FaultPointName } from '../../src/util/faultpoint.js';
import type { CheckReport } from '../../src/verify/check.js';
import { cliAt, killHard } from '../harness/faultpoint.js';
import { connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17) ?? testServers()[0]!;

const POINTS: ReadonlyArray<FaultPointName> = [
  'backup.during-data',
  'backup.before-manifest',
  'backup.after-manifest',
];

describe('SIGKILL of a backup', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let source: string;
  const env = () => ({ PW: server.password });

  /** Temporary slots of backups of the source database. */
  const slots = async (): Promise<number> =>
    Number(
      (
        await sql(
          server,
          'postgres',
          `SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name LIKE 'flashback_tmp_%' AND database = '${source}'`,
        )
      )[0]?.n,
    );

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    source = await freshDatabase(server, 'kill');
    const c = await connectTo(server, source);
    await createSampleDatabase(c, { tenants: 4, subscribersPerTenant: 200, filesPerTenant: 300 });
    await c.end();
    const t = (name: string, db: string, extra = '') =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n${extra}`;
    const copies = POINTS.flatMap((_, i) =>
      ['a', 'b'].map((s) => t(`copy${i}${s}`, `${source}_r${i}${s}`, '    protected: false\n')),
    );
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `targets:\n${t('prod', source)}${copies.join('')}`,
    );
  });
  afterAll(async () => cleanup());

  it.each(POINTS.map((p, i) => [p, i] as const))(
    'killed at %s: check clean, no partial snapshot, the next backup works',
    async (point, i) => {
      const repo = path.join(dir, point);
      // init also writes a starter flashback.yaml: in a directory of its own, not over ours.
      const scratch = await mkdtemp(path.join(dir, 'init-'));
      expect((await runCli(['init', '--repo', repo], { cwd: scratch })).code).toBe(0);
      const committed = point === 'backup.after-manifest';

      const child = await cliAt(point, ['backup', 'prod', '--repo', repo], dir, {
        PW: server.password,
      });
      // Parked mid-backup: it holds its temporary slot, so its vanishing below is the kill's doing.
      expect(await slots()).toBe(1);
      expect(await killHard(child)).toBe('SIGKILL');

      // The dead process's lock stays behind (no cleanup ran).
      const locks = await readdir(path.join(repo, 'locks'));
      expect(locks.length).toBe(1);
      const lock = JSON.parse(await readFile(path.join(repo, 'locks', locks[0]!), 'utf8'));
      expect(lock.pid).toBe(child.pid);

      const [check, list] = await Promise.all([
        runCli(['check', '--repo', repo, '--read-data', '--json'], { cwd: dir }),
        runCli(['list', '--repo', repo, '--json'], { cwd: dir }),
      ]);
      expect(check.code, check.stdout).toBe(ExitCode.ok);
      const report = JSON.parse(check.stdout) as CheckReport;
      expect(report.totals.errors).toBe(0);
      // Chunks written before the commit point are unreferenced (prune's work); none after it.
      if (committed) expect(report.totals.unreferencedChunks).toBe(0);
      else expect(report.totals.unreferencedChunks).toBeGreaterThan(0);

      const listed = JSON.parse(list.stdout) as Array<{ id: string; target: string }>;
      expect(listed.length).toBe(committed ? 1 : 0);

      // The kill left no run record, yet status reports it: a backup killed
      // (out of memory, say) must not go unnoticed until its age alerts.
      // Killed after its commit point, it did its work: nothing to report.
      const killedFinding = async () => {
        const st = await runCli(['status', '--repo', repo, '--target', 'prod', '--json'], {
          cwd: dir,
        });
        const r = JSON.parse(st.stdout) as StatusReport;
        return {
          code: st.code,
          failed: r.targets[0]!.findings.filter((f) => f.kind === 'backup-failed'),
        };
      };
      const before = await killedFinding();
      if (committed) {
        expect(before.failed).toEqual([]);
      } else {
        expect(before.code).toBe(ExitCode.critical);
        expect(before.failed).toEqual([
          expect.objectContaining({
            severity: 'critical',
            message: expect.stringContaining(
              `the last backup of "prod" was KILLED (last seen running at ${lock.refreshed}): "backup prod" (pid ${child.pid} on ${lock.hostname}`,
            ),
          }),
        ]);
        expect(before.failed[0]!.message).toContain(`process ${child.pid} is not running`);
      }

      const next = await runCli(['backup', 'prod', '--repo', repo, '--json'], {
        cwd: dir,
        env: env(),
      });
      expect(next.code, next.stderr).toBe(ExitCode.ok);
      const id = JSON.parse(next.stdout).snapshot as string;
      // A backup that worked since supersedes the killed one, its lock still there.
      expect((await killedFinding()).failed).toEqual([]);

      // The new snapshot restores, and so does the one committed just before the kill.
      const restores: Array<[string, string]> = [[id, `copy${i}a`]];
      if (committed) restores.push([listed[0]!.id, `copy${i}b`]);
      const want = (await sql(server, source, 'SELECT count(*) AS n FROM subscribers'))[0]?.n;
      // Side by side with them, unlock: it removes the dead process's lock, recognised by its PID.
      const [unlock, ...restored] = await Promise.all([
        runCli(['unlock', '--repo', repo, '--json'], { cwd: dir }),
        ...restores.map(([snapshot, to]) =>
          runCli(
            ['restore', snapshot, '--to', to, '--create', '--table', 'subscribers', '--repo', repo],
            { cwd: dir, env: env() },
          ),
        ),
      ]);
      for (const [n, r] of restored.entries()) {
        expect(r.code, r.stderr).toBe(ExitCode.ok);
        const db = `${source}_r${restores[n]![1].slice(-2)}`;
        expect((await sql(server, db, 'SELECT count(*) AS n FROM subscribers'))[0]?.n).toBe(want);
      }
      const removed = JSON.parse(unlock.stdout).removed as Array<{
        pid: number;
        staleReason: string;
      }>;
      expect(removed).toEqual([
        expect.objectContaining({
          pid: child.pid,
          staleReason: `process ${child.pid} is not running`,
        }),
      ]);

      // The server dropped the killed backup's temporary slot with its connection.
      for (let n = 0; n < 100 && (await slots()) !== 0; n++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await slots()).toBe(0);
    },
  );
});
