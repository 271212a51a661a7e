/**
 * `npm run bench` (third part): undoing a bad DELETE of 100,000 rows in a
 * 10-million-row table, against loading the same rows with COPY.
 *
 * A table `big (id bigint primary key, tenant_id int, payload text)` of
 * BENCH_UNDO_ROWS rows (default 10,000,000) is backed up while capture runs;
 * then two bad DELETEs of BENCH_UNDO_DELETED rows each (default 100,000):
 * one of a contiguous key range (a tenant whose rows were inserted together)
 * and one scattered over the whole table (every n-th row: the worst case for
 * reading the snapshot). Each is undone with `undo --tx … --apply`, timed
 * end to end (reading the log, staging the rows from the snapshot, applying).
 *
 * The baseline is loading the same rows with COPY into the table they were
 * deleted from: a twin of `big`, built the same way in a database outside
 * the target, with the same rows deleted. That is the work any way of putting
 * the rows back must do (each key checked against the table's index, whose
 * entries for the deleted rows lead to heap pages not yet cleaned; index
 * inserts spread over the table). COPY into an empty table, the floor of the
 * bare write, is printed too.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { backup } from '../src/backup/backup.js';
import { capture } from '../src/capture/capture.js';
import { parseConfig } from '../src/config/load.js';
import { resolveTarget } from '../src/config/targets.js';
import { connectParams, type PgClient } from '../src/pg/connect.js';
import { EmbeddedServer } from '../src/pg/embedded.js';
import { Repository } from '../src/repo/repository.js';
import { LocalStorage } from '../src/storage/local.js';
import { impactReport } from '../src/undo/impact.js';
import { undo } from '../src/undo/undo.js';

const json = process.argv.includes('--json');
const rows = Number(process.env.BENCH_UNDO_ROWS ?? 10_000_000);
const deleted = Number(process.env.BENCH_UNDO_DELETED ?? 100_000);

function log(s: string): void {
  if (!json) process.stderr.write(`${s}\n`);
}

async function time<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const v = await f();
  return [(performance.now() - t) / 1000, v];
}

/** The rows a statement selects, as COPY text (kept in memory: 100k rows are a few MB). */
async function copyOut(c: PgClient, sql: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of c.query(copyTo(`COPY (${sql}) TO STDOUT`)) as AsyncIterable<Buffer>)
    parts.push(b);
  return Buffer.concat(parts);
}

/** The server's clock, as impact's window bounds are written (UTC, microseconds). */
async function clock(c: PgClient): Promise<string> {
  return (
    await c.query<{ t: string }>(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    )
  ).rows[0]!.t;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'flashback-bench-undo-'));
  const server = await EmbeddedServer.start({ major: 17 });
  try {
    const admin = await connectParams('bench', server.connection());
    await admin.query('CREATE DATABASE bench');
    await admin.query('CREATE DATABASE bench_twin');
    await admin.end();
    const db = await connectParams('bench', server.connection('bench'));
    const twin = await connectParams('bench', server.connection('bench_twin'));
    log(`creating a table of ${rows.toLocaleString('en-US')} rows, and its twin…`);
    // Tenants' rows are inserted in blocks (contiguous keys); payloads ~60 bytes.
    const create = `CREATE TABLE big (id bigint PRIMARY KEY, tenant_id int NOT NULL, payload text NOT NULL);
       INSERT INTO big SELECT g, (g - 1) / ${deleted} + 1, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, ${rows}) g;
       CREATE TABLE big_copy (LIKE big INCLUDING ALL);`;
    await db.query(create);
    await twin.query(create);
    await db.query('VACUUM ANALYZE big');
    await twin.query('VACUUM ANALYZE big');

    const repo = await Repository.init(new LocalStorage(path.join(work, 'repo')));
    const config = parseConfig(
      `targets:\n  bench:\n    url: ${server.url('bench')}\n    protected: false\n`,
      undefined,
    );
    const target = resolveTarget('bench', config, process.env);
    const stop = new AbortController();
    let ready!: () => void;
    const started = new Promise<void>((r) => {
      ready = r;
    });
    let committed = '0/0';
    const capturing = capture({
      target,
      repo,
      signal: stop.signal,
      heartbeatMs: 500,
      flushIntervalMs: 200,
      onStart: () => ready(),
      onSegment: (s) => {
        committed = s.committed;
      },
    });
    await started;
    log('backup…');
    const [backupSecs] = await time(() => backup({ target, repo, workers: 2 }));

    const lsn = (t: string) => {
      const [a, b] = t.split('/');
      return (BigInt(`0x${a}`) << 32n) | BigInt(`0x${b}`);
    };
    const results: Array<{
      case: string;
      undoSeconds: number;
      /** COPY of the same rows into the table they were deleted from (its twin). */
      copySeconds: number;
      ratio: number;
      /** COPY of the same rows into an empty copy of the table. */
      copyEmptySeconds: number;
      /** `impact --by tenant_id` of the same window (the deleted rows' tenants from the snapshot). */
      impactSeconds: number;
      /** Seconds from each phase's first progress report to the next phase's (`start`: before the first). */
      phases: Array<{ phase: string; seconds: number }>;
    }> = [];
    const cases = [
      {
        name: `contiguous: one tenant's ${deleted.toLocaleString('en-US')} rows`,
        where: `tenant_id = 7`,
      },
      {
        name: `scattered: every ${Math.round(rows / deleted)}th row`,
        where: `id % ${Math.round(rows / deleted)} = 3`,
      },
    ];
    for (const c of cases) {
      const victims = await copyOut(db, `SELECT * FROM big WHERE ${c.where} ORDER BY id`);
      const since = await clock(db);
      await db.query('BEGIN');
      const xid = (await db.query<{ x: string }>('SELECT pg_current_xact_id()::xid::text AS x'))
        .rows[0]!.x;
      await db.query(`DELETE FROM big WHERE ${c.where}`);
      // A position before the commit: capture has stored the transaction once
      // its committed position passes it (read after the commit, the position
      // could include WAL of other databases, which moves it no further).
      const end = (await db.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))
        .rows[0]!.l;
      await db.query('COMMIT');
      const until = await clock(db);
      while (lsn(committed) < lsn(end)) {
        await db.query("SELECT pg_logical_emit_message(false, 'bench', 'x')");
        await new Promise((r) => setTimeout(r, 100));
      }
      // The same rows deleted from the twin (after the wait: capture of
      // another database's WAL does not move the target's commit position).
      await twin.query(`DELETE FROM big WHERE ${c.where}`);
      log(`impact (${c.name})…`);
      const [impactSecs, impact] = await time(() =>
        impactReport({
          repo,
          target: 'bench',
          column: 'tenant_id',
          since: { kind: 'time', at: since },
          until,
        }),
      );
      const hit = impact.rows.reduce((a, r) => a + r.deleted, 0);
      if (hit !== deleted)
        throw new Error(`impact counted ${hit} deleted rows, expected ${deleted}`);
      log(`undo (${c.name})…`);
      // When each phase starts (the first report of each), to say where the time goes.
      const phases: Array<{ phase: string; at: number }> = [];
      const t0 = performance.now();
      const [undoSecs, report] = await time(() =>
        undo({
          repo,
          target,
          selection: { kind: 'tx', xid: Number(xid) },
          mode: 'apply',
          io: { input: Readable.from([]), output: { write: () => true } },
          onProgress: (p) => {
            if (phases.at(-1)?.phase !== p.phase)
              phases.push({ phase: p.phase, at: (performance.now() - t0) / 1000 });
          },
        }),
      );
      const phaseSeconds = phases.map((p, i) => ({
        phase: p.phase,
        seconds: (phases[i + 1]?.at ?? undoSecs) - p.at,
      }));
      phaseSeconds.unshift({ phase: 'start', seconds: phases[0]?.at ?? 0 });
      const back = report.tables.reduce((a, t) => a + t.reinsert, 0);
      if (back !== deleted) throw new Error(`undo put back ${back} rows, expected ${deleted}`);
      log('COPY of the same rows into the twin table, and into an empty one…');
      const [copySecs] = await time(() =>
        pipeline(Readable.from([victims]), twin.query(copyFrom('COPY big FROM STDIN'))),
      );
      await twin.query('TRUNCATE big_copy');
      const [emptySecs] = await time(() =>
        pipeline(Readable.from([victims]), twin.query(copyFrom('COPY big_copy FROM STDIN'))),
      );
      results.push({
        case: c.name,
        undoSeconds: undoSecs,
        copySeconds: copySecs,
        ratio: undoSecs / copySecs,
        copyEmptySeconds: emptySecs,
        impactSeconds: impactSecs,
        phases: phaseSeconds,
      });
    }
    stop.abort();
    await capturing;
    await db.end();
    await twin.end();
    const report = { rows, deleted, backupSeconds: backupSecs, results };
    if (json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      process.stdout.write(
        `\nundo of a bad DELETE of ${deleted.toLocaleString('en-US')} rows in a ${rows.toLocaleString('en-US')}-row table (PostgreSQL ${server.binaries.version})\n\n`,
      );
      for (const r of results) {
        process.stdout.write(
          `  ${r.case.padEnd(40)} undo ${r.undoSeconds.toFixed(2)} s; COPY of the same rows into the table ${r.copySeconds.toFixed(2)} s: ${r.ratio.toFixed(1)}x (into an empty table ${r.copyEmptySeconds.toFixed(2)} s: ${(r.undoSeconds / r.copyEmptySeconds).toFixed(1)}x); impact of the window ${r.impactSeconds.toFixed(2)} s\n`,
        );
        process.stdout.write(
          `  ${''.padEnd(40)} undo's phases: ${r.phases.map((p) => `${p.phase} ${p.seconds.toFixed(2)} s`).join(', ')}\n`,
        );
      }
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
