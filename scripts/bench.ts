/**
 * `npm run bench`: Flashback against the tools users have today, in one run,
 * on one server: pg_dump -Fc, pg_dump -Fd -j2, raw COPY TO a discard sink
 * (the ceiling), flashback backup; then pg_restore -j2 against flashback
 * restore; `flashback check --read-data` (MB/s) and `flashback verify` (as a
 * ratio to the restore); then a repeat backup after 1% of rows changed. Prints times,
 * sizes and ratios; `--json` prints them as data.
 *
 * Uses PostgreSQL 15 (embedded) because Debian's pg_dump 15 refuses newer
 * servers. Needs /usr/bin/pg_dump and pg_restore (package postgresql-client-15).
 * Scale with BENCH_TENANTS (default 2700: about 5.1 million rows).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { to as copyTo } from 'pg-copy-streams';
import { backup } from '../src/backup/backup.js';
import { parseConfig } from '../src/config/load.js';
import { resolveTarget } from '../src/config/targets.js';
import { connectParams } from '../src/pg/connect.js';
import { EmbeddedServer } from '../src/pg/embedded.js';
import type { SchemaModel } from '../src/pg/schema/model.js';
import { Repository } from '../src/repo/repository.js';
import type { SnapshotManifest } from '../src/repo/snapshots.js';
import { restore } from '../src/restore/restore.js';
import { createSampleDatabase } from '../src/sample/saas.js';
import { LocalStorage } from '../src/storage/local.js';
import { checkRepository } from '../src/verify/check.js';
import { embeddedScratch } from '../src/verify/scratch.js';
import { verifySnapshot } from '../src/verify/verify.js';

const run = promisify(execFile);
const json = process.argv.includes('--json');
const tenants = Number(process.env.BENCH_TENANTS ?? 2700);

interface Row {
  readonly name: string;
  readonly seconds: number;
  readonly bytes?: number | undefined;
  readonly note?: string | undefined;
}

function log(s: string): void {
  if (!json) process.stderr.write(`${s}\n`);
}

async function time<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const v = await f();
  return [(performance.now() - t) / 1000, v];
}

async function du(p: string): Promise<number> {
  const s = await stat(p);
  if (!s.isDirectory()) return s.size;
  let total = 0;
  for (const e of await readdir(p, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

async function main(): Promise<void> {
  for (const bin of ['/usr/bin/pg_dump', '/usr/bin/pg_restore']) {
    if (!existsSync(bin))
      throw new Error(`${bin} is missing: apt-get install postgresql-client-15`);
  }
  const work = await mkdtemp(path.join(os.tmpdir(), 'flashback-bench-'));
  const server = await EmbeddedServer.start({
    major: 15,
    settings: { max_wal_size: '4GB', checkpoint_timeout: '30min' },
  });
  const env = { ...process.env, PGPASSWORD: server.password };
  const pgArgs = ['-h', server.host, '-p', String(server.port), '-U', server.user];
  try {
    const admin = await connectParams('bench', server.connection());
    await admin.query('CREATE DATABASE bench');
    const db = await connectParams('bench', server.connection('bench'));
    log(`generating the data set (${tenants} tenants)…`);
    const [genSecs, counts] = await time(() => createSampleDatabase(db, { tenants }));
    await db.query('VACUUM ANALYZE');
    const rows = Object.values(counts).reduce((a, b) => a + b, 0);
    const dbSize = Number(
      (await db.query<{ s: string }>("SELECT pg_database_size('bench')::text AS s")).rows[0]?.s,
    );
    log(
      `  ${rows.toLocaleString('en-US')} rows, ${(dbSize / 1e6).toFixed(0)} MB on disk, generated in ${genSecs.toFixed(1)} s`,
    );
    const tables = Object.keys(counts);
    const results: Row[] = [];

    // Each timed step starts with no checkpoint due: otherwise the WAL of
    // the steps before (the data set, a restore) brings one on during a
    // later step, and the later of the two restores pays for both.
    const settle = () => admin.query('CHECKPOINT');
    await settle();
    log('raw COPY TO a discard sink (2 connections)…');
    let copyBytes = 0;
    const [copySecs] = await time(async () => {
      const queue = [...tables];
      await Promise.all(
        [0, 1].map(async () => {
          const c = await connectParams('bench', server.connection('bench'));
          for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
            await pipeline(
              c.query(copyTo(`COPY ${t} TO STDOUT`)),
              new Writable({
                write(chunk: Buffer, _e, cb) {
                  copyBytes += chunk.length;
                  cb();
                },
              }),
            );
          }
          await c.end();
        }),
      );
    });
    results.push({
      name: 'raw COPY TO (ceiling)',
      seconds: copySecs,
      bytes: copyBytes,
      note: 'uncompressed COPY text',
    });

    log('pg_dump -Fc…');
    const fc = path.join(work, 'dump.fc');
    const [fcSecs] = await time(() =>
      run('/usr/bin/pg_dump', [...pgArgs, '-Fc', '-f', fc, 'bench'], { env }),
    );
    results.push({ name: 'pg_dump -Fc', seconds: fcSecs, bytes: await du(fc) });

    log('pg_dump -Fd -j2…');
    const fd = path.join(work, 'dump.d');
    const [fdSecs] = await time(() =>
      run('/usr/bin/pg_dump', [...pgArgs, '-Fd', '-j2', '-f', fd, 'bench'], { env }),
    );
    results.push({ name: 'pg_dump -Fd -j2', seconds: fdSecs, bytes: await du(fd) });

    log('flashback backup…');
    const repoDir = path.join(work, 'repo');
    const repo = await Repository.init(new LocalStorage(repoDir));
    const config = parseConfig(
      `targets:\n  bench:\n    host: ${server.host}\n    port: ${server.port}\n    database: bench\n    user: ${server.user}\n    password_env: PGPASSWORD\n    protected: false\n  restored:\n    host: ${server.host}\n    port: ${server.port}\n    database: restored\n    user: ${server.user}\n    password_env: PGPASSWORD\n    protected: false\n`,
      'bench',
    );
    const target = resolveTarget('bench', config, env);
    const [fbSecs, first] = await time(() => backup({ target, repo, workers: 2 }));
    results.push({
      name: 'flashback backup',
      seconds: fbSecs,
      bytes: first.manifest.totals.storedBytes,
    });

    await settle();
    log('pg_restore -j2…');
    await admin.query('CREATE DATABASE pgrestored');
    const [prSecs] = await time(() =>
      run('/usr/bin/pg_restore', [...pgArgs, '-j2', '-d', 'pgrestored', fd], { env }),
    );
    results.push({ name: 'pg_restore -j2 (from -Fd)', seconds: prSecs });

    await settle();
    log('flashback restore…');
    const io = { input: process.stdin, output: { write: () => true } };
    const [frSecs] = await time(() =>
      restore({
        manifest: first.manifest as SnapshotManifest<SchemaModel>,
        repo,
        target: resolveTarget('restored', config, env),
        create: true,
        io,
      }),
    );
    results.push({ name: 'flashback restore', seconds: frSecs });

    // A restore-test: scratch server start, restore, and the chunk-by-chunk
    // read-back, all of it (what `flashback verify` costs end to end).
    log('flashback verify…');
    const [verifySecs, verified] = await time(async () => {
      const scratch = await embeddedScratch(server.major);
      try {
        return await verifySnapshot({
          manifest: first.manifest as SnapshotManifest<SchemaModel>,
          repo,
          scratch,
        });
      } finally {
        await scratch.close();
      }
    });
    if (!verified.ok) throw new Error(`verify failed: ${verified.problems[0]?.message}`);
    log('flashback check --read-data…');
    const [checkSecs, checked] = await time(() => checkRepository({ repo, readDataPercent: 100 }));
    if (checked.totals.errors > 0) throw new Error('check found damage in a fresh repository');
    results.push({
      name: 'flashback check --read-data',
      seconds: checkSecs,
      bytes: checked.totals.bytesRead,
      note: `${(checked.totals.bytesRead / 1e6 / checkSecs).toFixed(0)} MB/s stored, ${(first.manifest.totals.bytes / 1e6 / checkSecs).toFixed(0)} MB/s of table data`,
    });
    results.push({
      name: 'flashback verify',
      seconds: verifySecs,
      note: `restore ${verified.restoreSeconds.toFixed(1)} s + compare ${verified.compareSeconds.toFixed(1)} s + scratch server`,
    });

    // 1% of rows changed the way applications change them: recent rows are
    // updated (the newest 1% of each large table). Uniformly scattered changes
    // are the worst case for chunk-level deduplication; measured separately.
    log('changing the newest 1% of rows, backing up again…');
    const touched: Record<string, string> = {
      subscribers: 'created_at',
      workflow_steps: 'updated_at',
      files: 'created_at',
    };
    for (const [t, col] of Object.entries(touched)) {
      await db.query(
        `UPDATE ${t} SET ${col} = ${col} + interval '1 second' WHERE id > (SELECT max(id) - count(*) / 100 FROM ${t})`,
      );
    }
    const [fb2Secs, second] = await time(() => backup({ target, repo, workers: 2 }));
    results.push({
      name: 'backup after newest 1% changed',
      seconds: fb2Secs,
      bytes: second.manifest.totals.newBytes,
      note: 'new bytes stored',
    });
    log('changing a uniformly scattered 1% of rows, backing up again…');
    await db.query(`UPDATE files SET name = name || '.v2' WHERE id % 100 = 7`);
    const [fb3Secs, third] = await time(() => backup({ target, repo, workers: 2 }));
    results.push({
      name: 'backup after scattered 1% of files',
      seconds: fb3Secs,
      bytes: third.manifest.totals.newBytes,
      note: 'new bytes stored (worst case)',
    });
    await db.end();
    await admin.end();

    const by = (n: string): Row => results.find((r) => r.name === n)!;
    const ratios = {
      backupVsPgDumpFc: by('pg_dump -Fc').seconds / fbSecs,
      backupVsPgDumpFdJ2: by('pg_dump -Fd -j2').seconds / fbSecs,
      backupThroughputVsRawCopy: copySecs / fbSecs,
      restoreVsPgRestoreJ2: prSecs / frSecs,
      verifyVsRestore: verifySecs / frSecs,
      checkReadDataStoredMBps: checked.totals.bytesRead / 1e6 / checkSecs,
      repeatBackupNewBytesVsFirst:
        second.manifest.totals.newBytes / first.manifest.totals.storedBytes,
      scatteredRepeatNewBytesVsFirst:
        third.manifest.totals.newBytes / first.manifest.totals.storedBytes,
    };
    const report = {
      machine: {
        cpus: os.cpus().length,
        cpu: os.cpus()[0]?.model,
        memoryGB: Math.round(os.totalmem() / 2 ** 30),
        node: process.version,
        postgres: server.binaries.version,
      },
      rows,
      dbBytes: dbSize,
      copyBytes,
      results,
      ratios,
    };
    if (json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      const mb = (b: number | undefined) => (b === undefined ? '' : `${(b / 1e6).toFixed(1)} MB`);
      process.stdout.write(
        `\n${rows.toLocaleString('en-US')} rows, ${mb(dbSize)} on disk, ${mb(copyBytes)} of COPY text; ${report.machine.cpus} cores (${report.machine.cpu}), Node ${process.version}, PostgreSQL ${server.binaries.version}\n\n`,
      );
      for (const r of results)
        process.stdout.write(
          `  ${r.name.padEnd(36)} ${r.seconds.toFixed(2).padStart(8)} s  ${mb(r.bytes).padStart(10)}  ${r.note ?? ''}\n`,
        );
      process.stdout.write('\nratios (higher is better for Flashback, except the last)\n');
      process.stdout.write(
        `  backup speed vs pg_dump -Fc          ${ratios.backupVsPgDumpFc.toFixed(2)}x   (target >= 2)\n`,
      );
      process.stdout.write(
        `  backup speed vs pg_dump -Fd -j2      ${ratios.backupVsPgDumpFdJ2.toFixed(2)}x\n`,
      );
      process.stdout.write(
        `  backup throughput vs raw COPY        ${(ratios.backupThroughputVsRawCopy * 100).toFixed(0)}%   (target >= 70%)\n`,
      );
      process.stdout.write(
        `  restore speed vs pg_restore -j2      ${ratios.restoreVsPgRestoreJ2.toFixed(2)}x   (target >= 1.5)\n`,
      );
      process.stdout.write(
        `  verify time vs restore time          ${ratios.verifyVsRestore.toFixed(2)}x   (target <= 1.3; lower is better)\n`,
      );
      process.stdout.write(
        `  repeat backup, new bytes vs first    ${(ratios.repeatBackupNewBytesVsFirst * 100).toFixed(1)}%   (target <= 5%; newest 1% of rows changed)\n`,
      );
      process.stdout.write(
        `  same, scattered 1% of one table      ${(ratios.scatteredRepeatNewBytesVsFirst * 100).toFixed(1)}%   (worst case for chunk deduplication)\n`,
      );
    }
  } finally {
    await server.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
