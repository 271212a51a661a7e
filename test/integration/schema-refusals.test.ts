/**
 * The schema changes a restore to a moment refuses rather than guesses, and
 * capture without a superuser, on PostgreSQL 17:
 * - a key column's collation changed (no rewrite, but the snapshot's rows are
 *   in the old key order): refused by name, nothing created;
 * - a column retyped without a rewrite other than between varchar and text
 *   (numeric(10,2) to numeric(12,2)): refused by name; the moment before it
 *   still rebuilds exactly;
 * - a role with REPLICATION but not superuser: capture warns that schema
 *   changes are not recorded and captures rows; a moment without schema
 *   changes rebuilds exactly; a table created without a key is named as one
 *   the server refuses UPDATE and DELETE on. Once a superuser installed the
 *   event triggers, the same role captures without the warning, and tables
 *   created or altered to have no key get REPLICA IDENTITY FULL.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import type { PgClient } from '../../src/pg/connect.js';
import { CaptureProcess } from '../harness/capture.js';
import {
  connectTo,
  freshDatabase,
  runCli,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

/** A table's rows as sorted COPY lines. */
async function rows(s: TestServer, db: string, table: string): Promise<string[]> {
  const c = await connectTo(s, db);
  try {
    const parts: Buffer[] = [];
    for await (const b of c.query(copyTo(`COPY ${table} TO STDOUT`)) as AsyncIterable<Buffer>)
      parts.push(b);
    return Buffer.concat(parts).toString('utf8').split('\n').filter(Boolean).sort();
  } finally {
    await c.end();
  }
}

async function position(c: PgClient): Promise<string> {
  return (await c.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l;
}

const url = (db: string, user = 'postgres', password = server.password): string =>
  `postgres://${user}:${encodeURIComponent(password)}@${server.host}:${server.port}/${db}`;

/** `flashback capture NAME` in `dir`, flushing and beating often. */
function captureOf(dir: string, name: string, env: Record<string, string>): CaptureProcess {
  return new CaptureProcess(dir, env, [
    'capture',
    name,
    '--flush-interval',
    '100ms',
    '--heartbeat',
    '300ms',
  ]);
}

describe('schema changes refused by name (PostgreSQL 17)', () => {
  const name = `refuse${Math.random().toString(16).slice(2, 8)}`;
  const env = { PW: server.password };
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let live: PgClient;
  let capture: CaptureProcess | undefined;
  let beforeRetype = '';
  let beforeRetypeRows: string[] = [];
  let afterRetype = '';
  let afterCollation = '';
  let afterTypes = '';

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'refuse');
    live = await connectTo(server, db);
    await live.query(`
      CREATE TABLE coded (code text COLLATE "C" PRIMARY KEY, v int);
      INSERT INTO coded SELECT 'code-' || g, g FROM generate_series(1, 40) g;
      CREATE TABLE priced (id int PRIMARY KEY, amount numeric(10,2));
      INSERT INTO priced SELECT g, g * 1.25 FROM generate_series(1, 40) g;
      CREATE TYPE mood AS ENUM ('sad', 'ok');
      CREATE TABLE felt (id int PRIMARY KEY, m mood, ms mood[]);
      INSERT INTO felt SELECT g, 'sad', ARRAY['ok', 'sad']::mood[] FROM generate_series(1, 10) g;
      CREATE TYPE pair AS (a int, b text);
      CREATE TABLE boxed (id int PRIMARY KEY, p pair);
      INSERT INTO boxed SELECT g, ROW(g, 'x')::pair FROM generate_series(1, 10) g;
      CREATE TYPE tagged AS (a int, b text);
      CREATE TABLE labelled (id int PRIMARY KEY, t tagged);
      INSERT INTO labelled SELECT g, ROW(g, 'y')::tagged FROM generate_series(1, 10) g;`);
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(path.join(dir, 'flashback.yaml'), config(name, db, 'postgres'));
    capture = captureOf(dir, name, env).start();
    await capture.streaming();
    expect(capture.output).not.toContain('not recorded');
    const b = await runCli(['backup', name], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);

    await live.query('UPDATE priced SET amount = amount + 1 WHERE id % 3 = 0');
    beforeRetype = await position(live);
    beforeRetypeRows = await rows(server, db, 'priced');
    // Wider precision: PostgreSQL keeps the stored values (no rewrite).
    await live.query('ALTER TABLE priced ALTER COLUMN amount TYPE numeric(12,2)');
    await live.query('UPDATE priced SET amount = 12345.67 WHERE id = 1');
    afterRetype = await position(live);
    await new Promise((r) => setTimeout(r, 500));
    // A snapshot between the two changes: from it, only the collation change is in the window.
    const b2 = await runCli(['backup', name], { cwd: dir, env });
    expect(b2.code, b2.stderr).toBe(0);
    // Same type, another collation: no rewrite, but the key order may differ.
    await live.query('ALTER TABLE coded ALTER COLUMN code TYPE text COLLATE "POSIX"');
    await live.query("UPDATE coded SET v = -v WHERE code = 'code-7'");
    afterCollation = await position(live);
    // Types redefined: the snapshot's rows hold the old label, the old fields.
    // (After capture has read the schema above: a change committed before it
    // reads one leaves the moment between them unrecorded.)
    await new Promise((r) => setTimeout(r, 1500));
    await live.query("ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy'");
    await live.query('ALTER TYPE pair ADD ATTRIBUTE c int CASCADE');
    // A comment changes no value's text: not a redefinition.
    await live.query("COMMENT ON COLUMN tagged.a IS 'the count'");
    afterTypes = await position(live);
    await new Promise((r) => setTimeout(r, 1500));
  });

  afterAll(async () => {
    await capture?.stop();
    await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
    await live?.end();
    await cleanup();
  });

  const restoreAt = (lsn: string, into: string, ...only: string[]) =>
    runCli(
      [
        'restore',
        name,
        '--lsn',
        lsn,
        ...only.flatMap((t) => ['--table', t]),
        '--to',
        url(into),
        '--create',
        '--confirm',
        into,
      ],
      { cwd: dir, env },
    );
  const created = async (into: string) =>
    (await live.query('SELECT 1 FROM pg_database WHERE datname = $1', [into])).rowCount;

  it('refuses a retype without a rewrite other than varchar/text, and rebuilds the moment before it', async () => {
    const into = `refuse_rt_${Date.now() % 100000}`;
    const r = await restoreAt(afterRetype, into);
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toContain('column amount of public.priced was retyped after snapshot');
    expect(r.stderr).toContain('numeric(10,2) to numeric(12,2)');
    expect(await created(into)).toBe(0);
    const ok = `refuse_ok_${Date.now() % 100000}`;
    const before = await restoreAt(beforeRetype, ok);
    expect(before.code, before.stderr).toBe(0);
    expect(await rows(server, ok, 'priced')).toEqual(beforeRetypeRows);
  });

  it('refuses an enum value renamed or a composite type changed since the snapshot (the old values no longer read), before creating anything', async () => {
    const cases = [
      [
        'felt',
        "column m of public.felt is of type public.mood, an enum whose value(s) 'sad' were renamed after snapshot",
      ],
      [
        'boxed',
        'column p of public.boxed is of type public.pair, a composite type whose attributes changed after snapshot',
      ],
    ] as const;
    for (const [table, text] of cases) {
      const into = `refuse_ty_${table}_${Date.now() % 100000}`;
      const r = await restoreAt(afterTypes, into, table);
      expect(r.code, r.stderr).toBe(ExitCode.failed);
      expect(r.stderr).toContain(text);
      expect(await created(into)).toBe(0);
    }
    const into = `refuse_tyok_${Date.now() % 100000}`;
    const ok = await restoreAt(afterTypes, into, 'labelled');
    expect(ok.code, ok.stderr).toBe(0);
    expect((await rows(server, into, 'labelled')).length).toBe(10);
  });

  it("refuses a key column's collation change, naming it", async () => {
    const into = `refuse_co_${Date.now() % 100000}`;
    const r = await restoreAt(afterCollation, into);
    expect(r.code, r.stderr).toBe(ExitCode.failed);
    expect(r.stderr).toContain(
      'key column code of public.coded changed type or collation after snapshot',
    );
    expect(r.stderr).toContain('(text pg_catalog."C" to text pg_catalog."POSIX")');
    expect(await created(into)).toBe(0);
  });
});

describe('capture without a superuser (PostgreSQL 17)', () => {
  const name = `plain${Math.random().toString(16).slice(2, 8)}`;
  const role = `fb_${Math.random().toString(16).slice(2, 8)}`;
  const password = 'capture-role-pw';
  const env = { PW: password };
  let dir: string;
  let cleanup: () => Promise<void>;
  let db: string;
  let live: PgClient;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    db = await freshDatabase(server, 'plain');
    live = await connectTo(server, db);
    await live.query(`
      CREATE TABLE item (id int PRIMARY KEY, label text);
      INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 30) g;
      CREATE ROLE ${role} LOGIN REPLICATION PASSWORD '${password}';
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role};
      -- FOR ALL TABLES needs a superuser: created once by one (docs/CAPTURE.md, "Privileges").
      CREATE PUBLICATION flashback FOR ALL TABLES;`);
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(path.join(dir, 'flashback.yaml'), config(name, db, role));
  });

  afterAll(async () => {
    await runCli(['capture', name, '--drop-slot', '--confirm', name], { cwd: dir, env });
    await live?.end();
    const c = await connectTo(server);
    await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await c.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
    await c.end();
    await cleanup();
  });

  it('warns that schema changes are not recorded, and captures rows that rebuild exactly', async () => {
    const capture = captureOf(dir, name, env).start();
    try {
      await capture.streaming();
      expect(capture.output).toContain('schema changes on');
      expect(capture.output).toContain('are not recorded in the change log');
      expect(capture.output).toContain('needs a superuser');
      const installed = await live.query(
        "SELECT 1 FROM pg_event_trigger WHERE evtname LIKE 'flashback%'",
      );
      expect(installed.rowCount).toBe(0);
      const b = await runCli(['backup', name], { cwd: dir, env });
      expect(b.code, b.stderr).toBe(0);
      await live.query("UPDATE item SET label = 'changed' WHERE id % 4 = 0");
      await live.query('DELETE FROM item WHERE id > 25');
      const at = await position(live);
      const want = await rows(server, db, 'item');
      await new Promise((r) => setTimeout(r, 1500));
      const into = `plain_${Date.now() % 100000}`;
      const r = await runCli(
        ['restore', name, '--lsn', at, '--to', url(into), '--create', '--confirm', into],
        { cwd: dir, env: { PW: password } },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(await rows(server, into, 'item')).toEqual(want);

      // A migration creates a table without a key: no event trigger gives it
      // an identity, so the server now refuses UPDATE on it. Capture says so
      // when its first row arrives.
      await live.query(`CREATE TABLE loose (a int, b text); GRANT SELECT ON loose TO ${role};
        INSERT INTO loose VALUES (1, 'x')`);
      await expect(live.query("UPDATE loose SET b = 'y'")).rejects.toThrow(
        /does not have a replica identity and publishes updates/,
      );
      const end = Date.now() + 10_000;
      while (!capture.output.includes('public.loose has no') && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(capture.output).toContain(
        'flashback: warning: public.loose has no primary key and no replica identity: UPDATE and DELETE on it fail on the source while the publication exists; set REPLICA IDENTITY FULL',
      );
      await live.query('DROP TABLE loose');
    } finally {
      await capture.stop();
    }
  });

  it('once a superuser installed the event triggers, the same role captures without the warning', async () => {
    // A superuser's capture installs them (a repository of its own, then its slot dropped).
    const su = await tempDir();
    try {
      expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: su.dir })).code).toBe(0);
      await writeFile(path.join(su.dir, 'flashback.yaml'), config(`${name}su`, db, 'postgres'));
      const suCapture = captureOf(su.dir, `${name}su`, { PW: server.password }).start();
      await suCapture.streaming();
      await suCapture.stop();
      await runCli(['capture', `${name}su`, '--drop-slot', '--confirm', `${name}su`], {
        cwd: su.dir,
        env: { PW: server.password },
      });
    } finally {
      await su.cleanup();
    }
    const installed = await live.query(
      "SELECT 1 FROM pg_event_trigger WHERE evtname LIKE 'flashback%'",
    );
    expect(installed.rowCount).toBe(3);
    const capture = captureOf(dir, name, env).start();
    try {
      await capture.streaming();
      expect(capture.output).not.toContain('not recorded');

      // Tables a command leaves without a key get REPLICA IDENTITY FULL, with
      // a warning to whoever ran it; their UPDATE and DELETE keep working.
      const warnings: string[] = [];
      const onNotice = (n: { message?: string | undefined }): void => {
        warnings.push(n.message ?? '');
      };
      live.on('notice', onNotice);
      try {
        await live.query(`
          CREATE TABLE journal (at int, note text);
          CREATE TABLE journal_copy AS SELECT g AS at FROM generate_series(1, 3) g;
          CREATE TABLE keyed (id int CONSTRAINT keyed_pk PRIMARY KEY, v text);
          CREATE TABLE deferred (id int PRIMARY KEY DEFERRABLE, v text);
          CREATE UNLOGGED TABLE scratchpad (v text);
          CREATE TEMPORARY TABLE tmp (v text);`);
        await live.query('ALTER TABLE keyed DROP CONSTRAINT keyed_pk');
        await live.query(`INSERT INTO journal VALUES (1, 'a'), (2, 'b');
          UPDATE journal SET note = 'c' WHERE at = 2; DELETE FROM journal WHERE at = 1;
          DELETE FROM journal_copy WHERE at = 3; INSERT INTO keyed VALUES (1, 'k');
          UPDATE keyed SET v = 'l'; INSERT INTO deferred VALUES (1, 'd');
          UPDATE deferred SET v = 'e'`);
      } finally {
        live.removeListener('notice', onNotice);
      }
      const identity = await live.query<{ relname: string; relreplident: string }>(
        `SELECT relname, relreplident FROM pg_class
          WHERE relname IN ('journal', 'journal_copy', 'keyed', 'scratchpad', 'item', 'deferred') ORDER BY relname`,
      );
      expect(identity.rows.map((x) => [x.relname, x.relreplident])).toEqual([
        ['deferred', 'f'], // a DEFERRABLE primary key is no replica identity
        ['item', 'd'], // has a primary key: untouched
        ['journal', 'f'],
        ['journal_copy', 'f'],
        ['keyed', 'f'],
        ['scratchpad', 'd'], // unlogged: not published
      ]);
      expect(warnings.filter((w) => w.startsWith('flashback: '))).toEqual(
        ['journal', 'journal_copy', 'deferred', 'keyed'].map(
          (t) =>
            `flashback: public.${t} has no primary key the server can use as its replica identity (none, or a DEFERRABLE one): set to REPLICA IDENTITY FULL, since UPDATE and DELETE on it would otherwise fail while capture publishes every table (give it a primary key that is not deferrable to use that instead)`,
        ),
      );
      // A key added back (a migration replacing a key drops the old one
      // first): the default identity again, which needs no whole old rows.
      live.on('notice', onNotice);
      try {
        await live.query('ALTER TABLE keyed ADD PRIMARY KEY (id)');
      } finally {
        live.removeListener('notice', onNotice);
      }
      const after = await live.query<{ relname: string; relreplident: string }>(
        "SELECT relname, relreplident FROM pg_class WHERE relname IN ('journal', 'keyed') ORDER BY relname",
      );
      expect(after.rows.map((x) => [x.relname, x.relreplident])).toEqual([
        ['journal', 'f'],
        ['keyed', 'd'],
      ]);
      expect(warnings.at(-1)).toBe(
        'flashback: public.keyed has a primary key again: its replica identity, set to FULL by Flashback while it had none, is back to the default',
      );
      await live.query('UPDATE keyed SET v = $1', ['m']);
      await new Promise((r) => setTimeout(r, 1500));
      // Their rows arrive with an identity: nothing to warn about.
      expect(capture.output).not.toContain('has no primary key and no replica identity');
    } finally {
      await capture.stop();
    }
  });
});

function config(name: string, db: string, user: string): string {
  return `repository: repo\ntargets:\n  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: ${user}\n    password_env: PW\n    protected: false\n`;
}
