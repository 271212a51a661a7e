/**
 * A selective restore into a live table that changed since the snapshot
 * (PostgreSQL 15): the rows go where the table is now, or the restore is
 * refused with nothing written. Each case was wrong data, or a failure,
 * before: duplicates in a table partitioned since, a detached partition
 * taking the rows, a column renamed and added again taking another's
 * values, a formerly generated column left NULL, duplicate rows of a
 * keyless table not put back, a key added since failing the merge.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { url as dbUrl, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 15)!;

describe('restore --table --where into a table changed since the snapshot', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  const env = { PW: server.password, OWNER_PW: 'owner-pw' };
  // A role of its own: roles are per server, shared by every test file.
  const owner = `fbowner_${Math.random().toString(16).slice(2, 8)}`;
  const cli = (args: string[]) => runCli(args, { cwd: dir, env });
  const q = (text: string) => sql(server, db, text);
  /** Restores the rows of tenant 7 of `table` from the snapshot into the live database. */
  const putBack = (table: string, ...rest: string[]) =>
    cli([
      'restore',
      'latest',
      '--to',
      'live',
      '--table',
      table,
      '--where',
      'tenant_id = 7',
      ...rest,
    ]);
  const rows = async (text: string) => (await q(text)).map((r) => Object.values(r).join('|'));

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'livechg');
    await q(`
      CREATE TABLE conv (id int PRIMARY KEY, tenant_id int NOT NULL, v text);
      INSERT INTO conv SELECT g, g % 10, 'v' || g FROM generate_series(1, 40) g;
      CREATE TABLE events (tenant_id int NOT NULL, kind text NOT NULL, n int) PARTITION BY LIST (kind);
      CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a');
      CREATE TABLE events_def PARTITION OF events DEFAULT;
      INSERT INTO events SELECT g % 10, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 40) g;
      CREATE TABLE evolve (id int PRIMARY KEY, tenant_id int NOT NULL, a text);
      INSERT INTO evolve SELECT g, g % 10, 'a' || g FROM generate_series(1, 40) g;
      CREATE TABLE genlater (id int PRIMARY KEY, tenant_id int NOT NULL, n int,
                             total int GENERATED ALWAYS AS (n * 3) STORED);
      INSERT INTO genlater (id, tenant_id, n) SELECT g, g % 10, g FROM generate_series(1, 40) g;
      CREATE TABLE logs (tenant_id int NOT NULL, line text);
      INSERT INTO logs SELECT 7, 'same line' FROM generate_series(1, 10);
      INSERT INTO logs SELECT 8, 'other' FROM generate_series(1, 3);
      CREATE TABLE nopk (id int NOT NULL, tenant_id int NOT NULL, v text);
      INSERT INTO nopk SELECT g, g % 10, 'n' || g FROM generate_series(1, 40) g;
      CREATE TABLE ident (id int PRIMARY KEY, tenant_id int NOT NULL,
                          seq int GENERATED ALWAYS AS IDENTITY, v text);
      INSERT INTO ident (id, tenant_id, v) SELECT g, g % 10, 'i' || g FROM generate_series(1, 40) g;
      CREATE TABLE a_child (id int PRIMARY KEY, tenant_id int NOT NULL, parent_id int NOT NULL);
      CREATE TABLE b_parent (id int PRIMARY KEY, tenant_id int NOT NULL);
      INSERT INTO b_parent SELECT g, g % 10 FROM generate_series(1, 40) g;
      INSERT INTO a_child SELECT g, g % 10, g FROM generate_series(1, 40) g;
      CREATE DOMAIN posint AS int CHECK (VALUE > 0);
      CREATE TABLE dom (id int PRIMARY KEY, tenant_id int NOT NULL, v posint);
      INSERT INTO dom SELECT g, g % 10, g FROM generate_series(1, 40) g;
      CREATE TABLE touched (id int PRIMARY KEY, tenant_id int NOT NULL, v text, doc json, n int NOT NULL DEFAULT 0);
      INSERT INTO touched SELECT g, g % 10, 't' || g, json_build_object('g', g) FROM generate_series(1, 40) g;
      CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS
        'BEGIN NEW.n := OLD.n + 1; RETURN NEW; END';
      CREATE TRIGGER counted BEFORE UPDATE ON touched FOR EACH ROW EXECUTE FUNCTION count_writes();
      CREATE TABLE dparent (id int PRIMARY KEY, tenant_id int NOT NULL);
      CREATE TABLE dchild (id int PRIMARY KEY, tenant_id int NOT NULL,
                           pid int REFERENCES dparent DEFERRABLE INITIALLY DEFERRED);
      INSERT INTO dparent SELECT g, g % 10 FROM generate_series(1, 40) g;
      INSERT INTO dchild SELECT g, g % 10, g FROM generate_series(1, 40) g;
      CREATE SCHEMA appx;
      CREATE TABLE appx.log (msg text);
      CREATE TABLE log (msg text);
      CREATE TABLE stamped (id int PRIMARY KEY, tenant_id int NOT NULL, at timestamptz NOT NULL);
      CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS
        'BEGIN INSERT INTO log VALUES (''stamped '' || NEW.id); RETURN NEW; END';
      CREATE TRIGGER noted AFTER INSERT ON stamped FOR EACH ROW EXECUTE FUNCTION note_insert();
      INSERT INTO stamped SELECT g, g % 10, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute' FROM generate_series(1, 40) g;
      CREATE TABLE trig (id int PRIMARY KEY, tenant_id int NOT NULL);
      INSERT INTO trig SELECT g, g % 10 FROM generate_series(1, 40) g;
      CREATE ROLE ${owner} LOGIN PASSWORD 'owner-pw';
      GRANT CREATE, TEMPORARY ON DATABASE ${db} TO ${owner};
      CREATE TABLE secure (id int PRIMARY KEY, tenant_id int NOT NULL);
      INSERT INTO secure SELECT g, g % 10 FROM generate_series(1, 40) g;
      ALTER TABLE secure OWNER TO ${owner};
      ALTER TABLE secure ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
      CREATE POLICY mine ON secure USING (tenant_id = 7);`);
    expect((await cli(['init', '--repo', 'repo'])).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n  live:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n  owner:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: ${owner}\n    password_env: OWNER_PW\n    protected: false\n`,
    );
    const backup = await cli(['backup', 'live']);
    expect(backup.code, backup.stderr).toBe(0);
  });

  afterAll(async () => {
    await q(`DROP OWNED BY ${owner}; REVOKE ALL ON DATABASE ${db} FROM ${owner}`).catch(() => {});
    await sql(server, 'postgres', `DROP ROLE IF EXISTS ${owner}`).catch(() => {});
    await cleanup();
  });

  it('puts rows back through a table partitioned since, without duplicating the rows there', async () => {
    await q(`
      ALTER TABLE conv RENAME TO conv_old;
      CREATE TABLE conv (id int NOT NULL, tenant_id int NOT NULL, v text, PRIMARY KEY (id, tenant_id))
        PARTITION BY LIST (tenant_id);
      CREATE TABLE conv_7 PARTITION OF conv FOR VALUES IN (7);
      CREATE TABLE conv_rest PARTITION OF conv DEFAULT;
      INSERT INTO conv SELECT * FROM conv_old;
      UPDATE conv SET v = 'changed' WHERE id = 7;
      DELETE FROM conv WHERE id = 17;`);
    const r = await putBack('conv', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(await rows('SELECT id, v FROM conv WHERE tenant_id = 7 ORDER BY id')).toEqual([
      '7|changed',
      '17|v17',
      '27|v27',
      '37|v37',
    ]);
    const update = await putBack('conv', '--on-conflict', 'update');
    expect(update.code, update.stderr).toBe(0);
    expect(await rows('SELECT id, v FROM conv WHERE id = 7')).toEqual(['7|v7']);
  });

  it('refuses a partition detached since: its rows would not be in the partitioned table', async () => {
    await q(`
      ALTER TABLE events DETACH PARTITION events_def;
      CREATE TABLE events_b PARTITION OF events FOR VALUES IN ('b');
      INSERT INTO events_b SELECT * FROM events_def;
      DELETE FROM events WHERE tenant_id = 7;`);
    const before = await rows('SELECT count(*) FROM events_def');
    const r = await putBack('events');
    expect(r.code).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      'public.events_def was a partition of public.events in the snapshot and is not one now (detached since)',
    );
    expect(await rows('SELECT count(*) FROM events_def')).toEqual(before);
    expect(await rows('SELECT count(*) FROM events WHERE tenant_id = 7')).toEqual(['0']);
  });

  it('refuses a column renamed and added again under its old name (the values would go to the new column)', async () => {
    await q(`
      ALTER TABLE evolve RENAME COLUMN a TO a_legacy;
      ALTER TABLE evolve ADD COLUMN a text;
      DELETE FROM evolve WHERE tenant_id = 7;`);
    const r = await putBack('evolve');
    expect(r.code).toBe(ExitCode.failed);
    expect(r.stderr).toContain('renamed since: a is now a_legacy');
    expect(r.stderr).toContain('a now names another column');
    expect(await rows('SELECT count(*) FROM evolve WHERE tenant_id = 7')).toEqual(['0']);
  });

  it('writes the values of a column that was generated in the snapshot and is plain now', async () => {
    await q(`
      ALTER TABLE genlater ALTER COLUMN total DROP EXPRESSION;
      DELETE FROM genlater WHERE tenant_id = 7;`);
    const r = await putBack('genlater');
    expect(r.code, r.stderr).toBe(0);
    expect(await rows('SELECT id, total FROM genlater WHERE tenant_id = 7 ORDER BY id')).toEqual([
      '7|21',
      '17|51',
      '27|81',
      '37|111',
    ]);
  });

  it('puts back the deleted copies of duplicate rows in a table without a key, copy for copy', async () => {
    await q(`DELETE FROM logs WHERE ctid IN (SELECT ctid FROM logs WHERE tenant_id = 7 LIMIT 4)`);
    const plan = await putBack('logs', '--dry-run', '--json');
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).plan.tables[0]).toMatchObject({ insert: 4, skip: 6 });
    const r = await putBack('logs');
    expect(r.code, r.stderr).toBe(0);
    expect(await rows('SELECT tenant_id, count(*) FROM logs GROUP BY 1 ORDER BY 1')).toEqual([
      '7|10',
      '8|3',
    ]);
    // Again: nothing more to put back.
    const again = await putBack('logs');
    expect(again.code, again.stderr).toBe(0);
    expect(await rows('SELECT count(*) FROM logs WHERE tenant_id = 7')).toEqual(['10']);
  });

  it('--on-conflict fail refuses a table without a key whose rows are already there', async () => {
    const dry = await putBack('logs', '--on-conflict', 'fail', '--dry-run');
    expect(dry.code, dry.stdout).toBe(ExitCode.failed);
    expect(dry.stdout + dry.stderr).toContain(
      'restoring public.logs: 10 of its row(s) are already there (the table has no key',
    );
    const r = await putBack('logs', '--on-conflict', 'fail');
    expect(r.code).toBe(ExitCode.failed);
    expect(await rows('SELECT count(*) FROM logs WHERE tenant_id = 7')).toEqual(['10']);
  });

  it('a dry run foresees a deferred foreign key the rows violate; the restore fails naming it (it was exit 70)', async () => {
    await q('DELETE FROM dchild WHERE tenant_id = 7; DELETE FROM dparent WHERE tenant_id = 7');
    const before = await rows('SELECT count(*) FROM dchild');
    const dry = await putBack('dchild', '--dry-run');
    expect(dry.code, dry.stdout).toBe(ExitCode.failed);
    expect(dry.stdout + dry.stderr).toContain('a deferred constraint refuses the rows');
    expect(dry.stdout + dry.stderr).toContain('dchild_pid_fkey');
    for (const extra of [[], ['--disable-triggers']]) {
      const r = await putBack('dchild', ...extra);
      expect(r.code, r.stderr).toBe(ExitCode.failed);
      expect(r.stderr).toContain('a deferred constraint refuses the rows');
      expect(r.stderr).toContain('nothing was restored');
    }
    expect(await rows('SELECT count(*) FROM dchild')).toEqual(before);
    // Parents and children together: the deferred key holds at the end.
    const both = await cli([
      'restore',
      'latest',
      '--to',
      'live',
      '--table',
      'dparent',
      '--table',
      'dchild',
      '--where',
      'tenant_id = 7',
    ]);
    expect(both.code, both.stderr).toBe(0);
    expect(await rows('SELECT count(*) FROM dchild WHERE tenant_id = 7')).toEqual(['4']);
  });

  it("writes rows as the database's applications do: its triggers in its search_path, casts in its time zone", async () => {
    await q(`ALTER DATABASE ${db} SET search_path = appx, public`);
    await q(`ALTER DATABASE ${db} SET timezone = 'America/New_York'`);
    try {
      // Retyped since the snapshot, in the database's zone.
      await q(
        "SET timezone = 'America/New_York'; ALTER TABLE stamped ALTER COLUMN at TYPE timestamp",
      );
      const want = await rows('SELECT id, at::text FROM stamped WHERE tenant_id = 7 ORDER BY id');
      expect(want[0]).toBe('7|2023-12-31 19:07:00');
      await q('DELETE FROM stamped WHERE tenant_id = 7');
      const publicLog = await rows('SELECT count(*) FROM public.log');
      const r = await putBack('stamped');
      expect(r.code, r.stderr).toBe(0);
      expect(
        await rows('SELECT id, at::text FROM stamped WHERE tenant_id = 7 ORDER BY id'),
      ).toEqual(want);
      // The trigger's unqualified table is the database's appx.log, as for the application.
      expect(await rows('SELECT msg FROM appx.log ORDER BY msg')).toEqual([
        'stamped 17',
        'stamped 27',
        'stamped 37',
        'stamped 7',
      ]);
      expect(await rows('SELECT count(*) FROM public.log')).toEqual(publicLog);
    } finally {
      await q(`ALTER DATABASE ${db} RESET search_path`);
      await q(`ALTER DATABASE ${db} RESET timezone`);
    }
  });

  it("checks --where against the snapshot's columns, takes the table's name as qualifier, and calls a bad one usage (exit 3) into an empty database too", async () => {
    await q('ALTER TABLE conv ADD COLUMN region text');
    try {
      // A column the live table has and the snapshot's rows do not: refused up front.
      const since = await putBack('conv', '--where', "region = 'eu'", '--dry-run');
      expect(since.code, since.stderr).toBe(ExitCode.usage);
      expect(since.stderr).toContain(
        'invalid --where for table public.conv: column "region" does not exist',
      );
    } finally {
      await q('ALTER TABLE conv DROP COLUMN region');
    }
    const qualified = await cli([
      'restore',
      'latest',
      '--to',
      'live',
      '--table',
      'conv',
      '--where',
      'conv.tenant_id = 7',
      '--dry-run',
      '--json',
    ]);
    expect(qualified.code, qualified.stderr).toBe(0);
    expect(JSON.parse(qualified.stdout).plan.tables[0]).toMatchObject({ skip: 4 });
    const into = `where_${Date.now() % 100000}`;
    const url = dbUrl(server, into);
    const empty = await cli([
      'restore',
      'latest',
      '--to',
      url,
      '--create',
      '--confirm',
      into,
      '--table',
      'conv',
      '--where',
      'no_such = 1',
    ]);
    expect(empty.code, empty.stderr).toBe(ExitCode.usage);
    expect(empty.stderr).toContain(
      'invalid --where for table public.conv: column "no_such" does not exist',
    );
    expect(
      await sql(
        server,
        'postgres',
        `SELECT count(*) AS n FROM pg_database WHERE datname = '${into}'`,
      ),
    ).toEqual([{ n: '0' }]);
  });

  it('matches rows by a primary key the table was given since the snapshot', async () => {
    await q(`
      ALTER TABLE nopk ADD PRIMARY KEY (id);
      UPDATE nopk SET v = 'changed' WHERE id = 7;
      DELETE FROM nopk WHERE id = 17;`);
    const skip = await putBack('nopk');
    expect(skip.code, skip.stderr).toBe(0);
    expect(await rows('SELECT id, v FROM nopk WHERE tenant_id = 7 ORDER BY id')).toEqual([
      '7|changed',
      '17|n17',
      '27|n27',
      '37|n37',
    ]);
    const update = await putBack('nopk', '--on-conflict', 'update');
    expect(update.code, update.stderr).toBe(0);
    expect(await rows('SELECT v FROM nopk WHERE id = 7')).toEqual(['n7']);
  });

  it('--on-conflict update writes only the rows that differ: identical ones are skipped, and their triggers do not fire', async () => {
    await q(`UPDATE touched SET v = 'changed' WHERE id = 7`);
    const r = await putBack('touched', '--on-conflict', 'update', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('insert 0 rows, update 1, skip 3');
    expect(JSON.parse(r.stdout).plan.tables[0]).toMatchObject({ insert: 0, update: 1, skip: 3 });
    // Row 7 has the snapshot's values (its trigger counted both writes);
    // the others were not written (json compared as text: no = operator).
    expect(await rows('SELECT id, v, n FROM touched WHERE tenant_id = 7 ORDER BY id')).toEqual([
      '7|t7|2',
      '17|t17|0',
      '27|t27|0',
      '37|t37|0',
    ]);
  });

  it('writes GENERATED ALWAYS identity columns as the table has them now, and leaves them out of updates', async () => {
    await q(`
      ALTER TABLE ident ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
      UPDATE ident SET v = 'changed' WHERE id = 7;
      DELETE FROM ident WHERE id = 17;`);
    const r = await putBack('ident', '--on-conflict', 'update');
    expect(r.code, r.stderr).toBe(0);
    expect(await rows('SELECT id, seq, v FROM ident WHERE tenant_id = 7 ORDER BY id')).toEqual([
      '7|7|i7',
      '17|17|i17',
      '27|27|i27',
      '37|37|i37',
    ]);
  });

  it('refuses, up front, a table whose row-level security applies to the role (it was an internal error)', async () => {
    const r = await cli([
      'restore',
      'latest',
      '--to',
      'owner',
      '--table',
      'secure',
      '--where',
      'tenant_id = 8',
    ]);
    expect(r.code).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      'row-level security applies to this role on public.secure (FORCE ROW LEVEL SECURITY)',
    );
    expect(r.stderr).toContain('BYPASSRLS');
  });

  it('puts parents before children by the foreign keys the tables have now (one added since the snapshot)', async () => {
    await q(`
      ALTER TABLE a_child ADD FOREIGN KEY (parent_id) REFERENCES b_parent ON DELETE CASCADE;
      DELETE FROM b_parent WHERE tenant_id = 7;`);
    expect(await rows('SELECT count(*) FROM a_child WHERE tenant_id = 7')).toEqual(['0']);
    // (The snapshot knows no key between them: by name, the child came first and failed.)
    const r = await putBack('a_child', '--table', 'b_parent');
    expect(r.code, r.stderr).toBe(0);
    expect(await rows('SELECT count(*) FROM a_child WHERE tenant_id = 7')).toEqual(['4']);
    expect(await rows('SELECT count(*) FROM b_parent WHERE tenant_id = 7')).toEqual(['4']);
  });

  it('says which absent rows a trigger kept out, instead of counting them as skipped', async () => {
    await q(`
      CREATE FUNCTION no_tenant_8() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN IF NEW.tenant_id = 8 THEN RETURN NULL; END IF; RETURN NEW; END$$;
      CREATE TRIGGER no_tenant_8 BEFORE INSERT ON trig FOR EACH ROW EXECUTE FUNCTION no_tenant_8();
      DELETE FROM trig WHERE tenant_id IN (7, 8);`);
    const r = await cli([
      'restore',
      'latest',
      '--to',
      'live',
      '--table',
      'trig',
      '--where',
      'tenant_id IN (7, 8)',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/public\.trig +merge +40 +4 +0 +0\n/);
    expect(r.stdout).toContain(
      'warning: public.trig: 4 row(s) whose key was absent were not written: a BEFORE INSERT trigger returned NULL for them',
    );
  });

  it('says why staging fails on a value the type no longer takes (a domain tightened since), and what to do', async () => {
    await q(`
      ALTER DOMAIN posint ADD CONSTRAINT five CHECK (VALUE >= 5) NOT VALID;
      DELETE FROM dom WHERE tenant_id = 7;`);
    const r = await putBack('dom');
    expect(r.code).toBe(ExitCode.failed);
    expect(r.stderr).toContain('violates check constraint "five"');
    expect(r.stderr).toContain(
      "a value in the snapshot does not fit public.dom's types as they are now",
    );
  });
});
