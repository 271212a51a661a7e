/** `flashback status`: are the backups fresh, verified and succeeding? Exit 0/1/2 for cron and monitoring. */
import type { Command } from 'commander';
import { formatDuration } from '../../config/duration.js';
import { UsageError } from '../../errors.js';
import { readStatus, type Severity } from '../../monitor/status.js';
import type { CliContext } from '../context.js';
import { table } from './snapshots.js';

const EXIT: Record<Severity, number> = { ok: 0, warning: 1, critical: 2 };

export function registerStatus(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('status')
    .description('per target: newest and newest verified backup, their ages, failures; exit 0/1/2')
    .option('-t, --target <name>', 'only this target (repeatable)', collect, [])
    .option('--json', 'print JSON')
    .option(
      '--repository-only',
      'judge from the repository alone: do not connect to targets to check their replication slots',
    )
    .addHelpText(
      'after',
      `
Judged from the repository alone (snapshots and the record every backup and
verify leaves), against the freshness thresholds in flashback.yaml (defaults:
newest backup warning 25h, critical 49h; newest verified backup warning 25h,
critical 26h). Also critical: the last backup attempt failed, or was killed
(its process gone, its lock left behind), or the newest verification found a
difference. A scheduled job that ran before but not
within missed_run_grace (30m) of when it was last due is a warning: the
scheduler (\`flashback serve\`) has stopped doing its work, or a long job
holds it up (named, when one runs in the repository).

For a target with a change log (\`flashback capture\`), RECOVERY is the
recovery point: the age of the newest change or heartbeat stored in the
repository (warning above 1m, critical above 5m: recovery_point_warning and
recovery_point_critical). Its replication slot is checked on the server
(3 s connect timeout; unreachable is a warning): gone or lost WAL is
critical; more WAL held than capture.max_retained_wal (1GB), or no capture
reading it, is a warning. --repository-only skips the connection.

Targets shown: those with a schedule, snapshots, run records or a change
log (or --target).

Exit codes: 0 ok; 1 warning; 2 critical; 3 usage; 6 no repository.`,
    )
    .action(async (opts: { target: string[]; repositoryOnly?: boolean }, self: Command) => {
      process.exitCode = await status(context(self), opts.target, opts.repositoryOnly !== true);
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function status(ctx: CliContext, only: readonly string[], slots: boolean): Promise<number> {
  const { config } = await ctx.config();
  const repo = await ctx.repository();
  const report = await readStatus(repo, config, {
    targets: only.length > 0 ? only : undefined,
    slots,
    env: ctx.env,
  });
  // (In JSON too: an empty report with exit 0 would read as "all is well".)
  if (report.targets.length === 0) {
    throw new UsageError('no targets to report on: no schedules, snapshots or runs yet', {
      hint: 'take a backup with `flashback backup TARGET`, or name one with --target',
    });
  }
  if (ctx.json) {
    ctx.printJson(report);
    return EXIT[report.severity];
  }
  const age = (s: number | undefined): string => (s === undefined ? '-' : formatDuration(s * 1000));
  ctx.out(
    table(
      ['TARGET', 'NEWEST', 'AGE', 'VERIFIED', 'AGE', 'FAILED', 'RECOVERY', 'STATUS'],
      report.targets.map((t) => [
        t.target,
        t.newest?.id ?? '-',
        age(t.newest?.ageSeconds),
        t.newestVerified?.id ?? '-',
        age(t.newestVerified?.ageSeconds),
        String(t.backupFailures + t.failedVerifications.length),
        age(t.changeLog?.recoveryPointSeconds),
        t.severity === 'ok' ? 'ok' : t.severity.toUpperCase(),
      ]),
      [2, 4, 5, 6],
    ),
  );
  const findings = report.targets.flatMap((t) => t.findings);
  if (findings.length > 0) ctx.out('\n');
  for (const f of findings) ctx.out(`${f.severity}: ${f.message}\n`);
  return EXIT[report.severity];
}
