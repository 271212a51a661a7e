/** `flashback prune`: remove the snapshots the retention policy no longer keeps, and their chunks. */
import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { recordRun } from '../../monitor/record.js';
import { describePolicy } from '../../prune/policy.js';
import { type PruneResult, prune } from '../../prune/prune.js';
import { formatBytes, formatTime } from '../../util/format.js';
import type { CliContext } from '../context.js';
import { table } from './snapshots.js';

export function registerPrune(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('prune')
    .description('remove snapshots the retention policy no longer keeps, and unreferenced chunks')
    .option('-t, --target <name>', "only this target's snapshots")
    .option('--dry-run', 'print what would be removed and the bytes freed; delete nothing')
    .option('--json', 'print JSON (the plan and the result)')
    .addHelpText(
      'after',
      `
Each target's policy is its "retention" keys in flashback.yaml (keep_last,
keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
keep_within; a target's own retention replaces the top-level one). A
snapshot kept by any rule stays, and the newest snapshot whose latest
verification passed is always kept. A target without a policy keeps
everything. Then every chunk no remaining snapshot references is deleted,
and the change log of each target with a policy is cut back to its oldest
remaining snapshot: moments before that snapshot could not be rebuilt
anyway, and \`history\` then reaches back to it (docs/CAPTURE.md,
"Retention"). Capture may keep running meanwhile.

Holds the exclusive repository lock: while a backup, restore or check runs,
prune fails with exit 7 (and they fail while it runs); --dry-run takes a
shared lock. Safe to interrupt or kill at any point: snapshots are removed
before their chunks, so what remains always restores; run prune again to
finish.

Exit codes: 0 done (or planned); 1 failed; 3 bad usage, no retention
policy, or a policy that keeps nothing; 6 no repository, or a snapshot of
a newer format; 7 repository locked; 8 a snapshot's manifest cannot be read
(prune cannot tell which chunks it uses: nothing is deleted); 130
interrupted.`,
    )
    .action(async (opts: { target?: string; dryRun?: boolean }, self: Command) => {
      process.exitCode = await runPrune(context(self), opts);
    });
}

async function runPrune(
  ctx: CliContext,
  opts: { target?: string; dryRun?: boolean },
): Promise<number> {
  const { config } = await ctx.config();
  const repo = await ctx.repository();
  const signal = ctx.interruptSignal();
  const run = () =>
    prune({ repo, config, target: opts.target, dryRun: opts.dryRun === true, signal });
  let result: PruneResult;
  if (opts.dryRun === true) {
    // A dry run changes nothing, so it is not a run worth remembering.
    result = await run();
  } else {
    ({ value: result } = await recordRun(
      repo,
      // (tombstones: this prune leaves one per snapshot it removes; see readStatus.)
      {
        kind: 'prune',
        target: opts.target ?? null,
        trigger: 'command',
        details: { tombstones: 1 },
      },
      async () => {
        const r = await run();
        return {
          value: r,
          details: {
            snapshotsRemoved: r.snapshotsRemoved,
            chunksRemoved: r.chunksRemoved,
            bytesFreed: r.bytesFreed,
            logSegmentsRemoved: r.logs.reduce((n, l) => n + l.segmentsRemoved, 0),
          },
        };
      },
      {
        onRecordError: (err) =>
          ctx.err(
            `flashback: warning: could not record this run in the repository: ${(err as Error).message}\n`,
          ),
      },
    ));
  }
  if (ctx.json) {
    ctx.printJson({
      dryRun: result.dryRun,
      now: result.plan.now,
      targets: result.plan.targets,
      removed: result.plan.remove,
      snapshotsRemoved: result.snapshotsRemoved,
      chunksRemoved: result.chunksRemoved,
      chunksKept: result.chunksKept,
      bytesFreed: result.bytesFreed,
      logs: result.logs,
      seconds: result.seconds,
    });
    return ExitCode.ok;
  }
  for (const t of result.plan.targets) {
    if (t.policy === null) {
      ctx.out(
        `${t.target}: no retention policy: kept all ${t.snapshots.length} snapshot(s); set retention in flashback.yaml to prune it\n\n`,
      );
      continue;
    }
    ctx.out(`${t.target}: policy ${describePolicy(t.policy)}\n`);
    if (t.snapshots.length === 0) {
      ctx.out('  no snapshots\n\n');
      continue;
    }
    const rows = t.snapshots.map((s) => [
      s.id,
      formatTime(s.time),
      s.keep ? 'keep' : 'REMOVE',
      s.rows.toLocaleString('en-US'),
      formatBytes(s.storedBytes),
      s.reasons.join(', '),
    ]);
    ctx.out(
      `${table(['ID', 'TIME (UTC)', 'ACTION', 'ROWS', 'STORED', 'KEPT BECAUSE'], rows, [3, 4])}\n`,
    );
  }
  for (const l of result.logs) {
    const removed = `${l.segmentsRemoved} segment(s), ${formatBytes(l.bytesFreed)}${l.schemaRecordsRemoved > 0 ? `, and ${l.schemaRecordsRemoved} schema record(s)` : ''} ${result.dryRun ? 'to remove' : 'removed'}`;
    const name = l.log === 1 ? 'change log' : `change log ${l.log}`;
    ctx.out(
      l.emptied
        ? `${l.target}: change log ${l.log} ${result.dryRun ? 'would be' : 'is'} emptied (no snapshot kept was taken under it, and the ones kept are of a later log): ${removed}\n`
        : `${l.target}: ${name} ${result.dryRun ? 'would begin' : 'begins'} at ${l.toLsn} (the oldest snapshot kept; was ${l.fromLsn}): ${removed}\n`,
    );
  }
  if (result.logs.length > 0) ctx.out('\n');
  // The total: chunks and change-log segments (as serve's log line says).
  const segments = result.logs.reduce((n, l) => n + l.segmentsRemoved, 0);
  const freed = result.bytesFreed + result.logs.reduce((n, l) => n + l.bytesFreed, 0);
  const chunks = `${result.chunksRemoved} unreferenced chunk(s)`;
  const what = (kept: string) =>
    segments === 0
      ? `${result.snapshotsRemoved} snapshot(s) and ${chunks}${kept}`
      : `${result.snapshotsRemoved} snapshot(s), ${chunks}${kept} and ${segments} change-log segment(s)`;
  if (result.dryRun) {
    ctx.out(
      `dry run: would remove ${what('')}, freeing ${formatBytes(freed)}; nothing was deleted\n`,
    );
  } else {
    ctx.out(
      `removed ${what(` (${result.chunksKept} still in use)`)}: ${formatBytes(freed)} freed in ${result.seconds.toFixed(1)} s\n`,
    );
  }
  return ExitCode.ok;
}
