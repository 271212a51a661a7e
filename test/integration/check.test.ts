/**
 * `flashback check` against damaged copies of a real repository: each kind
 * of damage is found, named (snapshots, table, chunk) and exits 8; a clean
 * repository exits 0; a restore never writes rows from a damaged chunk.
 */
import { cp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { RunStore } from '../../src/repo/runs.js';
import { type SnapshotManifest, SnapshotStore } from '../../src/repo/snapshots.js';
import { createSampleDatabase } from '../../src/sample/saas.js';
import { LocalStorage } from '../../src/storage/local.js';
import type { CheckFinding, CheckReport } from '../../src/verify/check.js';
import { holdPruneLock } from '../harness/lock.js';
import {
  type CliResult,
  connectTo,
  freshDatabase,
  runCli,
  sql,
  tempDir,
  testServers,
} from '../harness/pg.js';

const server = testServers().find((s) => s.major === 17) ?? testServers()[0]!;

/** The path of a chunk object in a local repository. */
function chunkFile(repo: string, id: string): string {
  return path.join(repo, 'chunks', id.slice(0, 2), id);
}

function manifestFile(repo: string, id: string): string {
  return path.join(repo, 'snapshots', `${id}.json`);
}

/** Inverts the byte at `offset` (negative: from the end) in place; the size stays the same. */
async function flipByte(file: string, offset: number): Promise<void> {
  const b = await readFile(file);
  const at = offset < 0 ? b.length + offset : offset;
  b[at] = b[at]! ^ 0xff;
  await writeFile(file, b);
}

/** Distinct chunk ids of a manifest. */
function chunkIds(m: SnapshotManifest): Set<string> {
  return new Set(m.tables.flatMap((t) => t.chunks.map((c) => c.id)));
}

function table(m: SnapshotManifest, name: string) {
  const t = m.tables.find((x) => x.name === name);
  if (t === undefined) throw new Error(`no table ${name} in ${m.id}`);
  return t;
}

describe('check', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let source: string;
  let base: string;
  let s1: SnapshotManifest;
  let s2: SnapshotManifest;
  let copies = 0;
  let originalEmail: string;
  const env = { PW: server.password };

  /** A fresh copy of the two-snapshot repository, to damage. */
  async function copy(): Promise<string> {
    const to = path.join(dir, `copy-${++copies}`);
    await cp(base, to, { recursive: true });
    return to;
  }

  async function check(
    repo: string,
    ...args: string[]
  ): Promise<CliResult & { report: CheckReport }> {
    const r = await runCli(['check', '--repo', repo, '--json', ...args], { cwd: dir });
    let report: CheckReport;
    try {
      report = JSON.parse(r.stdout) as CheckReport;
    } catch {
      throw new Error(`check printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
    }
    return { ...r, report };
  }

  const errors = (report: CheckReport): CheckFinding[] =>
    report.findings.filter((f) => f.severity === 'error');

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir());
    source = await freshDatabase(server, 'check');
    const c = await connectTo(server, source);
    await createSampleDatabase(c, { tenants: 6, subscribersPerTenant: 100, filesPerTenant: 300 });
    await c.end();
    base = path.join(dir, 'repo');
    expect((await runCli(['init', '--repo', base], { cwd: dir })).code).toBe(0);
    const t = (name: string, db: string, extra = '') =>
      `  ${name}:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${db}\n    user: postgres\n    password_env: PW\n${extra}`;
    await writeFile(
      path.join(dir, 'flashback.yaml'),
      `repository: ./repo\ntargets:\n${t('prod', source)}${t('copy', `restored_${source}`, '    protected: false\n')}`,
    );
    const first = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(first.code, first.stderr).toBe(0);
    // One changed row: the second snapshot shares every chunk but one of subscribers.
    originalEmail = (await sql(server, source, 'SELECT email FROM subscribers WHERE id = 1'))[0]!
      .email!;
    await sql(server, source, "UPDATE subscribers SET email = 'changed@example.com' WHERE id = 1");
    const second = await runCli(['backup', 'prod', '--json'], { cwd: dir, env });
    expect(second.code, second.stderr).toBe(0);
    const store = new SnapshotStore(new LocalStorage(base));
    const all = await store.all();
    expect(all.length).toBe(2);
    s1 = all[0]!;
    s2 = all[1]!;
    // The fixtures the cases below rely on: a shared chunk and one unique to each snapshot.
    expect(table(s2, 'files').chunks[0]!.id).toBe(table(s1, 'files').chunks[0]!.id);
    expect(table(s2, 'subscribers').chunks[0]!.id).not.toBe(table(s1, 'subscribers').chunks[0]!.id);
  });
  afterAll(async () => cleanup());

  it('passes a clean repository, with and without reading the data', async () => {
    const all = new Set([...chunkIds(s1), ...chunkIds(s2)]);
    // Independent runs side by side (shared locks): the file stays fast.
    const [quick, full, human] = await Promise.all([
      check(base),
      check(base, '--read-data'),
      runCli(['check', '--repo', base, '--read-data'], { cwd: dir }),
    ]);
    expect(quick.code, quick.stdout).toBe(ExitCode.ok);
    expect(quick.report.findings).toEqual([]);
    expect(quick.report.totals).toMatchObject({
      snapshots: 2,
      snapshotsChecked: 2,
      chunks: all.size,
      chunksRead: 0,
      unreferencedChunks: 0,
      errors: 0,
    });
    expect(full.code, full.stdout).toBe(ExitCode.ok);
    const stored = [...all].reduce((a, id) => {
      const ref = [...s1.tables, ...s2.tables].flatMap((t) => t.chunks).find((c) => c.id === id)!;
      return a + ref.stored;
    }, 0);
    expect(full.report.totals).toMatchObject({ chunksRead: all.size, bytesRead: stored });
    // The human report: a summary with counts and the read rate.
    expect(human.code).toBe(ExitCode.ok);
    expect(human.stdout).toContain(`2 snapshot(s), ${all.size} chunk(s) checked`);
    expect(human.stdout).toMatch(/\d+ chunk\(s\) read, [\d.]+ [kM]?B at [\d.]+ [kM]?B\/s/);
    expect(human.stdout).toContain('no problems found');
    // Each check is recorded as a run of the repository.
    const runs = await new RunStore(new LocalStorage(base)).list({ target: null, kind: 'check' });
    expect(runs.length).toBe(3);
    expect(runs.every((r) => r.ok)).toBe(true);
    const withData = runs.filter((r) => r.details?.chunksRead === all.size);
    expect(withData.length).toBe(2);
    expect(withData[0]!.details).toMatchObject({ bytes: stored, errors: 0 });
  });

  it('finds a flipped byte in a shared chunk only by reading it, and names both snapshots', async () => {
    const repo = await copy();
    const id = table(s1, 'files').chunks[0]!.id;
    await flipByte(chunkFile(repo, id), -20);
    const quick = await check(repo);
    const [full, subset, human] = await Promise.all([
      check(repo, '--read-data'),
      check(repo, '--read-data-subset', '100%'),
      runCli(['check', '--repo', repo, '--read-data'], { cwd: dir }),
    ]);
    expect(quick.code, 'same size: invisible without --read-data').toBe(ExitCode.ok);
    for (const r of [full, subset]) {
      expect(r.code).toBe(ExitCode.damaged);
      expect(errors(r.report)).toEqual([
        expect.objectContaining({
          kind: 'chunk-damaged',
          chunkId: id,
          snapshots: [s1.id, s2.id],
          table: 'public.files',
          chunk: 0,
          uses: [
            { snapshot: s1.id, table: 'public.files', chunk: 0 },
            { snapshot: s2.id, table: 'public.files', chunk: 0 },
          ],
        }),
      ]);
    }
    expect(human.code).toBe(ExitCode.damaged);
    expect(human.stdout).toMatch(
      new RegExp(
        `^error: chunk ${id} is damaged: (its content hashes to|zstd data is damaged)`,
        'm',
      ),
    );
    expect(human.stdout).toContain(`used by public.files chunk 1 in snapshots ${s1.id}, ${s2.id}`);
    expect(human.stdout).toContain('DAMAGED');
    // Once found, a check that does not read the chunk still reports it (it
    // cleared the finding, and status then said all was well).
    const again = await check(repo);
    expect(again.code).toBe(ExitCode.damaged);
    expect(errors(again.report)).toEqual([
      expect.objectContaining({
        kind: 'chunk-damaged',
        chunkId: id,
        message: expect.stringMatching(
          /and not written again since \(this check did not read it: --read-data reads it anew\); used by public\.files chunk 1 in snapshots/,
        ),
      }),
    ]);
    // The failed checks are on record, naming the chunk.
    const runs = await new RunStore(new LocalStorage(repo)).list({ kind: 'check' });
    const failed = runs.filter((r) => !r.ok);
    expect(failed.length).toBe(4);
    for (const r of failed) {
      expect(r.problems).toEqual([
        expect.objectContaining({ table: 'public.files', chunk: 0, chunkId: id }),
      ]);
    }
  });

  it('a restore fails on the damaged chunk, naming it, and writes no row of it', async () => {
    const repo = await copy();
    const id = table(s1, 'files').chunks[0]!.id;
    await flipByte(chunkFile(repo, id), -20);
    // Into a new database: it is dropped again, nothing stays.
    const full = await runCli(['restore', s1.id, '--to', 'copy', '--create', '--repo', repo], {
      cwd: dir,
      env,
    });
    expect(full.code, full.stderr).toBe(ExitCode.damaged);
    expect(full.stderr).toContain(`chunk ${id} is damaged`);
    expect(
      await sql(
        server,
        'postgres',
        `SELECT 1 FROM pg_database WHERE datname = 'restored_${source}'`,
      ),
    ).toEqual([]);
    // Into the live database (incident 4: put back one tenant's files): nothing is inserted.
    await sql(server, source, 'DELETE FROM files WHERE tenant_id = 1');
    const rows = await runCli(
      [
        'restore',
        s1.id,
        '--to',
        'prod',
        '--table',
        'files',
        '--where',
        'tenant_id = 1',
        '--confirm',
        'prod',
        '--repo',
        repo,
      ],
      { cwd: dir, env },
    );
    expect(rows.code, rows.stderr).toBe(ExitCode.damaged);
    expect(rows.stderr).toContain(`chunk ${id} is damaged`);
    expect(
      (await sql(server, source, 'SELECT count(*) AS n FROM files WHERE tenant_id = 1'))[0]?.n,
    ).toBe('0');
  });

  it('finds a truncated chunk by its size, without reading data', async () => {
    const repo = await copy();
    const ref = table(s2, 'subscribers').chunks[0]!;
    await truncate(chunkFile(repo, ref.id), Math.floor(ref.stored / 2));
    const [r, withData] = await Promise.all([check(repo), check(repo, '--read-data')]);
    expect(r.code).toBe(ExitCode.damaged);
    expect(errors(r.report)).toEqual([
      expect.objectContaining({
        kind: 'chunk-size',
        chunkId: ref.id,
        snapshots: [s2.id],
        table: 'public.subscribers',
        chunk: 0,
      }),
    ]);
    expect(errors(r.report)[0]!.message).toContain(`${Math.floor(ref.stored / 2)} bytes`);
    // Reading data does not report it twice.
    expect(errors(withData.report).length).toBe(1);
  });

  it('a backup reads a stored chunk only an older snapshot names before reusing it, and writes it again if cut short', async () => {
    const repo = await copy();
    // Only the first snapshot has it: the second backup's own chunk replaced it.
    const ref = table(s1, 'subscribers').chunks[0]!;
    expect(chunkIds(s2).has(ref.id)).toBe(false);
    await truncate(chunkFile(repo, ref.id), 50);
    // The row changed back: a new backup makes that chunk again.
    const revert = (email: string) =>
      sql(server, source, `UPDATE subscribers SET email = '${email}' WHERE id = 1`);
    await revert(originalEmail);
    try {
      const r = await runCli(['backup', 'prod', '--repo', repo, '--json'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { rewrittenChunks: number }).rewrittenChunks).toBe(1);
      const newest = (await new SnapshotStore(new LocalStorage(repo)).all()).at(-1)!;
      // The new manifest records the whole chunk's size, not the cut one.
      expect(table(newest, 'subscribers').chunks[0]).toMatchObject({
        id: ref.id,
        stored: ref.stored,
      });
      // And the older snapshot that used it is whole again.
      const after = await check(repo, '--read-data');
      expect(after.code, JSON.stringify(errors(after.report))).toBe(ExitCode.ok);
      // A whole chunk of an older snapshot is reused (read, not written).
      const again = await runCli(['backup', 'prod', '--repo', repo, '--json'], {
        cwd: dir,
        env,
      });
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({
        rewrittenChunks: 0,
        totals: { newChunks: 0 },
      });
    } finally {
      await revert('changed@example.com');
    }
  });

  it('a backup writes a damaged chunk again instead of reusing it, and the snapshots using it restore again', async () => {
    const repo = await copy();
    // (Unchanged in the source since the second snapshot: a new backup has the same chunk.)
    const ref = table(s2, 'subscribers').chunks[0]!;
    const backup = async () => {
      const r = await runCli(['backup', 'prod', '--repo', repo, '--json'], { cwd: dir, env });
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { rewrittenChunks: number }).rewrittenChunks;
    };
    // Cut short (a full disk, a partial copy): of another size than the previous snapshot recorded.
    await truncate(chunkFile(repo, ref.id), 50);
    expect(await backup()).toBe(1);
    const repaired = await check(repo, '--read-data');
    expect(repaired.code, JSON.stringify(errors(repaired.report))).toBe(ExitCode.ok);
    expect(repaired.report.totals.snapshots).toBe(3);

    // A flipped byte keeps the size: reused until something reads it.
    await flipByte(chunkFile(repo, ref.id), -20);
    expect(await backup()).toBe(0);
    const found = await check(repo, '--read-data');
    expect(found.code).toBe(ExitCode.damaged);
    expect(errors(found.report).map((f) => f.chunkId)).toEqual([ref.id]);
    expect(errors(found.report)[0]!.hint).toContain(
      'the next backup of the target writes the chunk again',
    );
    // A check that does not read it does not clear it: status, list and the
    // next backup keep knowing (status turned OK, and the backup reused it).
    expect((await check(repo)).code).toBe(ExitCode.damaged);
    const damagedNow = async () => {
      const st = await runCli(['status', '--repo', repo, '--repository-only', '--json'], {
        cwd: dir,
      });
      const kinds = (
        JSON.parse(st.stdout) as { targets: Array<{ findings: Array<{ kind: string }> }> }
      ).targets.flatMap((t) => t.findings.map((f) => f.kind));
      const list = await runCli(['list', '--repo', repo], { cwd: dir });
      return { status: kinds.includes('chunks-damaged'), list: list.stdout.includes('DAMAGED') };
    };
    expect(await damagedNow()).toEqual({ status: true, list: true });
    // Once check has named it, the next backup writes it again.
    const human = await runCli(['backup', 'prod', '--repo', repo], { cwd: dir, env });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain('rewrote 1 damaged chunk(s) already in the repository');
    expect(await damagedNow()).toEqual({ status: false, list: false });
    const clean = await check(repo, '--read-data');
    expect(clean.code, JSON.stringify(errors(clean.report))).toBe(ExitCode.ok);
    expect(clean.report.totals.snapshots).toBe(5);
    // And only once: the backup after it reuses the chunk.
    expect(await backup()).toBe(0);
  });

  it('finds a deleted chunk and names every snapshot using it', async () => {
    const repo = await copy();
    const id = table(s1, 'tenants').chunks[0]!.id;
    await rm(chunkFile(repo, id));
    const r = await check(repo);
    expect(r.code).toBe(ExitCode.damaged);
    expect(errors(r.report)).toEqual([
      expect.objectContaining({
        kind: 'chunk-missing',
        chunkId: id,
        snapshots: [s1.id, s2.id],
        table: 'public.tenants',
        chunk: 0,
      }),
    ]);
    expect(errors(r.report)[0]!.message).toMatch(new RegExp(`^chunk ${id} is missing; used by`));
    // status says so too (it read ok until a verify found it).
    const s = await runCli(['status', '--repo', repo, '--repository-only', '--json'], { cwd: dir });
    const prod = (
      JSON.parse(s.stdout) as {
        targets: Array<{
          target: string;
          findings: Array<{ kind: string; severity: string; message: string }>;
        }>;
      }
    ).targets.find((t) => t.target === 'prod')!;
    expect(prod.findings.find((f) => f.kind === 'chunks-damaged')).toMatchObject({
      severity: 'critical',
      message: expect.stringContaining(
        `1 chunk(s) found missing (by check at ${(await new RunStore(new LocalStorage(repo)).newest({ kind: 'check' }))!.finishedAt}: chunk ${id} is missing; used by`,
      ),
    });
    expect(prod.findings.find((f) => f.kind === 'chunks-damaged')!.message).toContain(
      `snapshot(s) ${s1.id}, ${s2.id} of "prod" cannot be restored as they are`,
    );
  });

  it('finds a manifest with flipped bytes and a truncated one, naming the snapshot and file', async () => {
    const garbled = await copy();
    await flipByte(manifestFile(garbled, s1.id), 0);
    await flipByte(manifestFile(garbled, s1.id), 200);
    const truncated = await copy();
    const size = (await readFile(manifestFile(truncated, s2.id))).length;
    await truncate(manifestFile(truncated, s2.id), Math.floor(size / 2));
    const cases = [
      [garbled, s1, s2],
      [truncated, s2, s1],
    ] as const;
    const reports = await Promise.all(cases.map(([repo]) => check(repo, '--read-data')));
    for (const [i, [, bad, good]] of cases.entries()) {
      const r = reports[i]!;
      expect(r.code).toBe(ExitCode.damaged);
      expect(errors(r.report)).toEqual([
        expect.objectContaining({
          kind: 'manifest-unreadable',
          snapshots: [bad.id],
          object: `snapshots/${bad.id}.json`,
        }),
      ]);
      expect(errors(r.report)[0]!.message).toContain('not valid JSON');
      // The other snapshot is still checked in full; the damaged one's own
      // chunks look unused, and the report warns before pruning them.
      expect(r.report.totals.snapshotsChecked).toBe(1);
      expect(r.report.totals.chunksRead).toBe(chunkIds(good).size);
      const own = [...chunkIds(bad)].filter((id) => !chunkIds(good).has(id)).sort();
      expect(r.report.unreferencedChunks).toEqual(own);
      const info = r.report.findings.find((f) => f.kind === 'chunks-unreferenced');
      expect(info?.message).toContain(`unreadable snapshot(s) ${bad.id}`);
    }
  });

  it('finds a manifest whose LSN lost a bit (valid JSON, another moment): its checksum no longer matches', async () => {
    const repo = await copy();
    const file = manifestFile(repo, s2.id);
    const text = await readFile(file, 'utf8');
    const lsn = (JSON.parse(text) as { lsn: string }).lsn;
    // One hex digit of the LSN one bit off: before, check passed and restore --at read the log from the wrong place.
    const last = lsn.at(-1)!;
    const flipped = `${lsn.slice(0, -1)}${(Number.parseInt(last, 16) ^ 1).toString(16).toUpperCase()}`;
    await writeFile(file, text.replace(`"lsn":"${lsn}"`, `"lsn":"${flipped}"`));
    const r = await check(repo);
    expect(r.code).toBe(ExitCode.damaged);
    expect(errors(r.report)).toEqual([
      expect.objectContaining({
        kind: 'manifest-invalid',
        snapshots: [s2.id],
        message: expect.stringContaining('manifest does not match its checksum'),
      }),
    ]);
    const restore = await runCli(['show', s2.id, '--repo', repo], { cwd: dir, env });
    expect(restore.code).toBe(ExitCode.damaged);
  });

  it('goes on without a damaged manifest: list and status name it, restore takes the newest readable, prune refuses', async () => {
    const repo = await copy();
    const size = (await readFile(manifestFile(repo, s2.id))).length;
    await truncate(manifestFile(repo, s2.id), Math.floor(size / 2));
    const cli = (...args: string[]) => runCli([...args, '--repo', repo], { cwd: dir, env });

    const list = await cli('list');
    expect(list.code).toBe(ExitCode.damaged);
    expect(list.stdout).toContain(s1.id);
    expect(list.stderr).toContain(`warning: snapshot ${s2.id}: manifest is not valid JSON`);

    const status = await cli('status', '--target', 'prod', '--repository-only', '--json');
    expect(status.code).toBe(ExitCode.critical);
    const prod = (
      JSON.parse(status.stdout) as {
        targets: Array<{ target: string; findings: Array<{ kind: string; message: string }> }>;
      }
    ).targets.find((t) => t.target === 'prod')!;
    expect(prod.findings).toContainEqual(
      expect.objectContaining({
        kind: 'snapshot-unreadable',
        message: expect.stringContaining(`snapshot ${s2.id} of "prod" cannot be restored`),
      }),
    );

    // "latest" is the newest snapshot that can be read, said on stderr.
    const into = await freshDatabase(server, 'from_s1');
    await sql(server, 'postgres', `DROP DATABASE ${into}`);
    const url = `postgres://postgres:${encodeURIComponent(server.password)}@${server.host}:${server.port}/${into}`;
    const restore = await cli('restore', 'latest', '--to', url, '--create', '--confirm', into);
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stderr).toContain(`warning: snapshot ${s2.id}: manifest is not valid JSON`);
    expect(restore.stdout + restore.stderr).toContain(s1.id);
    const [row] = await sql(server, into, 'SELECT email FROM subscribers WHERE id = 1');
    expect(row!.email).not.toBe('changed@example.com');
    await sql(server, 'postgres', `DROP DATABASE ${into}`);

    // The damaged snapshot itself, asked for by id: exit 8.
    const named = await cli('show', s2.id);
    expect(named.code).toBe(ExitCode.damaged);

    // prune cannot tell which chunks the damaged snapshot uses: it deletes nothing.
    const config = path.join(dir, `prune-${copies}.yaml`);
    await writeFile(
      config,
      `targets:\n  prod:\n    host: ${server.host}\n    port: ${server.port}\n    database: ${source}\n    user: postgres\n    password_env: PW\nretention:\n  keep_last: 1\n`,
    );
    const files = async () => (await readdir(repo, { recursive: true })).sort();
    const before = await files();
    const prune = await cli('prune', '--config', config);
    expect(prune.code).toBe(ExitCode.damaged);
    expect(prune.stderr).toContain('prune refused');
    expect(prune.stderr).toContain('Nothing was deleted');
    expect((await files()).filter((f) => !f.startsWith('runs'))).toEqual(
      before.filter((f) => !f.startsWith('runs')),
    );
  });

  it('treats a deleted manifest as a snapshot gone: clean, its own chunks unreferenced', async () => {
    const repo = await copy();
    await rm(manifestFile(repo, s1.id));
    const r = await check(repo, '--read-data');
    expect(r.code, r.stdout).toBe(ExitCode.ok);
    expect(r.report.totals).toMatchObject({ snapshots: 1, errors: 0, warnings: 0 });
    const own = [...chunkIds(s1)].filter((id) => !chunkIds(s2).has(id)).sort();
    expect(own.length).toBeGreaterThan(0);
    expect(r.report.unreferencedChunks).toEqual(own);
    const bytes = s1.tables
      .flatMap((t) => t.chunks)
      .filter((c) => own.includes(c.id))
      .reduce((a, c) => a + c.stored, 0);
    expect(r.report.totals.unreferencedBytes).toBe(bytes);
    expect(r.report.findings).toEqual([
      expect.objectContaining({ severity: 'info', kind: 'chunks-unreferenced' }),
    ]);
    // No prune removed it (no tombstone): status says a snapshot went missing.
    const status = await runCli(
      ['status', '--target', 'prod', '--repository-only', '--json', '--repo', repo],
      { cwd: dir },
    );
    expect(status.code).toBe(ExitCode.critical);
    const prod = (
      JSON.parse(status.stdout) as {
        targets: Array<{ findings: Array<{ kind: string; message: string; snapshot?: string }> }>;
      }
    ).targets[0]!;
    expect(prod.findings).toContainEqual(
      expect.objectContaining({
        kind: 'snapshot-missing',
        snapshot: s1.id,
        message: expect.stringContaining('is gone from the repository and no prune removed it'),
      }),
    );
  });

  it('warns about an unreadable run record (exit 1), and stops at an exclusive lock (exit 7)', async () => {
    const repo = await copy();
    const runsDir = path.join(repo, 'runs', 'prod');
    const [one] = (await new RunStore(new LocalStorage(repo)).list({ target: 'prod' })).map(
      (r) => r.id,
    );
    await truncate(path.join(runsDir, `${one}.json`), 10);
    const r = await check(repo);
    expect(r.code).toBe(ExitCode.failed);
    expect(r.report.findings).toEqual([
      expect.objectContaining({
        severity: 'warning',
        kind: 'run-unreadable',
        object: `runs/prod/${one}.json`,
      }),
    ]);
    // Status says so too (it was ok: a garbled record of a failed backup hid the failure).
    const st = await runCli(['status', '--repo', repo, '--repository-only', '--json'], {
      cwd: dir,
    });
    expect(st.code, st.stderr).not.toBe(ExitCode.ok);
    const findings = (
      JSON.parse(st.stdout) as {
        targets: Array<{ findings: Array<{ kind: string; message: string }> }>;
      }
    ).targets.flatMap((t) => t.findings);
    expect(findings.find((f) => f.kind === 'run-unreadable')?.message).toContain(
      `(runs/prod/${one}.json) cannot be read`,
    );
    // A running prune (exclusive lock of a live process on this host) must not have chunks checked under it.
    await holdPruneLock(repo);
    const locked = await runCli(['check', '--repo', repo], { cwd: dir });
    expect(locked.code).toBe(ExitCode.locked);
    expect(locked.stderr).toContain('locked exclusively by "prune"');
  });

  it('rejects bad usage (exit 3) and a missing repository (exit 6)', async () => {
    // The percentage forms are unit-tested (parseReadDataSubset); here, that the CLI maps them to exit 3.
    const cases = [
      ['--read-data-subset', '0%'],
      ['--read-data-subset', '10'],
      ['--read-data', '--read-data-subset', '5%'],
    ];
    const results = await Promise.all(
      cases.map((args) => runCli(['check', '--repo', base, ...args], { cwd: dir })),
    );
    for (const [i, r] of results.entries()) {
      const args = cases[i]!.join(' ');
      expect(`${args} → ${r.code}`).toBe(`${args} → ${ExitCode.usage}`);
    }
    const none = await runCli(['check', '--repo', path.join(dir, 'nothing')], { cwd: dir });
    expect(none.code).toBe(ExitCode.repository);
    expect(none.stderr).toContain('no Flashback repository');
    // A file where the repository should be: named, exit 6 (was an internal error).
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'not a repository');
    for (const args of [['check'], ['list'], ['init']]) {
      const r = await runCli([...args, '--repo', file], { cwd: dir });
      expect(`${args[0]} → ${r.code}`).toBe(`${args[0]} → ${ExitCode.repository}`);
      expect(r.stderr).toContain(`${file} is a file, not a repository directory`);
    }
  });
});
