/**
 * The database's own properties (PostgreSQL 15): owner, privileges,
 * connection limit, settings and comment are recorded by the backup and set
 * on a database that `restore --create` makes, as `pg_restore --create`
 * does. Before, they were lost without a word: a database whose CONNECT had
 * been revoked from PUBLIC came back open to every role. A setting of one
 * role in the database is named as not reproduced, under its role.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 15)!;

describe('database properties', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  const env = { PW: server.password };
  // Roles are per server, shared by every test file: names of their own.
  const suffix = Math.random().toString(16).slice(2, 8);
  const owner = `fbdbowner_${suffix}`;
  const reader = `fbdbreader_${suffix}`;
  const cli = (args: string[]) => runCli(args, { cwd: dir, env });
  /** The properties as the catalogs hold them, comparable between two databases. */
  const properties = async (name: string) =>
    (
      await sql(
        server,
        'postgres',
        `SELECT pg_get_userbyid(d.datdba) AS owner, d.datconnlimit AS connlimit, d.datacl::text AS acl,
           shobj_description(d.oid, 'pg_database') AS comment,
           (SELECT array_agg(x ORDER BY x)::text FROM pg_db_role_setting s, unnest(s.setconfig) x
             WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings
         FROM pg_database d WHERE d.datname = '${name}'`,
      )
    )[0];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'dbprops');
    await sql(
      server,
      'postgres',
      `CREATE ROLE ${owner}; CREATE ROLE ${reader};
       ALTER DATABASE ${db} OWNER TO ${owner};
       ALTER DATABASE ${db} CONNECTION LIMIT 50;
       REVOKE CONNECT, TEMPORARY ON DATABASE ${db} FROM PUBLIC;
       GRANT CONNECT ON DATABASE ${db} TO ${reader};
       ALTER DATABASE ${db} SET work_mem = '4MB';
       ALTER DATABASE ${db} SET search_path = "$user", public, "odd ""schema""";
       ALTER DATABASE ${db} SET statement_timeout = '1min';
       ALTER DATABASE ${db} SET temp_tablespaces = '';
       ALTER DATABASE ${db} SET log_statement = 'ddl';
       ALTER ROLE ${reader} IN DATABASE ${db} SET work_mem = '8MB';
       COMMENT ON DATABASE ${db} IS 'orders for ''EU'' tenants'`,
    );
    await sql(
      server,
      db,
      `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);
       CREATE EXTENSION pg_trgm;
       REVOKE EXECUTE ON FUNCTION pg_catalog.pg_sleep(double precision) FROM PUBLIC;
       REVOKE SELECT ON pg_catalog.pg_settings FROM PUBLIC;
       REVOKE USAGE ON TYPE int4range FROM PUBLIC;
       REVOKE USAGE ON TYPE pg_catalog.timestamptz FROM PUBLIC;
       REVOKE SELECT ON information_schema.tables FROM PUBLIC;
       REVOKE EXECUTE ON FUNCTION public.similarity(text, text) FROM PUBLIC;
       GRANT EXECUTE ON FUNCTION public.similarity(text, text) TO ${reader} WITH GRANT OPTION`,
    );
    expect((await cli(['init', '--repo', 'repo'])).code).toBe(0);
    const target = (name: string, database: string) =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${database}\n    user: postgres\n    password_env: PW\n    protected: false\n`;
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n${target('src', db)}${target('copy', `${db}_copy`)}${target('plain', `${db}_plain`)}`,
    );
  });

  afterAll(async () => {
    for (const d of [db, `${db}_copy`, `${db}_plain`])
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${d}`).catch(() => {});
    await sql(server, 'postgres', `DROP ROLE IF EXISTS ${reader}; DROP ROLE IF EXISTS ${owner}`);
    await cleanup();
  });

  it('sets them on a database restore --create makes, and names a role setting as not reproduced', async () => {
    const b = await cli(['backup', 'src']);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout + b.stderr).toContain(
      `role setting in database for role ${reader}: work_mem=8MB`,
    );
    expect(b.stdout + b.stderr).not.toContain('database setting');
    const r = await cli(['restore', 'latest', '--to', 'copy', '--create']);
    expect(r.code, r.stderr).toBe(0);
    const source = await properties(db);
    expect(source?.acl).toContain(`${reader}=c/${owner}`);
    expect(await properties(`${db}_copy`)).toEqual(source);
    // Hardening of built-in and extension objects comes back too (it was undone).
    const acls = (name: string) =>
      sql(
        server,
        name,
        `SELECT 'pg_sleep' AS o, (SELECT proacl::text FROM pg_proc WHERE oid = 'pg_sleep(double precision)'::regprocedure) AS acl
         UNION ALL SELECT 'similarity', (SELECT proacl::text FROM pg_proc WHERE oid = 'public.similarity(text, text)'::regprocedure)
         UNION ALL SELECT 'pg_settings', (SELECT relacl::text FROM pg_class WHERE oid = 'pg_catalog.pg_settings'::regclass)
         UNION ALL SELECT 'int4range', (SELECT typacl::text FROM pg_type WHERE oid = 'int4range'::regtype)
         UNION ALL SELECT 'timestamptz', (SELECT typacl::text FROM pg_type WHERE oid = 'timestamptz'::regtype)
         UNION ALL SELECT 'information_schema.tables', (SELECT relacl::text FROM pg_class WHERE oid = 'information_schema.tables'::regclass)`,
      );
    const sourceAcls = await acls(db);
    expect(sourceAcls.map((r) => r.acl)).not.toContain(null);
    expect(await acls(`${db}_copy`)).toEqual(sourceAcls);
    // Only what was changed is recorded: information_schema's own grants to
    // PUBLIC are its initial state, not 60-odd changes.
    const manifest = JSON.parse(
      await readFile(
        path.join(
          dir,
          'repo',
          'snapshots',
          `${JSON.parse((await cli(['show', 'latest', '--json'])).stdout).id}.json`,
        ),
        'utf8',
      ),
    ) as { schema: { initialPrivilegesChanged: Array<{ name: string }> } };
    expect(
      manifest.schema.initialPrivilegesChanged
        .filter((c) => c.name.startsWith('information_schema.'))
        .map((c) => c.name),
    ).toEqual(['information_schema.tables']);
    // And a verify restores them in its scratch server and finds them equal.
    const v = await cli(['verify', 'latest']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it('as a role that is not a superuser, restores the rows and warns of what it could not set', async () => {
    const role = `fbdbcreator_${suffix}`;
    await sql(server, 'postgres', `CREATE ROLE ${role} LOGIN CREATEDB PASSWORD 'creator-pw'`);
    try {
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `${await readFile(path.join(dir, 'flashback.yaml'), 'utf8')}  mine:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}_mine\n    user: ${role}\n    password_env: MINE_PW\n    protected: false\n`,
      );
      const r = await runCli(['restore', 'latest', '--to', 'mine', '--create', '--no-owner'], {
        cwd: dir,
        env: { ...env, MINE_PW: 'creator-pw' },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(await sql(server, `${db}_mine`, 'SELECT id FROM t')).toEqual([{ id: '1' }]);
      // A superuser-only setting, and hardening of built-in objects: said, not silently dropped.
      expect(r.stderr).toMatch(
        /warning: the database's setting was not set \(.*log_statement.*\): permission denied/,
      );
      expect(r.stderr).toContain('warning: privileges changed on');
      expect(r.stderr).toContain('only a superuser can change them');
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db}_mine`);
      await sql(server, 'postgres', `DROP ROLE IF EXISTS ${role}`);
    }
  });

  it('leaves them alone in an existing database, and says so', async () => {
    await sql(server, 'postgres', `CREATE DATABASE ${db}_plain`);
    const before = await properties(`${db}_plain`);
    const r = await cli(['restore', 'latest', '--to', 'plain']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      "the source database's privileges, connection limit, settings and comment were left as they are here",
    );
    expect(await properties(`${db}_plain`)).toEqual(before);
  });
});
