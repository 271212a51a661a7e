/** `flashback doctor [TARGET]`: is a target ready for Flashback, and how to fix what is not. */
import type { Command } from 'commander';
import {
  configuredTargets,
  environmentTarget,
  type ResolvedTarget,
  resolveTarget,
} from '../../config/targets.js';
import type { ChangeLogEnd, Severity } from '../../doctor/checks.js';
import { type DoctorReport, diagnose } from '../../doctor/doctor.js';
import { ExitCode, UsageError } from '../../errors.js';
import { lsnValue } from '../../repo/changelog.js';
import { newestLog } from '../../repo/changelogs.js';
import type { Repository } from '../../repo/repository.js';
import { runScope } from '../../repo/runs.js';
import type { CliContext } from '../context.js';

export function registerDoctor(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('doctor')
    .description(
      'check that a target is ready for backups and capture, and say how to fix what is not',
    )
    .argument(
      '[target]',
      'target name or postgres:// URL (default: DATABASE_URL/PG*, else every configured target)',
    )
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Checks: server version, wal_level, free replication slots and WAL senders,
REPLICATION and SELECT privileges, that a replication connection opens (a
pooler such as PgBouncer may refuse one), tables without a primary key or replica
identity index (critical when capture's publication exists and a table has
no replica identity at all: the server is refusing UPDATE and DELETE on
it), unlogged tables, large objects, the target's identity, and
Flashback's replication slot (flashback_<target>) if it exists: WAL it lost
(critical), more WAL held than capture.max_retained_wal (default 1GB), or no
capture reading it (warnings: a slot nobody reads fills the server's disk).
Of every configured target, one that cannot be used (its password
variable unset, …) is a critical "config" finding; the others are checked.

Exit codes: 0 all ok; 1 warnings; 2 critical findings; 5 unreachable; 3 bad usage.`,
    )
    .action(async (ref: string | undefined, _opts, self: Command) => {
      process.exitCode = await doctor(context(self), ref);
    });
}

/** Where the target's change log in the repository ends, or undefined when it has none. */
async function changeLogEnd(repo: Repository, target: string): Promise<ChangeLogEnd | undefined> {
  // (Of a target's several logs, the newest: the one capture continues.)
  const newest = await newestLog(repo.storage, runScope(target));
  if (newest === undefined) return undefined;
  const { log, info } = newest;
  const last = (await log.segments()).at(-1);
  const ack = await log.ackRecord();
  return {
    end: last?.committed ?? lsnValue(info.startLsn),
    ackSince: ack === undefined ? undefined : lsnValue(ack.since),
    dir: log.dir,
  };
}

/** Runs doctor; returns the exit code reflecting the worst finding. */
export async function doctor(ctx: CliContext, ref: string | undefined): Promise<number> {
  const { config } = await ctx.config();
  // Each target to check, or the report of a configured one that cannot be
  // used (a password variable unset, …): a critical finding, and the other
  // targets are still checked.
  const plan: Array<ResolvedTarget | DoctorReport> = [];
  if (ref !== undefined) plan.push(resolveTarget(ref, config, ctx.env));
  else {
    const env = environmentTarget(ctx.env);
    if (env !== undefined) plan.push(env);
    else {
      const all = configuredTargets(config, ctx.env);
      // None usable: the configuration is the problem (exit 3, as before).
      const broken = all.filter((e) => e.error !== undefined);
      if (broken.length > 0 && broken.length === all.length) throw broken[0]!.error;
      for (const e of all) {
        plan.push(
          e.target ?? {
            target: e.name,
            connection: 'not connected',
            findings: [
              {
                check: 'config',
                severity: 'critical',
                summary: e.error!.message,
                fix: e.error!.hint,
              },
            ],
            worst: 'critical',
          },
        );
      }
    }
  }
  if (plan.length === 0) {
    throw new UsageError('no target to check', {
      hint: 'name a target or postgres:// URL, set DATABASE_URL, or declare targets in flashback.yaml',
    });
  }
  const { store, note } = await ctx.fingerprints();
  // (The fingerprint store exists only with a repository: the change logs are in it.)
  const repo = store === undefined ? undefined : await ctx.repository();
  const reports: DoctorReport[] = [];
  for (const t of plan) {
    if ('findings' in t) {
      reports.push(t);
      continue;
    }
    reports.push(
      await diagnose(t, store, {
        maxRetainedWal: config.capture.max_retained_wal,
        log: repo === undefined ? undefined : await changeLogEnd(repo, t.name),
      }),
    );
  }
  if (ctx.json) {
    ctx.printJson(
      reports.map((r) => ({
        target: r.target,
        connection: r.connection,
        serverVersion: r.server?.version,
        systemIdentifier: r.server?.identity.systemIdentifier,
        worst: r.worst,
        findings: r.findings,
      })),
    );
  } else {
    ctx.out(reports.map(formatReport).join('\n'));
    if (note !== undefined) ctx.out(`note: ${note}\n`);
  }
  if (reports.some((r) => r.unreachable !== undefined)) return ExitCode.unreachable;
  const worst = reports.map((r) => r.worst);
  return worst.includes('critical')
    ? ExitCode.critical
    : worst.includes('warning')
      ? ExitCode.failed
      : ExitCode.ok;
}

const LABEL: Record<Severity, string> = { ok: 'ok', warning: 'WARNING', critical: 'CRITICAL' };

function formatReport(r: DoctorReport): string {
  const server = r.server === undefined ? '' : `, PostgreSQL ${r.server.version}`;
  const lines = [`doctor: ${r.target} (${r.connection}${server})`];
  for (const f of r.findings) {
    lines.push(`  ${LABEL[f.severity].padEnd(9)} ${f.check.padEnd(23)} ${f.summary}`);
    for (const d of f.details ?? []) lines.push(`  ${''.padEnd(9)} ${''.padEnd(23)}   ${d}`);
    if (f.fix !== undefined && f.severity !== 'ok')
      lines.push(`  ${''.padEnd(9)} ${''.padEnd(23)} fix: ${f.fix}`);
  }
  const n = (s: Severity): number => r.findings.filter((f) => f.severity === s).length;
  lines.push(`  summary: ${n('critical')} critical, ${n('warning')} warning, ${n('ok')} ok`);
  return `${lines.join('\n')}\n`;
}
