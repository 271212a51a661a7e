/**
 * Fidelity through the real commands: the fixture (every type family, quoted
 * identifiers, partitions, generated and identity columns, views, functions,
 * triggers, RLS, comments, grants) and a pgbench database are backed up with
 * `flashback backup`, restored with `flashback restore` into new databases
 * (both the parallel `--create` path and the single-transaction path into an
 * existing empty database), and compared: every table's COPY output byte for
 * byte, the schema model, and on PostgreSQL 15 Debian's pg_dump --schema-only.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qualify } from '../../src/pg/schema/quote.js';
import {
  connectTo,
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';
import { FIXTURE, readModel, schemaDump } from '../harness/schema.js';

const run = promisify(execFile);

/** A table's COPY text with its lines sorted: byte-equal iff the tables hold the same rows. */
async function copyText(server: TestServer, db: string, table: string): Promise<Buffer> {
  const c = await connectTo(server, db);
  try {
    const parts: Buffer[] = [];
    for await (const b of c.query(
      copyTo(`COPY (SELECT * FROM ONLY ${table}) TO STDOUT`),
    ) as AsyncIterable<Buffer>)
      parts.push(b);
    const lines = Buffer.concat(parts).toString('latin1').split('\n');
    lines.sort();
    return Buffer.from(lines.join('\n'), 'latin1');
  } finally {
    await c.end();
  }
}

async function expectSameData(server: TestServer, a: string, b: string): Promise<number> {
  const model = await readModel(server, a);
  let compared = 0;
  for (const t of model.tables.filter((x) => x.hasData)) {
    const name = qualify(t.schema, t.name);
    const [x, y] = [await copyText(server, a, name), await copyText(server, b, name)];
    expect(y.equals(x), `rows of ${name} differ`).toBe(true);
    compared++;
  }
  for (const v of model.views.filter((x) => x.kind === 'materialized')) {
    const name = qualify(v.schema, v.name);
    expect(
      (await copyText(server, b, name)).equals(await copyText(server, a, name)),
      `rows of ${name} differ`,
    ).toBe(true);
  }
  return compared;
}

describe.each(testServers().map((s) => [s.major, s] as const))(
  'fidelity through backup and restore on PostgreSQL %i',
  (major, server: TestServer) => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let source: string;
    let snapshot: string;
    const env = { PW: server.password };
    const target = (name: string, db: string) =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`;

    beforeAll(async () => {
      ({ dir, cleanup } = await tempDir());
      source = await freshDatabase(server, 'fid');
      await sql(server, source, await readFile(FIXTURE, 'utf8'));
      expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: ./repo\ntargets:\n${target('src', source)}${target('fast', `${source}_fast`)}${target('tx', `${source}_tx`)}`,
      );
      const r = await runCli(['backup', 'src', '--json'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      snapshot = out.snapshot;
      expect(out.unsupported).toEqual([]);
    });
    afterAll(async () => cleanup());

    it('restores into a new database (parallel) with every row byte-identical and the same schema', async () => {
      const r = await runCli(['restore', snapshot, '--to', 'fast', '--create'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      expect(await expectSameData(server, source, `${source}_fast`)).toBeGreaterThanOrEqual(19);
      expect(await readModel(server, `${source}_fast`)).toEqual(await readModel(server, source));
      if (major === 15)
        expect(await schemaDump(server, `${source}_fast`)).toBe(await schemaDump(server, source));
    });

    it('restores into an existing empty database in one transaction, identically', async () => {
      await sql(server, 'postgres', `CREATE DATABASE ${source}_tx`);
      const r = await runCli(['restore', snapshot, '--to', 'tx'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      await expectSameData(server, source, `${source}_tx`);
      expect(await readModel(server, `${source}_tx`)).toEqual(await readModel(server, source));
      if (major === 15)
        expect(await schemaDump(server, `${source}_tx`)).toBe(await schemaDump(server, source));
    });

    it('puts back the rows of a partitioned table named by its parent, into each partition', async () => {
      const events = (db: string) =>
        sql(
          server,
          db,
          'SELECT tableoid::regclass::text AS part, e::text AS row FROM app.events e ORDER BY id',
        );
      const want = await events(source);
      // Rows gone from three partitions, two levels deep.
      await sql(server, `${source}_tx`, 'DELETE FROM app.events WHERE id IN (1, 3, 4)');
      expect((await events(`${source}_tx`)).length).toBe(want.length - 3);
      const r = await runCli(['restore', snapshot, '--to', 'tx', '--table', 'app.events'], {
        cwd: dir,
        env,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(await events(`${source}_tx`)).toEqual(want);
      expect(new Set(want.map((w) => w.part)).size).toBeGreaterThanOrEqual(4);
    });

    it('refuses up front when the snapshot needs roles the target lacks, and restores with --no-owner --no-acl', async () => {
      // The fixture's role exists cluster-wide; a copy of the snapshot that names another one stands in for a new server.
      const other = await freshDatabase(server, 'fid_roles');
      await sql(
        server,
        other,
        `CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO postgres`,
      );
      await sql(server, 'postgres', 'CREATE ROLE fid_gone_owner; CREATE ROLE fid_gone_reader');
      await sql(
        server,
        other,
        `ALTER TABLE t OWNER TO fid_gone_owner; ALTER TABLE t ENABLE ROW LEVEL SECURITY;
         CREATE POLICY readers ON t FOR SELECT TO fid_gone_reader USING (id < 10);
         CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain VALUES (1)`,
      );
      await writeFile(
        path.join(dir, 'roles.yaml'),
        `repository: ./repo\ntargets:\n${target('r', other)}${target('r2', `${other}_copy`)}`,
      );
      const b = await runCli(['backup', 'r', '--json', '--config', 'roles.yaml'], {
        cwd: dir,
        env,
      });
      expect(b.code, b.stderr).toBe(0);
      await sql(server, other, 'ALTER TABLE t OWNER TO postgres; DROP POLICY readers ON t');
      await sql(server, 'postgres', 'DROP ROLE fid_gone_owner; DROP ROLE fid_gone_reader');
      const id = JSON.parse(b.stdout).snapshot;
      const refused = await runCli(
        ['restore', id, '--to', 'r2', '--create', '--config', 'roles.yaml'],
        { cwd: dir, env },
      );
      expect(refused.code).toBe(3);
      expect(refused.stderr).toContain(
        'the snapshot refers to roles that do not exist on the target: fid_gone_owner, fid_gone_reader',
      );
      expect(refused.stderr).toContain('--no-owner');
      // A policy's role is needed with --no-acl too: refused up front, not halfway.
      const policy = await runCli(
        [
          'restore',
          id,
          '--to',
          'r2',
          '--create',
          '--no-owner',
          '--no-acl',
          '--config',
          'roles.yaml',
        ],
        { cwd: dir, env },
      );
      expect(policy.code, policy.stderr).toBe(3);
      expect(policy.stderr).toContain('do not exist on the target: fid_gone_reader');
      expect(policy.stderr).toContain('must exist whatever --no-acl says');
      // A table without such a policy restores alone all the same.
      const alone = await runCli(
        [
          'restore',
          id,
          '--to',
          'r2',
          '--create',
          '--table',
          'plain',
          '--no-owner',
          '--no-acl',
          '--config',
          'roles.yaml',
        ],
        { cwd: dir, env },
      );
      expect(alone.code, alone.stderr).toBe(0);
      await sql(server, 'postgres', `DROP DATABASE ${other}_copy`);
      await sql(server, 'postgres', 'CREATE ROLE fid_gone_reader');
      // Nothing half-made remains: the database created for the restore is gone again.
      expect(
        await sql(server, 'postgres', `SELECT 1 FROM pg_database WHERE datname = '${other}_copy'`),
      ).toEqual([]);
      const ok = await runCli(
        ['restore', id, '--to', 'r2', '--create', '--no-owner', '--config', 'roles.yaml'],
        { cwd: dir, env },
      );
      expect(ok.code, ok.stderr).toBe(0);
      await sql(server, `${other}_copy`, 'DROP POLICY readers ON t');
      await sql(server, 'postgres', 'DROP ROLE fid_gone_reader');
    });
  },
);

describe.each(
  testServers()
    .filter((s) => s.major !== 18)
    .map((s) => [s.major, s] as const),
)('a pgbench database on PostgreSQL %i', (_major, server: TestServer) => {
  it('comes back byte-identical', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'bench');
    const env = { ...process.env, PGPASSWORD: server.password };
    // Debian's pgbench (postgresql-15) initialises any server version.
    await run(
      'pgbench',
      ['-i', '-s', '2', '-q', '-h', server.host, '-p', String(server.port), '-U', 'postgres', db],
      { env },
    );
    await run(
      'pgbench',
      ['-c', '2', '-t', '200', '-h', server.host, '-p', String(server.port), '-U', 'postgres', db],
      { env },
    );
    expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
    const t = (n: string, d: string) =>
      `  ${n}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${d}\n    user: postgres\n    password_env: PW\n    protected: false\n`;
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n${t('b', db)}${t('c', `${db}_copy`)}`,
    );
    const cli = { cwd: dir, env: { PW: server.password } };
    expect((await runCli(['backup', 'b'], cli)).code).toBe(0);
    const r = await runCli(['restore', 'latest', '--to', 'c', '--create'], cli);
    expect(r.code, r.stderr).toBe(0);
    expect(await expectSameData(server, db, `${db}_copy`)).toBe(4);
    expect(await readModel(server, `${db}_copy`)).toEqual(await readModel(server, db));
    await cleanup();
  });
});
