/**
 * A dry run writes nothing that stays, but its trial merge runs in the
 * target's database (rolled back: it still takes row locks and fires
 * triggers). Into the wrong database it is refused as a restore is: an
 * unprotected target that is secretly production, or whose database changed.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

describe('restore --dry-run goes through the identity check (PostgreSQL 17)', () => {
  it('refuses the wrong database before trying anything in it', async () => {
    const { dir, cleanup } = await tempDir();
    const prod = await freshDatabase(server, 'dryprod');
    const other = await freshDatabase(server, 'dryother');
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    const target = (name: string, db: string) =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`;
    const configure = (scratchDb: string) =>
      writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n${target('prod', prod).replace('    protected: false\n', '')}${target('scratch', scratchDb)}`,
      );
    try {
      for (const db of [prod, other]) {
        await sql(server, db, 'CREATE TABLE t (id int PRIMARY KEY, v text)');
      }
      await sql(server, prod, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g");
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await configure(other);
      expect((await run(['backup', 'prod'])).code).toBe(0);
      const dryRun = ['restore', 'latest', '--to', 'scratch', '--table', 't', '--dry-run'];
      // Its own database: the plan, tried and rolled back.
      const fine = await run(dryRun);
      expect(fine.code, fine.stderr).toBe(0);
      expect(fine.stdout).toMatch(/public\.t\s+merge\s+10\s+10\s+0\s+0/);

      // "scratch" now points at production's database.
      await configure(prod);
      await sql(server, prod, 'DELETE FROM t WHERE id > 5');
      const refused = await run(dryRun);
      expect(refused.code).toBe(ExitCode.refused);
      expect(refused.stderr).toMatch(/scratch/);
      expect(refused.stdout).not.toMatch(/merge/);
    } finally {
      await cleanup();
    }
  });
});
