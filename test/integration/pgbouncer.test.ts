/**
 * Flashback through PgBouncer (session pooling), as many production
 * databases are reached: doctor and restore connect, and the fixed session
 * settings still apply (a database set to DateStyle 'SQL, DMY' restores 10
 * March as 10 March). PgBouncer refuses the startup parameter `options`, so
 * the settings must be SET after connecting. Debian's PgBouncer (1.18)
 * refuses replication connections, which backups need: doctor and backup
 * say to point the target at PostgreSQL itself.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';
import { startPgbouncer } from '../harness/pgbouncer.js';

const server = testServers().find((s) => s.major === 17)!;

describe('through PgBouncer in session pooling (PostgreSQL 17)', () => {
  it('doctor and restore connect and keep values exact; a backup says to bypass the pooler', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'pooled');
    const copy = `${db}_copy`;
    const pooler = await startPgbouncer(server);
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    try {
      await sql(server, 'postgres', `ALTER DATABASE ${db} SET DateStyle = 'SQL, DMY'`);
      await sql(
        server,
        db,
        `CREATE TABLE dated (id int PRIMARY KEY, d date, i interval);
         INSERT INTO dated VALUES (1, '2024-03-10', '-1 day +02:00:00'), (2, '2024-12-01', '1 year 2 mons')`,
      );
      expect((await run(['init', '--force', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  pooled:\n    host: ${pooler.host}\n    port: ${pooler.port}\n    database: ${db}\n    user: ${server.user}\n    password_env: PW\n    protected: false\n`,
      );

      // Backed up directly (before doctor records "pooled"'s fingerprint: after it, a URL to
      // the same database is refused as a second name for it).
      const direct = `postgres://${server.user}:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${db}`;
      const backup = await run(['backup', direct]);
      expect(backup.code, backup.stderr).toBe(0);

      // doctor connects through the pooler, and says the replication connection is refused.
      const doctor = await run(['doctor', 'pooled']);
      expect(doctor.stdout + doctor.stderr).not.toMatch(/unsupported startup parameter: options/);
      expect(doctor.stdout).toMatch(/ok +server-version/);
      expect(doctor.stdout).toMatch(
        /CRITICAL +replication-connection +cannot open a replication connection/,
      );
      expect(doctor.stdout).toMatch(/fix: .*point the target at PostgreSQL itself/);
      expect(doctor.code).toBe(2);

      // A backup needs a replication connection: refused, with what to do.
      const viaPooler = await run(['backup', 'pooled']);
      expect(viaPooler.code).toBe(5);
      expect(viaPooler.stderr).toMatch(/does not accept replication connections/);
      expect(viaPooler.stderr).toMatch(/hint: .*point the target at PostgreSQL itself/);

      // Restored through the pooler: whole, and rows into the live database.
      const target = `postgres://${server.user}:${encodeURIComponent(server.password)}@${pooler.host}:${pooler.port}/${copy}`;
      const restore = await run([
        'restore',
        'latest',
        '--to',
        target,
        '--create',
        '--confirm',
        copy,
      ]);
      expect(restore.code, restore.stderr).toBe(0);

      // Read directly (the harness's connections have the fixed ISO settings too).
      const read = (d: string) =>
        sql(server, d, 'SELECT id, d::text, i::text FROM dated ORDER BY id');
      const source = await read(db);
      expect(await read(copy)).toEqual(source);
      expect(source.map((r) => r.d)).toEqual(['2024-03-10', '2024-12-01']);

      await sql(server, db, 'DELETE FROM dated WHERE id = 1');
      const rows = await run([
        'restore',
        'latest',
        '--table',
        'dated',
        '--where',
        'id = 1',
        '--to',
        'pooled',
      ]);
      expect(rows.code, rows.stderr).toBe(0);
      expect(await read(db)).toEqual(source);
    } finally {
      await pooler.stop();
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${copy} WITH (FORCE)`);
      await cleanup();
    }
  });
});
