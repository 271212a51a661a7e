/**
 * `flashback verify`: a snapshot restored into an embedded scratch server of
 * its major version and compared with the backup (schema model, and every
 * chunk's hash and row count re-cut from the restored tables). A damaged
 * chunk, and a snapshot whose data does not come back as recorded, fail with
 * exit 8 naming snapshot, table and chunk; results are recorded and listed.
 */
import { cp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import {
  connectTo,
  freshDatabase,
  runCli,
  sql,
  type TestServer,
  tempDir,
  testServers,
} from '../harness/pg.js';
import { FIXTURE } from '../harness/schema.js';

function targetYaml(server: TestServer, db: string): string {
  return `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n`;
}

async function snapshotFiles(repo: string): Promise<string[]> {
  return (await readdir(path.join(repo, 'snapshots'))).filter((f) => f.endsWith('.json'));
}

/** A btree operator class sorting integers backwards: an object Flashback does not recreate. */
const REVERSED_OPS = `CREATE FUNCTION rev_cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE
    AS 'SELECT CASE WHEN $1 < $2 THEN 1 WHEN $1 > $2 THEN -1 ELSE 0 END';
  CREATE OPERATOR CLASS rev_ops FOR TYPE int USING btree AS
    OPERATOR 1 >, OPERATOR 2 >=, OPERATOR 3 =, OPERATOR 4 <=, OPERATOR 5 <, FUNCTION 1 rev_cmp(int, int)`;

describe('verify', () => {
  const server = testServers().find((s) => s.major === 17)!;
  const env = { PW: server.password };
  let dir: string;
  let cleanup: () => Promise<void>;
  let repo: string;
  let snapshot: string;
  let dbName: string;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    const db = await freshDatabase(server, 'verify');
    dbName = db;
    const c = await connectTo(server, db);
    await createSampleDatabase(c, { tenants: 30 });
    await c.end();
    repo = path.join(dir, 'repo');
    expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: repo\n${targetYaml(server, db)}`,
    );
    const b = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(b.code, b.stderr).toBe(0);
    snapshot = (JSON.parse(b.stdout) as { snapshot: string }).snapshot;
  });
  afterAll(async () => cleanup());

  it('passes a good snapshot, records it, and list and --unverified show it', async () => {
    const r = await runCli(['verify', snapshot, '--json'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(ExitCode.ok);
    const out = JSON.parse(r.stdout) as {
      ok: boolean;
      verified: Array<{
        snapshot: string;
        ok: boolean;
        scratch: string;
        tables: Array<{ table: string; rows: number; expectedRows: number; badChunks: number }>;
        problems: unknown[];
      }>;
    };
    expect(out.ok).toBe(true);
    const v = out.verified[0]!;
    expect(v.snapshot).toBe(snapshot);
    expect(v.scratch).toBe('embedded PostgreSQL 17');
    expect(v.problems).toEqual([]);
    expect(v.tables.map((t) => t.table).sort()).toEqual([
      'public.events',
      'public.files',
      'public.subscribers',
      'public.tenants',
      'public.workflow_steps',
      'public.workflows',
    ]);
    for (const t of v.tables) {
      expect(t.rows, t.table).toBe(t.expectedRows);
      expect(t.badChunks, t.table).toBe(0);
    }
    expect(v.tables.find((t) => t.table === 'public.events')!.rows).toBeGreaterThan(0);

    const list = JSON.parse((await runCli(['list', '--json'], { cwd: dir })).stdout) as Array<{
      id: string;
      verification: { ok: boolean } | null;
    }>;
    expect(list.find((s) => s.id === snapshot)?.verification?.ok).toBe(true);
    const human = (await runCli(['list'], { cwd: dir })).stdout;
    expect(human).toMatch(/VERIFIED/);
    expect(human.split('\n').find((l) => l.startsWith(snapshot))).toMatch(/\bpass\b/);

    const again = await runCli(['verify', '--unverified'], { cwd: dir, env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('nothing to verify');

    // A pass that cannot be recorded (the run records' folder unwritable) is
    // not "0, verified": status and prune would not count it.
    const runs = path.join(repo, 'runs', 'prod');
    await rename(runs, `${runs}.aside`);
    await writeFile(runs, 'in the way');
    try {
      const unrecorded = await runCli(['verify', snapshot], { cwd: dir, env });
      expect(unrecorded.stdout).toContain(`PASS ${snapshot}`);
      expect(unrecorded.code, unrecorded.stderr).toBe(ExitCode.failed);
      expect(unrecorded.stderr).toContain('passed but could not be recorded in the repository');
    } finally {
      await rm(runs);
      await rename(`${runs}.aside`, runs);
    }
  });

  it('fails on a damaged chunk, naming snapshot, table and chunk, and records the failure', async () => {
    const copy = path.join(dir, 'damaged');
    await cp(repo, copy, { recursive: true });
    const m = JSON.parse(
      await readFile(path.join(copy, 'snapshots', `${snapshot}.json`), 'utf8'),
    ) as { tables: Array<{ schema: string; name: string; chunks: Array<{ id: string }> }> };
    const table = m.tables.find((t) => t.name === 'workflow_steps')!;
    const victim = table.chunks[table.chunks.length - 1]!.id;
    const file = path.join(copy, 'chunks', victim.slice(0, 2), victim);
    const bytes = await readFile(file);
    bytes[bytes.length - 10]! ^= 0xff;
    await writeFile(file, bytes);

    const r = await runCli(['verify', snapshot, '--repo', copy], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(ExitCode.damaged);
    expect(r.stdout).toContain(`FAIL ${snapshot}`);
    expect(r.stdout).toContain('public.workflow_steps');
    expect(r.stdout).toContain(victim);
    expect(r.stdout).toContain(`chunk ${table.chunks.length} of ${table.chunks.length}`);
    expect(r.stderr).toContain('FAILED verification');

    const list = JSON.parse(
      (await runCli(['list', '--json', '--repo', copy], { cwd: dir })).stdout,
    ) as Array<{ id: string; verification: { ok: boolean } | null }>;
    expect(list.find((s) => s.id === snapshot)?.verification?.ok).toBe(false);
    // The scratch database is gone, pass or fail; no server is left running.
    expect(await readdir(path.join(copy, 'locks'))).toEqual([]);
  });

  it('fails when restored data does not re-cut into the recorded chunks', async () => {
    // A manifest that disagrees with its own chunks stands for any restore
    // that does not bring every row back as it was backed up.
    const copy = path.join(dir, 'mismatch');
    await cp(repo, copy, { recursive: true });
    const file = path.join(copy, 'snapshots', `${snapshot}.json`);
    const m = JSON.parse(await readFile(file, 'utf8')) as {
      tables: Array<{ name: string; rows: number; chunks: Array<{ rows: number }> }>;
    };
    const t = m.tables.find((x) => x.name === 'subscribers')!;
    t.chunks[0]!.rows += 1;
    t.rows += 1;
    // As a manifest from before checksums: with its checksum, the edit is
    // refused as damage when the manifest is read, before any restore.
    delete (m as { checksum?: string }).checksum;
    await writeFile(file, JSON.stringify(m));
    const r = await runCli(['verify', snapshot, '--repo', copy, '--json'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(ExitCode.damaged);
    const out = JSON.parse(r.stdout) as {
      verified: Array<{ problems: Array<{ table?: string; chunk?: number; message: string }> }>;
    };
    const problems = out.verified[0]!.problems;
    expect(problems.some((p) => p.table === 'public.subscribers' && p.chunk === 0)).toBe(true);
    expect(problems.map((p) => p.message).join('\n')).toContain('rows after restore');
  });

  it('fails (exit 8, not "could not run") a snapshot whose schema does not restore', async () => {
    // An operator class is not reproduced (the backup says so); an index
    // needs it, so the index cannot be created.
    const db = await freshDatabase(server, 'unrestorable');
    await sql(
      server,
      db,
      `${REVERSED_OPS};
       CREATE TABLE docs (id int PRIMARY KEY, n int);
       CREATE INDEX docs_n ON docs (n rev_ops);
       INSERT INTO docs VALUES (1, 10), (2, 20)`,
    );
    const own = path.join(dir, 'unrestorable');
    expect((await runCli(['init', '--force', '--repo', own], { cwd: dir })).code).toBe(0);
    const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${db}`;
    const b = await runCli(['backup', url, '--repo', own], { cwd: dir });
    expect(b.code, b.stderr).toBe(0);
    // The backup says which objects need it, and that a full restore fails without it.
    expect(b.stdout).toContain(
      'not reproducible: operator class public.rev_ops USING btree: user-defined operator classes are not recreated; needed by index public.docs_n',
    );
    expect(b.stderr).toContain(
      'warning: a full restore of this snapshot fails unless operator class public.rev_ops USING btree exists in the target first',
    );
    // A dry run with --create does not claim to have tried it.
    const dry = await runCli(
      ['restore', 'latest', '--to', `${url}_new`, '--create', '--dry-run', '--repo', own],
      { cwd: dir },
    );
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('a full restore of this snapshot fails unless');
    expect(dry.stdout).toContain('dry run: planned from the snapshot, not tried');
    expect(dry.stdout).not.toContain('tried and rolled back');
    // What the warning says works: the object made first in an empty database.
    const empty = await freshDatabase(server, 'prepared');
    await sql(server, empty, REVERSED_OPS);
    const into = await runCli(
      ['restore', 'latest', '--to', url.replace(db, empty), '--confirm', empty, '--repo', own],
      { cwd: dir },
    );
    expect(into.code, into.stderr).toBe(0);
    expect(await sql(server, empty, "SELECT pg_get_indexdef('docs_n'::regclass) AS d")).toEqual([
      { d: 'CREATE INDEX docs_n ON public.docs USING btree (n rev_ops)' },
    ]);
    const r = await runCli(['verify', 'latest', '--repo', own], { cwd: dir });
    expect(r.code, r.stdout + r.stderr).toBe(ExitCode.damaged);
    expect(r.stdout).toContain('the snapshot does not restore');
    expect(r.stdout).toContain('rev_ops');
    // Not a damaged chunk: a new backup would not repair it.
    expect(r.stderr).toContain('not repaired by a new backup');
    expect(r.stderr).not.toContain('check --read-data');
  });

  it('passes a table the backup reported as restored otherwise (inherited column order)', async () => {
    const db = await freshDatabase(server, 'inherits');
    await sql(
      server,
      db,
      `CREATE TABLE ip (id int PRIMARY KEY); CREATE TABLE ic (b int) INHERITS (ip);
       ALTER TABLE ip ADD COLUMN z int; INSERT INTO ic VALUES (1, 2, 3)`,
    );
    const own = path.join(dir, 'inherits');
    expect((await runCli(['init', '--force', '--repo', own], { cwd: dir })).code).toBe(0);
    const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${db}`;
    const b = await runCli(['backup', url, '--repo', own], { cwd: dir });
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout + b.stderr).toContain('inherited column order');
    const r = await runCli(['verify', 'latest', '--repo', own], { cwd: dir });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('PASS');
  });

  it('verifies in a configured scratch target, which must be unprotected, and leaves nothing there', async () => {
    const yaml = (protectedScratch: boolean) =>
      `repository: repo\nverify:\n  scratch: scratch\n${targetYaml(server, dbName)}` +
      `  scratch:\n    host: ${server.host}\n    port: ${server.port}\n    database: postgres\n    user: postgres\n    password_env: PW\n    protected: ${protectedScratch}\n`;
    await writeFile(path.join(dir, 'flashback.yaml'), yaml(true));
    const refused = await runCli(['verify', snapshot], { cwd: dir, env });
    expect(refused.code, refused.stderr).toBe(ExitCode.usage);
    expect(refused.stderr).toContain('protected');

    await writeFile(path.join(dir, 'flashback.yaml'), yaml(false));
    const r = await runCli(['verify', snapshot, '--json'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(ExitCode.ok);
    expect(
      (JSON.parse(r.stdout) as { verified: Array<{ scratch: string }> }).verified[0]!.scratch,
    ).toBe('target "scratch"');
    // Another snapshot, in a database of another name: before, the guard
    // had recorded the first one's database as the target's and refused it.
    const second = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(second.code, second.stderr).toBe(0);
    const next = await runCli(['verify', 'latest'], { cwd: dir, env });
    expect(next.code, next.stderr).toBe(ExitCode.ok);
    const left = await connectTo(server);
    const dbs = await left.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE datname LIKE 'flashback_verify_%'",
    );
    await left.end();
    expect(dbs.rows).toEqual([]);
  });

  it('refuses unclear selections', async () => {
    expect((await runCli(['verify'], { cwd: dir })).code).toBe(ExitCode.usage);
    expect((await runCli(['verify', snapshot, '--latest'], { cwd: dir })).code).toBe(
      ExitCode.usage,
    );
    const unknown = await runCli(['verify', 'nosuch'], { cwd: dir });
    expect(unknown.code).toBe(ExitCode.usage);
    expect(unknown.stderr).toContain('unknown snapshot');
  });
});

describe('verify of the fidelity fixture on PostgreSQL 15', () => {
  const server = testServers().find((s) => s.major === 15);
  it.runIf(server !== undefined)(
    'passes: every object kind and type family comes back equal, owners and grants included',
    async () => {
      const s = server!;
      const { dir, cleanup } = await tempDir();
      try {
        const db = await freshDatabase(s, 'vfid');
        await sql(s, db, await readFile(FIXTURE, 'utf8'));
        expect((await runCli(['init', '--force', '--repo', 'repo'], { cwd: dir })).code).toBe(0);
        await writeFile(path.join(dir, 'flashback.yaml'), `repository: repo\n${targetYaml(s, db)}`);
        const env = { PW: s.password };
        const b = await runCli(['backup', 'prod'], { cwd: dir, env });
        expect(b.code, b.stderr).toBe(0);
        expect(await snapshotFiles(path.join(dir, 'repo'))).toHaveLength(1);
        const r = await runCli(['verify', '--latest'], { cwd: dir, env });
        expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
        expect(r.stdout).toMatch(/^PASS /);
      } finally {
        await cleanup();
      }
    },
  );
});
