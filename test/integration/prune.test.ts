/**
 * prune against real backups, through the CLI: the plan, the bytes a dry run
 * predicts and a real run frees, the newest verified snapshot kept, SIGKILL
 * at each fault point leaving a repository that checks clean and restores,
 * the exclusive lock, and a missing policy removing nothing.
 */
import { readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { ChunkStore } from '../../src/repo/chunks.js';
import { RepositoryLock } from '../../src/repo/lock.js';
import { RunStore } from '../../src/repo/runs.js';
import { SnapshotStore } from '../../src/repo/snapshots.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { LocalStorage } from '../../src/storage/local.js';
import type { FaultPointName } from '../../src/util/faultpoint.js';
import { cliAt, killHard } from '../harness/faultpoint.js';
import { connectTo, freshDatabase, runCli, sql, tempDir, testServers } from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17)!;

/** Tables of the sample database and the order that makes their text comparable. */
const TABLES: Record<string, string> = {
  tenants: 'id',
  subscribers: 'id',
  workflows: 'id',
  workflow_steps: 'id',
  files: 'id',
  events: 't::text',
};

/** md5 of every table's rows in a fixed order (one query): equal means the same contents. */
async function contentHashes(db: string): Promise<Record<string, string | null>> {
  const rows = await sql(
    server,
    db,
    `SELECT ${Object.entries(TABLES)
      .map(
        ([table, order]) =>
          `(SELECT md5(string_agg(t::text, E'\\n' ORDER BY ${order})) FROM ${table} t) AS ${table}`,
      )
      .join(', ')}`,
  );
  return rows[0]!;
}

/** Stored bytes and count of the chunk objects (temporary files excluded). */
async function chunkDir(repo: string): Promise<{ bytes: number; count: number }> {
  let bytes = 0;
  let count = 0;
  for (const e of await readdir(path.join(repo, 'chunks'), {
    withFileTypes: true,
    recursive: true,
  })) {
    if (!e.isFile() || e.name.startsWith('.tmp-')) continue;
    bytes += (await stat(path.join(e.parentPath, e.name))).size;
    count++;
  }
  return { bytes, count };
}

describe('prune', () => {
  let dir: string;
  let repo: string;
  let cleanup: () => Promise<void>;
  let source: string;
  const env = { PW: server.password };
  /** What each snapshot holds, taken from the source right after its backup. */
  const contents = new Map<string, Record<string, string | null>>();
  const taken: string[] = [];
  let restores = 0;

  const targetYaml = (name: string, db: string, extra = '') =>
    `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n${extra}`;
  const configure = (retention: string) =>
    writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\n${retention}targets:\n${targetYaml('prod', source)}${Array.from(
        { length: 6 },
        (_, i) => targetYaml(`copy${i}`, `${source}_copy${i}`, '    protected: false\n'),
      ).join('')}`,
    );
  const cli = (args: string[]) => runCli(args, { cwd: dir, env });
  /** Snapshot ids in the repository, oldest first (snapshots of one second in the order they finished). */
  const ids = async () => new SnapshotStore(new LocalStorage(repo)).ids();
  const sorted = (a: readonly string[]) => [...a].sort();

  /** Changes some rows (a unique chunk or two per snapshot), then backs up. */
  async function backupWithChanges(): Promise<string> {
    const n = taken.length + 1;
    await sql(
      server,
      source,
      `UPDATE tenants SET name = name || '-${n}' WHERE id = 1;
       UPDATE files SET name = name || '.v${n}' WHERE id BETWEEN ${n * 500} AND ${n * 500 + 400};
       INSERT INTO events (tenant_id, kind, payload, at) VALUES (1, 'backup', '{"n": ${n}}', now())`,
    );
    const hashes = await contentHashes(source);
    const r = await cli(['backup', 'prod', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const id = JSON.parse(r.stdout).snapshot as string;
    contents.set(id, hashes);
    taken.push(id);
    return id;
  }

  /**
   * Every chunk every remaining manifest names exists and decodes to its hash;
   * after a kill, `check --read-data` must agree.
   */
  async function assertIntact(options: { check: boolean }): Promise<void> {
    const storage = new LocalStorage(repo);
    const chunks = new ChunkStore(storage);
    const seen = new Set<string>();
    for (const m of await new SnapshotStore(storage).all()) {
      for (const t of m.tables) {
        for (const c of t.chunks) {
          if (seen.has(c.id)) continue;
          seen.add(c.id);
          expect((await chunks.get(c.id)).length).toBe(c.size);
        }
      }
    }
    if (!options.check) return;
    const check = await cli(['check', '--read-data']);
    expect(check.code, check.stdout + check.stderr).toBe(ExitCode.ok);
  }

  /** Restores a snapshot into a new database and compares it with the source at backup time. */
  async function assertRestores(id: string): Promise<void> {
    const name = `copy${restores++}`;
    const r = await cli(['restore', id, '--to', name, '--create']);
    expect(r.code, r.stderr).toBe(0);
    expect(await contentHashes(`${source}_${name}`), `snapshot ${id}`).toEqual(contents.get(id));
    await sql(server, 'postgres', `DROP DATABASE ${source}_${name}`);
  }

  /** Starts prune stopped at a fault point, waits until it parks there, and kills it. */
  async function killPruneAt(point: FaultPointName): Promise<void> {
    expect(await killHard(await cliAt(point, ['prune'], dir, env))).toBe('SIGKILL');
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    repo = path.join(dir, 'repo');
    source = await freshDatabase(server, 'prune');
    const c = await connectTo(server, source);
    // Small, so the file stays fast; each backup changes a few rows first, so
    // every snapshot has chunks of its own next to ones it shares.
    await createSampleDatabase(c, { tenants: 6, subscribersPerTenant: 100, filesPerTenant: 1000 });
    await c.end();
    expect((await runCli(['init', '--repo', repo], { cwd: dir })).code).toBe(0);
    await configure('');
    for (let i = 0; i < 4; i++) await backupWithChanges();
  });
  afterAll(async () => cleanup());

  it('removes nothing without a policy, and says why', async () => {
    const before = await chunkDir(repo);
    const r = await cli(['prune']);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stderr).toContain(
      'no retention policy configured (targets with snapshots: prod): prune removes nothing without one',
    );
    expect(r.stderr).toContain('hint: set retention');
    expect(await ids()).toEqual(taken);
    expect(await chunkDir(repo)).toEqual(before);
  });

  it('refuses with exit 7 while a backup holds a shared lock; a dry run may run beside it', async () => {
    await configure('retention:\n  keep_last: 2\n');
    const lock = await RepositoryLock.acquire(new LocalStorage(repo), {
      exclusive: false,
      command: 'backup prod',
    });
    try {
      const r = await cli(['prune']);
      expect(r.code).toBe(ExitCode.locked);
      expect(r.stderr).toContain('is locked by "backup prod"');
      expect((await cli(['prune', '--dry-run'])).code).toBe(0);
    } finally {
      await lock.release();
    }
    expect(await ids()).toEqual(taken);
  });

  it('frees what the dry run said, keeps the newest verified snapshot, and what remains restores', async () => {
    const [s1, s2, s3, s4] = taken as [string, string, string, string];
    const runs = new RunStore(new LocalStorage(repo));
    const verify = (snapshot: string, ok: boolean, at: string) =>
      runs.record({
        kind: 'verify',
        target: 'prod',
        snapshot,
        ok,
        trigger: 'command',
        startedAt: at,
        finishedAt: at,
        seconds: 1,
        ...(ok ? {} : { problems: [{ table: 'public.files', message: 'rows differ' }] }),
      });
    // s1 verified; s2 verified too, but its latest verification found a difference.
    await verify(s1, true, '2026-01-01T00:00:00.000Z');
    await verify(s2, true, '2026-01-01T01:00:00.000Z');
    await verify(s2, false, '2026-01-01T02:00:00.000Z');

    const dry = await cli(['prune', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = JSON.parse(dry.stdout);
    expect(plan.removed).toEqual([s2]);
    expect(
      plan.targets[0].snapshots.map((s: { id: string; reasons: string[] }) => [s.id, s.reasons]),
    ).toEqual([
      [s1, ['newest verified']],
      [s2, []],
      [s3, ['last 2']],
      [s4, ['last 2']],
    ]);
    expect(plan.bytesFreed).toBeGreaterThan(0);
    const human = await cli(['prune', '--dry-run']);
    expect(human.stdout).toMatch(new RegExp(`${s1} .* keep .* newest verified`));
    expect(human.stdout).toMatch(new RegExp(`${s2} .* REMOVE `));
    expect(human.stdout).toContain('dry run: would remove 1 snapshot(s)');
    expect(human.stdout).toContain('nothing was deleted');
    expect(await ids()).toEqual(taken);

    const before = await chunkDir(repo);
    const r = await cli(['prune', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout);
    const after = await chunkDir(repo);
    expect(done.bytesFreed).toBe(plan.bytesFreed);
    expect(before.bytes - after.bytes).toBe(plan.bytesFreed);
    expect(done.chunksRemoved).toBe(plan.chunksRemoved);
    expect(before.count - after.count).toBe(plan.chunksRemoved);

    const list = JSON.parse((await cli(['list', '--json'])).stdout) as Array<{ id: string }>;
    expect(sorted(list.map((s) => s.id))).toEqual(sorted([s1, s3, s4]));
    const record = (await runs.list({ target: null, kind: 'prune' })).at(-1);
    expect(record).toMatchObject({
      ok: true,
      details: {
        snapshotsRemoved: 1,
        chunksRemoved: plan.chunksRemoved,
        bytesFreed: plan.bytesFreed,
      },
    });
    await assertIntact({ check: false });
    for (const id of [s1, s3, s4]) await assertRestores(id);
    // The removed snapshot left a tombstone: status does not take it for lost.
    const status = await cli(['status', '--repository-only', '--json']);
    expect(status.stdout).not.toContain('snapshot-missing');
  });

  it('SIGKILL after the manifests are deleted: no chunk is missing, and the next prune frees the rest', async () => {
    const [s1, , s3, s4] = taken as [string, string, string, string];
    const s5 = await backupWithChanges();
    const plan = JSON.parse((await cli(['prune', '--dry-run', '--json'])).stdout);
    expect(plan.removed).toEqual([s3]);
    expect(plan.bytesFreed).toBeGreaterThan(0);
    const before = await chunkDir(repo);

    await killPruneAt('prune.after-manifests');
    expect(await ids()).toEqual([s1, s4, s5]);
    expect(await chunkDir(repo)).toEqual(before); // no chunk deleted yet
    await assertIntact({ check: true });
    // It left no record: status says it was killed, from its lock.
    const st = await cli(['status', '--repository-only', '--json']);
    const findings = (
      JSON.parse(st.stdout) as {
        targets: Array<{ findings: Array<{ kind: string; message: string }> }>;
      }
    ).targets.flatMap((t) => t.findings);
    expect(findings).toContainEqual(
      expect.objectContaining({
        kind: 'prune-failed',
        message: expect.stringContaining('ended without finishing or recording a result'),
      }),
    );

    // The killed run's lock is stale (its process is gone): the next run goes ahead.
    const r = await cli(['prune', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout);
    expect(done.snapshotsRemoved).toBe(0);
    expect(done.bytesFreed).toBe(plan.bytesFreed);
    expect(before.bytes - (await chunkDir(repo)).bytes).toBe(plan.bytesFreed);
    await assertIntact({ check: false });
  });

  it('SIGKILL after the first chunk deletion: what remains checks clean and restores', async () => {
    const [s1, , , s4, s5] = taken as [string, string, string, string, string];
    const s6 = await backupWithChanges();
    const plan = JSON.parse((await cli(['prune', '--dry-run', '--json'])).stdout);
    expect(plan.removed).toEqual([s4]);
    expect(plan.chunksRemoved).toBeGreaterThan(1);
    const before = await chunkDir(repo);

    await killPruneAt('prune.during-chunks');
    expect(await ids()).toEqual([s1, s5, s6]);
    expect((await chunkDir(repo)).count).toBe(before.count - 1);
    await assertIntact({ check: true });

    const r = await cli(['prune']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(`removed 0 snapshot\\(s\\) and ${plan.chunksRemoved - 1} unreferenced chunk`),
    );
    const after = await chunkDir(repo);
    expect(before.bytes - after.bytes).toBe(plan.bytesFreed);
    expect(before.count - after.count).toBe(plan.chunksRemoved);
    await assertIntact({ check: false });
    // s1 was restored after the first prune; its chunks were just read and hashed again.
    for (const id of [s5, s6]) await assertRestores(id);
  });
});
