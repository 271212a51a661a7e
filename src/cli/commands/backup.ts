/** `flashback backup TARGET`: one consistent snapshot into the repository. */
import type { Command } from 'commander';
import { type BackupProgress, backup } from '../../backup/backup.js';
import {
  backupFromLog,
  FROM_LOG,
  type FromLogResult,
  type NothingNew,
  nothingNewInLog,
  staleUnlogged,
  staleUnloggedText,
} from '../../backup/from-log.js';
import { type ResolvedTarget, resolveTarget } from '../../config/targets.js';
import { ExitCode, UsageError } from '../../errors.js';
import { recordRun } from '../../monitor/record.js';
import { slotWaitMessage } from '../../pg/replication/slot-wait.js';
import { formatBytes } from '../../util/format.js';
import type { CliContext } from '../context.js';
import { clock, Progress, rate } from '../progress.js';
import { blockedRestoreWarning, describeUnsupported } from '../unsupported.js';

export function registerBackup(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('backup')
    .description('take a consistent snapshot of a target into the repository')
    .argument('<target>', 'target name or postgres:// URL')
    .option('-j, --workers <n>', 'parallel COPY connections', '2')
    .option(
      '--from-log',
      "build the snapshot from the previous one plus the change log, without reading the target's tables",
    )
    .option('--lsn <lsn>', 'with --from-log: up to this WAL position (default: the end of the log)')
    .option('--json', 'print JSON (the snapshot and its totals)')
    .addHelpText(
      'after',
      `
Reads every table in primary-key order inside one exported snapshot (a
temporary logical replication slot gives its exact LSN), cuts rows into
key-defined chunks, compresses and stores each chunk once. The snapshot's
manifest is written last: an interrupted backup leaves no snapshot.

With --from-log, the target's tables are not read: the new snapshot is the
previous one with the change log (\`flashback capture\`) merged in, cut into
the same chunks a direct backup at that LSN would give (keys of integer
types, uuid, boolean and COLLATE "C" text; other key types are refused).
Without --lsn, when the newest snapshot already reaches the end of the
stored log, nothing is written ("nothing to do", exit 0).

Exit codes: 0 committed; 1 failed (nothing committed); 4 target identity
refused; 5 unreachable; 6 no repository; 7 repository locked; 8 (--from-log)
a snapshot chunk or change-log segment it reads is missing or damaged; 130
interrupted.`,
    )
    .action(
      async (
        ref: string,
        opts: { workers: string; fromLog?: boolean; lsn?: string },
        self: Command,
      ) => {
        if (opts.fromLog === true) {
          process.exitCode = await runFromLog(context(self), ref, opts.lsn);
          return;
        }
        if (opts.lsn !== undefined) throw new UsageError('--lsn goes with --from-log');
        process.exitCode = await runBackup(context(self), ref, opts);
      },
    );
}

async function runFromLog(ctx: CliContext, ref: string, lsn: string | undefined): Promise<number> {
  if (lsn !== undefined && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(lsn)) {
    throw new UsageError(`--lsn: not a WAL position: "${lsn}"`, { hint: 'e.g. 0/16B3748' });
  }
  const { config } = await ctx.config();
  // The source is not read: a configured target needs no password for this.
  const target = {
    name: config.targets[ref] !== undefined ? ref : resolveTarget(ref, config, ctx.env).name,
  };
  const repo = await ctx.repository();
  const signal = ctx.interruptSignal();
  const { value: r } = await recordRun<FromLogResult | NothingNew>(
    repo,
    { kind: 'backup', target: target.name, trigger: 'command', details: FROM_LOG },
    async () => {
      // Up to the log's end (no --lsn) when the newest snapshot already reaches it: nothing to add.
      const idle = lsn === undefined ? await nothingNewInLog(repo, target.name) : undefined;
      if (idle !== undefined) return { value: idle, details: { skipped: idle.reason } };
      const v = await backupFromLog({
        repo,
        target: target.name,
        point: lsn === undefined ? undefined : { kind: 'lsn', lsn },
        signal,
      });
      if ('reason' in v) return { value: v, details: { skipped: v.reason } };
      const t = v.manifest.totals;
      return {
        value: v,
        snapshot: v.manifest.id,
        details: { bytes: t.bytes, newBytes: t.newBytes, rows: t.rows, fromLog: v.base },
      };
    },
    (err) =>
      ctx.err(
        `flashback: warning: could not record this run in the repository: ${(err as Error).message}\n`,
      ),
  );
  if ('reason' in r) {
    if (ctx.json) ctx.printJson({ snapshot: null, newest: r.newest, skipped: r.reason });
    else ctx.out(`nothing to do: ${r.reason}\n`);
    return ExitCode.ok;
  }
  const m = r.manifest;
  const stale = staleUnlogged(m);
  if (stale.length > 0) ctx.err(`flashback: warning: ${staleUnloggedText(stale, r.base)}\n`);
  if (ctx.json) {
    ctx.printJson({
      snapshot: m.id,
      target: m.target,
      lsn: m.lsn,
      base: r.base,
      transactions: r.transactions,
      changes: r.changes,
      seconds: r.seconds,
      totals: m.totals,
    });
    return ExitCode.ok;
  }
  ctx.out(
    `snapshot ${m.id} of ${m.target} committed, from snapshot ${r.base} and ${r.transactions.toLocaleString('en-US')} transaction(s) of the change log (the source's tables were not read)\n`,
  );
  ctx.out(
    `  tables ${m.totals.tables}, rows ${m.totals.rows.toLocaleString('en-US')}, data ${formatBytes(m.totals.bytes)}, new in repository ${formatBytes(m.totals.newBytes)} in ${m.totals.newChunks} chunk(s)\n`,
  );
  ctx.out(`  lsn ${m.lsn}, took ${r.seconds.toFixed(1)} s\n`);
  return ExitCode.ok;
}

async function runBackup(ctx: CliContext, ref: string, opts: { workers: string }): Promise<number> {
  const workers = Number(opts.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    throw new UsageError(`--workers: expected a whole number from 1 to 64, got "${opts.workers}"`);
  }
  const { config } = await ctx.config();
  const repo = await ctx.repository();
  const onRecordError = (err: unknown) =>
    ctx.err(
      `flashback: warning: could not record this run in the repository: ${(err as Error).message}\n`,
    );
  let target: ResolvedTarget;
  try {
    target = resolveTarget(ref, config, ctx.env);
  } catch (err) {
    // A configured target that cannot be used (its password variable unset)
    // is a failed backup of it: recorded, so that status shows it.
    if (config.targets[ref] !== undefined) {
      await recordRun(
        repo,
        { kind: 'backup', target: ref, trigger: 'command' },
        () => Promise.reject(err),
        { onRecordError },
      ).catch(() => {});
    }
    throw err;
  }
  const progress = new Progress(ctx.io.stderr, !ctx.json);
  const onProgress = (p: BackupProgress): void =>
    progress.update(() => {
      const secs = progress.seconds;
      // An ETA from the first few chunks (or from time spent on setup) is
      // noise: show it once 5% of the estimated data is through.
      const eta =
        p.estimatedBytes > p.bytes && p.bytes >= p.estimatedBytes * 0.05
          ? ((p.estimatedBytes - p.bytes) * secs) / p.bytes
          : 0;
      return `backup ${target.name}: ${p.tablesDone}/${p.tablesTotal} tables, ${p.rows.toLocaleString('en-US')} rows, ${formatBytes(p.bytes)}, ${rate(p.bytes, secs)}, new ${formatBytes(p.newBytes)}${eta > 0 ? `, ETA ${clock(eta)}` : ''}`;
    });
  const signal = ctx.interruptSignal();
  const { value: result } = await recordRun(
    repo,
    { kind: 'backup', target: target.name, trigger: 'command' },
    async () => {
      const r = await backup({
        target,
        repo,
        workers,
        signal,
        onProgress,
        // Said, not drawn over: a wait that can last hours needs its reason on record.
        onWait: (w) => {
          progress.done();
          ctx.err(`flashback: warning: ${slotWaitMessage(`backup ${target.name}`, w)}\n`);
        },
      });
      return {
        value: r,
        snapshot: r.manifest.id,
        details: {
          bytes: r.manifest.totals.bytes,
          newBytes: r.manifest.totals.newBytes,
          rows: r.manifest.totals.rows,
          ...(r.rewrittenChunks > 0 ? { rewrittenChunks: r.rewrittenChunks } : {}),
        },
      };
    },
    { onRecordError },
  );
  progress.done();
  const m = result.manifest;
  if (ctx.json) {
    ctx.printJson({
      snapshot: m.id,
      target: m.target,
      lsn: m.lsn,
      seconds: result.seconds,
      totals: m.totals,
      rewrittenChunks: result.rewrittenChunks,
      unsupported: m.schema.unsupported,
    });
    return ExitCode.ok;
  }
  const t = m.totals;
  ctx.out(`snapshot ${m.id} of ${m.target} committed\n`);
  if (result.rewrittenChunks > 0) {
    ctx.out(
      `  rewrote ${result.rewrittenChunks} damaged chunk(s) already in the repository (cut short, or found damaged by check or verify): the snapshots that used them restore again\n`,
    );
  }
  ctx.out(
    `  tables ${t.tables}, rows ${t.rows.toLocaleString('en-US')}, data ${formatBytes(t.bytes)}, stored ${formatBytes(t.storedBytes)}\n`,
  );
  ctx.out(`  new in repository: ${formatBytes(t.newBytes)} in ${t.newChunks} chunk(s)\n`);
  ctx.out(
    `  lsn ${m.lsn}, took ${result.seconds.toFixed(1)} s (${rate(t.bytes, result.seconds)})\n`,
  );
  for (const u of m.schema.unsupported) ctx.out(`  not reproducible: ${describeUnsupported(u)}\n`);
  const blocked = blockedRestoreWarning(m.schema.unsupported);
  if (blocked !== undefined) ctx.err(`flashback: warning: ${blocked}\n`);
  return ExitCode.ok;
}
