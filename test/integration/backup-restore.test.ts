/** backup, list, show and restore against real servers, through the CLI as users run them. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResolvedTarget } from '../../src/config/targets.js';
import { ExitCode } from '../../src/errors.js';
import type { SchemaModel } from '../../src/pg/schema/model.js';
import { ChunkStore } from '../../src/repo/chunks.js';
import { Repository } from '../../src/repo/repository.js';
import { type SnapshotManifest, SnapshotStore } from '../../src/repo/snapshots.js';
import { type RestoreProgress, restore } from '../../src/restore/restore.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { LocalStorage } from '../../src/storage/local.js';
import {
  CLI,
  connectTo,
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';

/** sha256 of a table's COPY text in key order: equal hashes mean byte-identical contents. */
async function tableHash(
  server: TestServer,
  db: string,
  table: string,
  orderBy: string,
): Promise<string> {
  const rows = await sql(
    server,
    db,
    `SELECT string_agg(t::text, E'\\n' ORDER BY ${orderBy}) AS all FROM ${table} t`,
  );
  return createHash('sha256')
    .update(rows[0]?.all ?? '')
    .digest('hex');
}

const TABLES: Record<string, string> = {
  tenants: 'id',
  subscribers: 'id',
  workflows: 'id',
  workflow_steps: 'id',
  files: 'id',
  events: 't::text',
};

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

describe.each(
  testServers()
    .filter((s) => s.major === 15 || s.major === 17)
    .map((s) => [s.major, s] as const),
)('backup and restore on PostgreSQL %i', (_major, server: TestServer) => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let source: string;
  let firstId: string;
  const env = { PW: server.password };

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    source = await freshDatabase(server, 'src');
    const c = await connectTo(server, source);
    // files: 12 × 2000 rows, about 2.5 MB of COPY text: a few chunks, so a change can hit only some.
    await createSampleDatabase(c, { tenants: 12, subscribersPerTenant: 200, filesPerTenant: 2000 });
    await c.end();
    const t = (name: string, db: string, extra = '') =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n${extra}`;
    expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
    // Replace init's starter file with the targets under test.
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n${t('prod', source)}${t('copy', `restored_${source}`, '    protected: false\n')}`,
    );
  });
  afterAll(async () => cleanup());

  it('backs up a database and lists the snapshot', async () => {
    const r = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(ExitCode.ok);
    const out = JSON.parse(r.stdout);
    firstId = out.snapshot;
    expect(firstId).toMatch(/^\d{8}-\d{6}-[0-9a-f]{4}$/);
    expect(out.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(out.totals).toMatchObject({ tables: 6 });
    const counts = await sql(
      server,
      source,
      'SELECT (SELECT count(*) FROM subscribers) + (SELECT count(*) FROM workflow_steps) + (SELECT count(*) FROM files) + (SELECT count(*) FROM events) + (SELECT count(*) FROM tenants) + (SELECT count(*) FROM workflows) AS n',
    );
    expect(out.totals.rows).toBe(Number(counts[0]?.n));
    // Everything written is new; what is stored is what the repository grew by.
    expect(out.totals.newBytes).toBe(out.totals.storedBytes);

    // The manifest's sizes are the chunks' real sizes.
    const repoStorage = new LocalStorage(path.join(dir, 'repo'));
    const manifest = await new SnapshotStore(repoStorage).read(firstId);
    const chunkStore = new ChunkStore(repoStorage);
    for (const t of manifest.tables) {
      expect(t.bytes).toBe(t.chunks.reduce((n, c) => n + c.size, 0));
      for (const c of t.chunks.slice(0, 3))
        expect((await chunkStore.get(c.id)).length).toBe(c.size);
    }
    expect(out.totals.bytes).toBeGreaterThan(1_000_000);
    const list = await runCli(['list'], { cwd: dir, env });
    expect(list.stdout).toMatch(
      new RegExp(
        `${firstId}\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+prod\\s+[0-9A-F/]+\\s+6\\s+`,
      ),
    );
    const show = await runCli(['show', firstId.slice(0, 12)], { cwd: dir, env });
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/public\.workflow_steps\s+[\d,]+\s+\d+/);
    expect(show.stdout).toContain('(none: whole-row chunking)'); // events has no key
  });

  it('restores the whole snapshot into a new database, byte for byte', async () => {
    const r = await runCli(['restore', firstId, '--to', 'copy', '--create'], { cwd: dir, env });
    expect(r.stderr).toContain('target    copy  (unprotected)');
    expect(r.code).toBe(ExitCode.ok);
    expect(r.stdout).toMatch(/restored: full restore of snapshot/);
    for (const [t, order] of Object.entries(TABLES)) {
      expect(await tableHash(server, `restored_${source}`, t, order), t).toBe(
        await tableHash(server, source, t, order),
      );
    }
    // Sequences keep their values: the next identity value continues where the source is.
    const next = async (db: string) =>
      (await sql(server, db, 'SELECT last_value FROM tenants_id_seq'))[0]?.last_value;
    expect(await next(`restored_${source}`)).toBe(await next(source));
  });

  it('reports progress: every row, byte, table and post-data statement, in parallel and in one transaction', async () => {
    const repo = await Repository.open(new LocalStorage(path.join(dir, 'repo')));
    const manifest = (await new SnapshotStore(repo.storage).read(
      firstId,
    )) as SnapshotManifest<SchemaModel>;
    const io = { input: Readable.from([]), output: { write: () => true } };
    for (const workers of [2, 1]) {
      const db = `progress${workers}_${source}`;
      const seen: RestoreProgress[] = [];
      try {
        await restore({
          manifest,
          repo,
          target: {
            name: db,
            kind: 'url',
            connection: {
              host: server.host,
              port: server.port,
              database: db,
              user: server.user,
              password: server.password,
            },
            protected: false,
            confirmName: db,
          } as ResolvedTarget,
          create: true,
          workers,
          io,
          onProgress: (p) => seen.push(p),
        });
        const last = seen.at(-1)!;
        expect(last, `workers ${workers}`).toEqual({
          tablesDone: manifest.tables.length,
          tablesTotal: manifest.tables.length,
          rows: manifest.totals.rows,
          bytes: manifest.totals.bytes,
          bytesTotal: manifest.totals.bytes,
          statementsDone: last.statementsTotal,
          statementsTotal: last.statementsTotal,
        });
        expect(last.statementsTotal).toBeGreaterThan(10); // keys, indexes, foreign keys, grants…
        // Never backwards.
        for (const [i, p] of seen.entries()) {
          if (i === 0) continue;
          const q = seen[i - 1]!;
          expect(
            p.bytes >= q.bytes &&
              p.tablesDone >= q.tablesDone &&
              p.statementsDone >= q.statementsDone,
          ).toBe(true);
        }
      } finally {
        await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      }
    }
  });

  it('stores only the changed chunks when 1% of rows change', async () => {
    const before = await dirBytes(path.join(dir, 'repo', 'chunks'));
    // 1% of files rows, in one tenant's key range, plus a few new rows.
    await sql(
      server,
      source,
      `UPDATE files SET name = name || '.v2' WHERE id IN (SELECT id FROM files ORDER BY id LIMIT (SELECT count(*) / 100 FROM files) OFFSET 500)`,
    );
    await sql(
      server,
      source,
      `INSERT INTO events (tenant_id, kind, at) VALUES (1, 'login', now())`,
    );
    const r = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    const after = await dirBytes(path.join(dir, 'repo', 'chunks'));
    const store = new SnapshotStore(new LocalStorage(path.join(dir, 'repo')));
    const [a, b] = [await store.read(firstId), await store.read(out.snapshot)];
    const old = new Set(a.tables.flatMap((t) => t.chunks.map((c) => c.id)));
    const fresh = new Map(
      b.tables.flatMap((t) =>
        t.chunks.filter((c) => !old.has(c.id)).map((c) => [c.id, c.stored] as const),
      ),
    );
    // What the repository grew by is exactly the chunks that are new, counted once.
    expect(after - before).toBe(out.totals.newBytes);
    expect(out.totals.newBytes).toBe([...fresh.values()].reduce((x, y) => x + y, 0));
    expect(out.totals.newChunks).toBe(fresh.size);
    // Unchanged tables reuse every chunk; the changed ones rewrote only a few.
    const ids = (m: typeof a, name: string) =>
      m.tables.find((t) => t.name === name)!.chunks.map((c) => c.id);
    for (const name of ['tenants', 'subscribers', 'workflows', 'workflow_steps'])
      expect(ids(b, name)).toEqual(ids(a, name));
    const changed = (name: string) => ids(b, name).filter((id) => !old.has(id)).length;
    expect(changed('files')).toBeGreaterThan(0);
    expect(changed('files')).toBeLessThanOrEqual(2);
    expect(changed('events')).toBe(1);
  });

  it('puts back deleted rows of one tenant into the live database, keeping the rest', async () => {
    const hashBefore = await tableHash(server, source, 'workflow_steps', 'id');
    const count = async (where: string) =>
      Number(
        (await sql(server, source, `SELECT count(*) AS n FROM workflow_steps WHERE ${where}`))[0]
          ?.n,
      );
    // A bad query deletes most of tenant 3's rows; some remain.
    const deleted = await count('tenant_id = 3 AND step > 1');
    const kept = await count('tenant_id = 3 AND step = 1');
    expect(deleted).toBeGreaterThan(0);
    expect(kept).toBeGreaterThan(0);
    await sql(server, source, 'DELETE FROM workflow_steps WHERE tenant_id = 3 AND step > 1');
    const dry = await runCli(
      [
        'restore',
        'latest',
        '--to',
        'prod',
        '--table',
        'workflow_steps',
        '--where',
        'tenant_id = 3',
        '--dry-run',
        '--json',
      ],
      { cwd: dir, env },
    );
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout).plan;
    expect(plan.tables).toHaveLength(1);
    expect(plan.tables[0]).toMatchObject({
      name: 'workflow_steps',
      action: 'merge',
      insert: deleted,
      update: 0,
      skip: kept,
    });
    // The dry run wrote nothing.
    expect(await count('tenant_id = 3')).toBe(kept);

    const refused = await runCli(
      [
        'restore',
        'latest',
        '--to',
        'prod',
        '--table',
        'workflow_steps',
        '--where',
        'tenant_id = 3',
      ],
      { cwd: dir, env },
    );
    expect(refused.code).toBe(ExitCode.refused);
    expect(await count('tenant_id = 3')).toBe(kept);

    const r = await runCli(
      [
        'restore',
        'latest',
        '--to',
        'prod',
        '--table',
        'workflow_steps',
        '--where',
        'tenant_id = 3',
        '--confirm',
        'prod',
        '--json',
      ],
      { cwd: dir, env },
    );
    expect(r.stderr).toContain(
      'action    restore 1 table(s) (public.workflow_steps) from snapshot',
    );
    // The banner states the exact effect before anything is written.
    expect(r.stderr).toContain(
      `where tenant_id = 3: insert ${deleted.toLocaleString('en-US')} rows, update 0, skip ${kept.toLocaleString('en-US')} (existing keys: skip)`,
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).plan.tables[0]).toMatchObject({ insert: deleted, skip: kept });
    expect(await tableHash(server, source, 'workflow_steps', 'id')).toBe(hashBefore);
  });

  it('skips, updates or fails on existing keys as asked', async () => {
    await sql(server, source, "UPDATE tenants SET plan = 'free' WHERE id = 2");
    const base = [
      'restore',
      'latest',
      '--to',
      'prod',
      '--table',
      'tenants',
      '--where',
      'id <= 2',
      '--confirm',
      'prod',
      '--json',
    ];
    const skip = JSON.parse((await runCli(base, { cwd: dir, env })).stdout).plan.tables[0];
    expect(skip).toMatchObject({ insert: 0, update: 0, skip: 2 });
    expect((await sql(server, source, 'SELECT plan FROM tenants WHERE id = 2'))[0]?.plan).toBe(
      'free',
    );
    const upd = JSON.parse(
      (await runCli([...base, '--on-conflict', 'update'], { cwd: dir, env })).stdout,
    ).plan.tables[0];
    // Only the changed tenant is written; the identical one is skipped.
    expect(upd).toMatchObject({ insert: 0, update: 1, skip: 1 });
    expect((await sql(server, source, 'SELECT plan FROM tenants WHERE id = 2'))[0]?.plan).toBe(
      'enterprise',
    );
    const fail = await runCli([...base, '--on-conflict', 'fail'], { cwd: dir, env });
    expect(fail.code).toBe(ExitCode.failed);
    expect(fail.stderr).toContain('a row with the same key already exists');
    // A dry run tries the merge: it foresees the failure (not "skip 2").
    const dry = ['restore', 'latest', '--to', 'prod', '--dry-run'];
    const dryFail = await runCli(
      [...dry, '--table', 'tenants', '--where', 'id <= 2', '--on-conflict', 'fail'],
      { cwd: dir, env },
    );
    expect(dryFail.code, dryFail.stderr).toBe(ExitCode.failed);
    expect(dryFail.stdout).toContain(
      'dry run: this restore would fail: restoring public.tenants: a row with the same key already exists',
    );
    expect(dryFail.stdout).toContain('nothing was written');
  });

  it('a dry run foresees a foreign key the merge would violate, and writes nothing', async () => {
    const [w] = await sql(
      server,
      source,
      'SELECT workflow_id AS id, tenant_id AS tenant, count(*)::int AS n FROM workflow_steps GROUP BY 1, 2 ORDER BY 1 DESC LIMIT 1',
    );
    const stepsOf = async () =>
      Number(
        (
          await sql(
            server,
            source,
            `SELECT count(*) AS n FROM workflow_steps WHERE workflow_id = ${w!.id}`,
          )
        )[0]?.n,
      );
    await sql(
      server,
      source,
      `DELETE FROM workflow_steps WHERE workflow_id = ${w!.id}; DELETE FROM workflows WHERE id = ${w!.id}`,
    );
    const restoreTenant = (tables: string[], extra: string[]) =>
      runCli(
        [
          'restore',
          'latest',
          '--to',
          'prod',
          ...tables.flatMap((t) => ['--table', t]),
          '--where',
          `tenant_id = ${w!.tenant}`,
          '--json',
          ...extra,
        ],
        { cwd: dir, env },
      );
    // The steps alone: their workflow is gone.
    const alone = await restoreTenant(['workflow_steps'], ['--dry-run']);
    expect(alone.code, alone.stderr).toBe(ExitCode.failed);
    expect(JSON.parse(alone.stdout).failure).toMatch(
      /^restoring public\.workflow_steps failed: insert or update on table "workflow_steps" violates foreign key constraint/,
    );
    expect(await stepsOf()).toBe(0);
    // With the workflow (parents first): it applies, with exact counts.
    const both = await restoreTenant(['workflows', 'workflow_steps'], ['--dry-run']);
    expect(both.code, both.stderr).toBe(0);
    const plan = JSON.parse(both.stdout) as {
      plan: { tables: Array<{ name: string; insert: number }> };
    };
    expect(plan.plan.tables.map((t) => [t.name, t.insert])).toEqual([
      ['workflows', 1],
      ['workflow_steps', Number(w!.n)],
    ]);
    expect(await stepsOf()).toBe(0);
    const done = await restoreTenant(['workflows', 'workflow_steps'], ['--confirm', 'prod']);
    expect(done.code, done.stderr).toBe(0);
    expect(await stepsOf()).toBe(Number(w!.n));
  });

  it('selects tables by pattern', async () => {
    const r = await runCli(
      [
        'restore',
        'latest',
        '--to',
        'prod',
        '--table',
        'work*',
        '--table',
        'public.tenant?',
        '--dry-run',
        '--json',
      ],
      { cwd: dir, env },
    );
    expect(r.code, r.stderr).toBe(0);
    const names = JSON.parse(r.stdout).plan.tables.map((t: { name: string }) => t.name);
    // Parents before children (foreign keys), whatever order the patterns gave.
    expect(names).toEqual(['tenants', 'workflows', 'workflow_steps']);
  });

  it('refuses --create on a server that is not the one recorded for the target, creating nothing there', async () => {
    const other = testServers().find((x) => x.major !== server.major)!;
    const db = `moved_${source}`;
    const yaml = await readFile(path.join(dir, 'flashback.yaml'), 'utf8');
    const at = (s: TestServer) =>
      `  moved:\n    host: ${s.host}\n    port: ${s.port}\n    database: ${db}\n    user: postgres\n    password_env: ${s === server ? 'PW' : 'PW2'}\n    protected: false\n`;
    const run = () =>
      runCli(['restore', 'latest', '--to', 'moved', '--create', '--table', 'tenants'], {
        cwd: dir,
        env: { ...env, PW2: other.password },
      });
    try {
      await writeFile(path.join(dir, 'flashback.yaml'), `${yaml}${at(server)}`);
      const first = await run(); // (its fingerprint recorded)
      expect(first.code, first.stderr).toBe(0);
      await sql(server, 'postgres', `DROP DATABASE ${db}`);
      // The configuration now names another server, under the same database name.
      await writeFile(path.join(dir, 'flashback.yaml'), `${yaml}${at(other)}`);
      const moved = await run();
      expect(moved.code, moved.stderr).toBe(ExitCode.refused);
      expect(moved.stderr).toContain(
        'target "moved" is not the database it was when first recorded',
      );
      expect(moved.stderr).toContain('system identifier was');
      // Refused before the database was created: the guard's banner, shown
      // once connected to it, never came (before, the database was created
      // on that server, then dropped after the refusal: left there by a kill).
      expect(moved.stderr).not.toContain('=====');
      const made = await sql(
        other,
        'postgres',
        `SELECT count(*) AS n FROM pg_database WHERE datname = '${db}'`,
      );
      expect(made[0]?.n).toBe('0');
    } finally {
      await writeFile(path.join(dir, 'flashback.yaml'), yaml);
    }
  });

  it('rejects bad input with a clear message and writes nothing', async () => {
    const cases: Array<[string[], number, string]> = [
      [['restore', 'nope', '--to', 'copy'], ExitCode.usage, 'unknown snapshot "nope"'],
      [
        ['restore', 'latest', '--to', 'prod', '--table', 'nosuch'],
        ExitCode.usage,
        'no table in snapshot',
      ],
      [
        [
          'restore',
          'latest',
          '--to',
          'prod',
          '--table',
          'tenants',
          '--where',
          'no_such_column = 1',
        ],
        ExitCode.usage,
        'invalid --where for table public.tenants: column "no_such_column" does not exist',
      ],
      [
        [
          'restore',
          'latest',
          '--to',
          'prod',
          '--table',
          'tenants',
          '--where',
          '1=1); DROP TABLE tenants; --',
        ],
        ExitCode.usage,
        'invalid --where',
      ],
      [
        ['restore', 'latest', '--to', 'prod', '--where', 'id = 1'],
        ExitCode.usage,
        '--where needs --table',
      ],
      [['restore', 'latest', '--to', 'prod'], ExitCode.usage, 'is not empty'],
      [['restore', 'latest', '--to', 'copy', '--create'], ExitCode.usage, 'already exists'],
      [
        ['restore', 'latest', '--to', 'prod', '--on-conflict', 'maybe'],
        ExitCode.usage,
        '--on-conflict: expected skip, update or fail',
      ],
      [
        ['backup', 'prod', '--repo', path.join(dir, 'none')],
        ExitCode.repository,
        'no Flashback repository',
      ],
    ];
    for (const [args, code, text] of cases) {
      const r = await runCli(args, { cwd: dir, env });
      expect(`${args.join(' ')} → ${r.code}`).toBe(`${args.join(' ')} → ${code}`);
      expect(r.stderr).toContain(text);
    }
    expect(Number((await sql(server, source, 'SELECT count(*) AS n FROM tenants'))[0]?.n)).toBe(12);
  });
});

/**
 * A database made by `setup` on the PostgreSQL 17 test server, a repository
 * in `dir` with target `t` (not protected) on it, and one backup of it.
 */
async function backedUp(
  dir: string,
  name: string,
  setup: string,
): Promise<{ server: TestServer; db: string; env: Record<string, string> }> {
  const server = testServers().find((s) => s.major === 17)!;
  const db = await freshDatabase(server, name);
  await sql(server, db, setup);
  expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
  await writeFile(
    path.join(dir, 'flashback.yaml'),
    `repository: ./repo\ntargets:\n  t:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`,
  );
  const env = { PW: server.password };
  expect((await runCli(['backup', 't'], { cwd: dir, env })).code).toBe(0);
  return { server, db, env };
}

describe('selective restore of same-named tables in different schemas', () => {
  it('restores both: each table is staged separately', async () => {
    const { dir, cleanup } = await tempDir();
    const { server, db, env } = await backedUp(
      dir,
      'twins',
      `CREATE SCHEMA a; CREATE SCHEMA b;
       CREATE TABLE a.items (id int PRIMARY KEY, v text); CREATE TABLE b.items (id int PRIMARY KEY, v text);
       INSERT INTO a.items SELECT g, 'a' || g FROM generate_series(1, 50) g;
       INSERT INTO b.items SELECT g, 'b' || g FROM generate_series(1, 70) g;`,
    );
    await sql(server, db, 'DELETE FROM a.items WHERE id > 40; DELETE FROM b.items WHERE id > 60');
    const r = await runCli(['restore', 'latest', '--to', 't', '--table', '*.items', '--json'], {
      cwd: dir,
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    const counts = JSON.parse(r.stdout).plan.tables.map(
      (t: { schema: string; insert: number; skip: number }) => [t.schema, t.insert, t.skip],
    );
    expect(counts).toEqual([
      ['a', 10, 40],
      ['b', 10, 60],
    ]);
    expect(
      await sql(
        server,
        db,
        'SELECT (SELECT count(*) FROM a.items) AS a, (SELECT count(*) FROM b.items) AS b',
      ),
    ).toEqual([{ a: '50', b: '70' }]);
    await cleanup();
  });
});

describe('selective restore into a table changed since the backup', () => {
  it('stages the snapshot columns: a column added since keeps its default, a generated column can be selected on, a dropped one is refused', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const { server, db, env } = await backedUp(
        dir,
        'changed',
        `CREATE TABLE items (id int PRIMARY KEY, price int NOT NULL, qty int NOT NULL, sku text,
           total int GENERATED ALWAYS AS (price * qty) STORED);
         INSERT INTO items (id, price, qty, sku) SELECT g, g, 50, 's' || g FROM generate_series(1, 20) g;`,
      );
      // A routine migration (a NOT NULL column with a default), then rows lost.
      await sql(
        server,
        db,
        'ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT $$n$$; DELETE FROM items WHERE id > 15',
      );
      // total = price * 50: ids 11-20 have total > 500; 16-20 are gone.
      const r = await runCli(
        ['restore', 'latest', '--to', 't', '--table', 'items', '--where', 'total > 500', '--json'],
        { cwd: dir, env },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).plan.tables[0]).toMatchObject({ insert: 5, skip: 5 });
      expect(
        await sql(
          server,
          db,
          "SELECT count(*) AS n, count(*) FILTER (WHERE note = 'n' AND total = id * 50) AS ok FROM items",
        ),
      ).toEqual([{ n: '20', ok: '20' }]);
      // A column the snapshot's rows hold is gone: refused, naming it, nothing written.
      await sql(server, db, 'ALTER TABLE items DROP COLUMN sku; DELETE FROM items WHERE id > 15');
      const gone = await runCli(
        ['restore', 'latest', '--to', 't', '--table', 'items', '--where', 'id > 15'],
        { cwd: dir, env },
      );
      expect(gone.code).toBe(ExitCode.failed);
      expect(gone.stderr).toContain('public.items no longer has column sku');
      // Not "add it back": added back, it is another column, which is refused too.
      expect(gone.stderr).not.toContain('add sku back');
      expect(gone.stderr).toContain(
        'restore the table into another database (--to OTHER --create)',
      );
      expect(gone.stderr).not.toContain('internal error');
      expect(await sql(server, db, 'SELECT count(*) AS n FROM items')).toEqual([{ n: '15' }]);
      // Renamed, not dropped: the hint must not say to add it back (the values
      // would go into a new empty column, and the renamed one keep its own).
      await sql(server, db, 'ALTER TABLE items RENAME COLUMN price TO unit_price');
      const renamed = await runCli(
        ['restore', 'latest', '--to', 't', '--table', 'items', '--where', 'id > 15'],
        { cwd: dir, env },
      );
      expect(renamed.code).toBe(ExitCode.failed);
      expect(renamed.stderr).toContain('(renamed since: price is now unit_price)');
      expect(renamed.stderr).toContain('rename unit_price back to price for the restore');
      expect(renamed.stderr).not.toContain('add sku back');
    } finally {
      await cleanup();
    }
  });
});

describe('restore --create whose output is closed (`| head`)', () => {
  it('stops as on SIGTERM: exit 141, and the database it created is dropped', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const { server, env } = await backedUp(
        dir,
        'piped',
        'CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, repeat($$x$$, 100) FROM generate_series(1, 200000) g',
      );
      const into = `piped_copy_${Date.now() % 100000}`;
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
      // `2>&1 | head`: the reader is gone before the first line (the plan,
      // on stderr), so every write fails with EPIPE while the restore runs.
      const child = spawn(
        process.execPath,
        [CLI, 'restore', 'latest', '--to', url, '--create', '--confirm', into],
        {
          cwd: dir,
          env: { PATH: process.env.PATH, ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      child.stdout.destroy();
      child.stderr.destroy();
      const code = await new Promise<number | null>((r) => child.on('close', r));
      expect(code).toBe(ExitCode.outputClosed);
      expect(
        await sql(
          server,
          'postgres',
          `SELECT count(*) AS n FROM pg_database WHERE datname = '${into}'`,
        ),
      ).toEqual([{ n: '0' }]);
    } finally {
      await cleanup();
    }
  });
});

describe('values larger than a chunk', () => {
  const server = testServers().find((s) => s.major === 17)!;

  it('backs up rows of 20 MB and 9 MB beside small ones, and restores them byte for byte', async () => {
    const { dir, cleanup } = await tempDir();
    const db = await freshDatabase(server, 'bigval');
    try {
      // Each big row is longer than the chunk ceiling (8 MiB) and than many
      // socket reads; bytea in COPY text is hex, twice its size.
      await sql(
        server,
        db,
        `CREATE TABLE docs (id int PRIMARY KEY, body text, blob bytea);
         INSERT INTO docs SELECT g, 'small ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 500) g;
         INSERT INTO docs VALUES
           (1000, repeat('line of text, ', 1500000), NULL),
           (1001, 'a blob', (SELECT string_agg(decode(md5(g::text), 'hex'), '') FROM generate_series(1, 300000) g)),
           (1002, 'after them', NULL)`,
      );
      expect((await runCli(['init', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  t:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n  copy:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}_copy\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      const env = { PW: server.password };
      const b = await runCli(['backup', 't', '--json'], { cwd: dir, env });
      expect(b.code, b.stderr).toBe(0);
      const id = (JSON.parse(b.stdout) as { snapshot: string }).snapshot;
      const m = await new SnapshotStore(new LocalStorage(path.join(dir, 'repo'))).read(id);
      const chunks = m.tables.find((t) => t.name === 'docs')!.chunks;
      // The big rows each end a chunk of their own (cut at the ceiling).
      expect(chunks.filter((c) => c.size > 8 * 1024 * 1024).map((c) => c.last)).toEqual([
        ['1000'],
        ['1001'],
      ]);
      const r = await runCli(['restore', id, '--to', 'copy', '--create'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      const digest = `SELECT string_agg(id || ':' || md5(coalesce(body, '')) || ':' || md5(coalesce(blob, '')), ',' ORDER BY id) AS d FROM docs`;
      const [source] = await sql(server, db, digest);
      const [copy] = await sql(server, `${db}_copy`, digest);
      expect(copy?.d).toBe(source?.d);
      expect((await runCli(['verify', id], { cwd: dir, env })).code).toBe(ExitCode.ok);
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db}_copy WITH (FORCE)`);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await cleanup();
    }
  });
});

describe('a database with the ICU locale provider', () => {
  it('restore --create keeps the provider and locale, so text sorts as on the source', async () => {
    const { dir, cleanup } = await tempDir();
    const server = testServers().find((s) => s.major === 17)!;
    const db = `icu_${Math.random().toString(16).slice(2, 8)}`;
    const copy = `${db}_copy`;
    try {
      await sql(
        server,
        'postgres',
        `CREATE DATABASE ${db} LOCALE_PROVIDER icu ICU_LOCALE 'sv-SE' LOCALE 'C.UTF-8' TEMPLATE template0`,
      );
      await sql(
        server,
        db,
        "CREATE TABLE words (w text PRIMARY KEY); INSERT INTO words VALUES ('y'), ('ü'), ('z'), ('å'), ('Å'), ('ä'), ('ö')",
      );
      expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
      const url = (d: string) =>
        `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${d}`;
      const b = await runCli(['backup', url(db), '--repo', 'repo'], { cwd: dir });
      expect(b.code, b.stderr).toBe(0);
      const r = await runCli(
        ['restore', 'latest', '--to', url(copy), '--create', '--confirm', copy, '--repo', 'repo'],
        { cwd: dir },
      );
      expect(r.code, r.stderr).toBe(0);
      const locale = (d: string) =>
        sql(
          server,
          'postgres',
          `SELECT datlocprovider::text AS p, to_jsonb(d)->>'datlocale' AS l FROM pg_database d WHERE datname = '${d}'`,
        );
      expect(await locale(copy)).toEqual([{ p: 'i', l: 'sv-SE' }]);
      const order = (d: string) => sql(server, d, 'SELECT w FROM words ORDER BY w');
      expect(await order(copy)).toEqual(await order(db));
      // (Swedish order, not libc's: å, ä, ö after z.)
      expect((await order(db)).map((x) => x.w)).toEqual(['y', 'ü', 'z', 'å', 'Å', 'ä', 'ö']);
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${copy}`);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db}`);
      await cleanup();
    }
  });
});

describe('"latest" in a repository of several targets', () => {
  it('is refused as ambiguous; a target name stands for its newest snapshot', async () => {
    const { dir, cleanup } = await tempDir();
    const server = testServers().find((s) => s.major === 17)!;
    const a = await freshDatabase(server, 'src_a');
    const b = await freshDatabase(server, 'src_b');
    const copy = `${a}_copy`;
    try {
      await sql(
        server,
        a,
        "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'from a')",
      );
      await sql(
        server,
        b,
        "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'from b')",
      );
      expect((await runCli(['init', '--repo', path.join(dir, 'repo')], { cwd: dir })).code).toBe(0);
      const t = (n: string, db: string) =>
        `  ${n}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n    protected: false\n`;
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: ./repo\ntargets:\n${t('a', a)}${t('b', b)}`,
      );
      const env = { PW: server.password };
      expect((await runCli(['backup', 'a'], { cwd: dir, env })).code).toBe(0);
      expect((await runCli(['backup', 'b'], { cwd: dir, env })).code).toBe(0);
      // The newest snapshot is b's: merged into a, it would put b's rows there.
      await sql(server, a, 'DELETE FROM items');
      const latest = await runCli(['restore', 'latest', '--to', 'a', '--table', 'items'], {
        cwd: dir,
        env,
      });
      expect(latest.code).toBe(ExitCode.usage);
      expect(latest.stderr).toContain(
        '"latest" is ambiguous: the repository holds snapshots of 2 targets (a, b)',
      );
      expect(await sql(server, a, 'SELECT v FROM items')).toEqual([]);
      const named = await runCli(['restore', 'a', '--to', 'a', '--table', 'items'], {
        cwd: dir,
        env,
      });
      expect(named.code, named.stderr).toBe(0);
      expect(await sql(server, a, 'SELECT v FROM items')).toEqual([{ v: 'from a' }]);
      const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${copy}`;
      const whole = await runCli(['restore', 'b', '--to', url, '--create', '--confirm', copy], {
        cwd: dir,
        env,
      });
      expect(whole.code, whole.stderr).toBe(0);
      expect(await sql(server, copy, 'SELECT v FROM items')).toEqual([{ v: 'from b' }]);
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${copy}`);
      await cleanup();
    }
  });
});

describe('what the backup could not reproduce', () => {
  it('a whole restore names it again (text and --json); a restore of some rows does not', async () => {
    const { dir, cleanup } = await tempDir();
    const server = testServers()[0]!;
    const db = `unrepro_${Math.random().toString(16).slice(2, 8)}`;
    try {
      await sql(server, 'postgres', `CREATE DATABASE ${db}`);
      // A large object (not backed up) whose OID stays in a table.
      await sql(
        server,
        db,
        `CREATE TABLE docs (id int PRIMARY KEY, body oid);
         INSERT INTO docs SELECT 1, lo_from_bytea(0, '\\x00ff');`,
      );
      expect((await runCli(['init', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  t:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n  copy:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}_copy\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      const env = { PW: server.password };
      const b = await runCli(['backup', 't'], { cwd: dir, env });
      expect(b.code, b.stderr).toBe(0);
      const line = 'large objects 1 large object(s): large objects are not backed up';
      expect(b.stdout).toContain(`not reproducible: ${line}`);
      const dry = await runCli(['restore', 'latest', '--to', 'copy', '--create', '--dry-run'], {
        cwd: dir,
        env,
      });
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toContain(
        `would not be reproduced exactly, as the backup reported (\`flashback show ${b.stdout.match(/snapshot (\S+)/)![1]}\`):\n  ${line}\n`,
      );
      const r = await runCli(['restore', 'latest', '--to', 'copy', '--create', '--json'], {
        cwd: dir,
        env,
      });
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { notReproduced: unknown }).notReproduced).toEqual([
        {
          kind: 'large objects',
          name: '1 large object(s)',
          reason: 'large objects are not backed up',
        },
      ]);
      await sql(server, `${db}_copy`, 'DELETE FROM docs');
      const some = await runCli(['restore', 'latest', '--to', 'copy', '--table', 'docs'], {
        cwd: dir,
        env,
      });
      expect(some.code, some.stderr).toBe(0);
      expect(some.stdout).not.toContain('reproduced');
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db}_copy WITH (FORCE)`);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await cleanup();
    }
  });
});

describe('a SQL_ASCII database', () => {
  it('backs up and restores bytes past 127 that are not UTF-8, byte for byte, whole and row by row', async () => {
    const { dir, cleanup } = await tempDir();
    const server = testServers()[0]!;
    const db = `ascii_${Math.random().toString(16).slice(2, 8)}`;
    const env = { PW: server.password };
    const run = (args: string[]) => runCli(args, { cwd: dir, env });
    // Each row as the hex of its bytes (text would turn them into U+FFFD).
    const bytes = async (d: string) =>
      (
        await sql(
          server,
          d,
          `SELECT string_agg(encode(convert_to(t::text, 'SQL_ASCII'), 'hex'), ',' ORDER BY encode(convert_to(k, 'SQL_ASCII'), 'hex')) AS all FROM t`,
        )
      )[0]?.all;
    try {
      await sql(
        server,
        'postgres',
        `CREATE DATABASE ${db} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
      );
      // Latin-1 and cp1252 bytes, as legacy applications wrote them, in keys and values.
      await sql(
        server,
        db,
        `CREATE TABLE t (k text PRIMARY KEY, v varchar(20), n int);
         INSERT INTO t SELECT convert_from(k, 'SQL_ASCII'), convert_from(v, 'SQL_ASCII'), n FROM (VALUES
           ('\\x636166e9'::bytea, '\\x80c0ff'::bytea, 1), ('\\x63616665'::bytea, '\\x6e61ef7665'::bytea, 2),
           ('\\x9f'::bytea, '\\x09'::bytea, 3)) x(k, v, n);`,
      );
      expect((await run(['init', '--repo', 'repo'])).code).toBe(0);
      await writeFile(
        path.join(dir, 'flashback.yaml'),
        `repository: repo\ntargets:\n  t:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n  copy:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}_copy\n    user: postgres\n    password_env: PW\n    protected: false\n`,
      );
      const source = await bytes(db);
      expect(source).toContain('636166e9'); // (the bytes are in)
      const b = await run(['backup', 't']);
      expect(b.code, b.stderr).toBe(0);
      const r = await run(['restore', 'latest', '--to', 'copy', '--create']);
      expect(r.code, r.stderr).toBe(0);
      expect(await bytes(`${db}_copy`)).toBe(source);
      expect((await run(['verify', 'latest'])).code).toBe(ExitCode.ok);
      // Row by row into the live table: the key with a byte past 127 is matched exactly.
      await sql(server, db, `DELETE FROM t WHERE n IN (1, 3)`);
      const some = await run([
        'restore',
        'latest',
        '--to',
        't',
        '--table',
        't',
        '--where',
        'n <> 2',
        '--confirm',
        't',
      ]);
      expect(some.code, some.stderr).toBe(0);
      expect(some.stdout).toMatch(/public\.t +merge +3 +2 +0 +0\n/);
      expect(await bytes(db)).toBe(source);
      // Schema text is read as text: a byte past 127 there would come back
      // as U+FFFD and the default be restored altered. Refused, loudly.
      await sql(server, db, `ALTER TABLE t ALTER v SET DEFAULT E'caf\\xe9'`);
      const refused = await run(['backup', 't']);
      expect(refused.code).toBe(ExitCode.failed);
      expect(refused.stderr).toContain('invalid byte sequence for encoding "UTF8"');
    } finally {
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db}_copy WITH (FORCE)`);
      await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await cleanup();
    }
  });
});
