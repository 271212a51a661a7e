/** `flashback check [--read-data | --read-data-subset N%]`: the repository's integrity, no database needed. */
import type { Command } from 'commander';
import { ExitCode, type ExitCodeValue, UsageError } from '../../errors.js';
import { recordRun } from '../../monitor/record.js';
import type { RunProblem } from '../../repo/runs.js';
import { formatBytes } from '../../util/format.js';
import { type CheckReport, checkRepository, parseReadDataSubset } from '../../verify/check.js';
import type { CliContext } from '../context.js';
import { clock, Progress, rate } from '../progress.js';

/** A run record stays small: problems beyond this many are counted, not listed. */
const MAX_RECORDED_PROBLEMS = 100;

interface CheckFlags {
  readData?: boolean;
  readDataSubset?: string;
}

export function registerCheck(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('check')
    .description(
      'check the repository: every snapshot manifest and the chunks it uses (no database needed)',
    )
    .option('--read-data', 'also read every chunk, decompress it and verify its hash')
    .option(
      '--read-data-subset <percent>',
      'read and verify a random share of the chunks, e.g. "10%" (a different subset each run)',
    )
    .option('--json', 'print JSON (findings and totals)')
    .addHelpText(
      'after',
      `
Without --read-data, check reads every snapshot manifest and makes sure every
chunk it uses exists with the size the manifest recorded: fast, and it finds
missing, truncated and overwritten chunks and damaged manifests. --read-data
also reads every chunk, decompresses it and compares its sha256 with its id,
as a restore would; --read-data-subset N% does that for a random N% of the
chunks, a different subset each run, so regular runs cover everything over
time. A chunk an earlier check or verify found damaged, and that nothing
has written again or read whole since, is reported again when this check
does not read it. Each finding names the snapshots, tables and chunk positions affected.
Chunks no snapshot uses (left by backups that did not commit; prune removes
them) are reported for information. Takes a shared lock: prune waits.

Exit codes: 0 no problems; 1 warnings only (e.g. an unreadable run record);
3 bad usage; 6 no repository, or a manifest of a newer format (upgrade
Flashback); 7 locked by prune; 8 data missing or damaged; 130 interrupted.`,
    )
    .action(async (opts: CheckFlags, self: Command) => {
      process.exitCode = await runCheck(context(self), opts);
    });
}

/** The exit code for a report: damage first, then what this build cannot read, then warnings. */
export function checkExitCode(report: CheckReport): ExitCodeValue {
  const errors = report.findings.filter((f) => f.severity === 'error');
  // (Of a newer format: this build cannot check it, which is not damage.)
  const newer = new Set(['manifest-version', 'changelog-version']);
  if (errors.some((f) => !newer.has(f.kind))) return ExitCode.damaged;
  if (errors.length > 0) return ExitCode.repository;
  if (report.findings.some((f) => f.severity === 'warning')) return ExitCode.failed;
  return ExitCode.ok;
}

async function runCheck(ctx: CliContext, flags: CheckFlags): Promise<number> {
  if (flags.readData === true && flags.readDataSubset !== undefined) {
    throw new UsageError('--read-data and --read-data-subset exclude each other', {
      hint: '--read-data reads every chunk; --read-data-subset N% reads N% of them',
    });
  }
  const percent =
    flags.readData === true
      ? 100
      : flags.readDataSubset === undefined
        ? 0
        : parseReadDataSubset(flags.readDataSubset);
  const repo = await ctx.repository();
  const progress = new Progress(ctx.io.stderr, !ctx.json);
  const signal = ctx.interruptSignal();
  const { value: report } = await recordRun(
    repo,
    { kind: 'check', target: null, trigger: 'command' },
    async () => {
      const r = await checkRepository({
        repo,
        readDataPercent: percent,
        signal,
        onProgress: (p) =>
          progress.update(() => {
            const secs = progress.seconds;
            const eta =
              p.bytesRead > 0 ? ((p.bytesToRead - p.bytesRead) * secs) / p.bytesRead : Number.NaN;
            return `check: read ${p.chunksRead}/${p.chunksToRead} chunks, ${formatBytes(p.bytesRead)} of ${formatBytes(p.bytesToRead)}, ${rate(p.bytesRead, secs)}, ETA ${clock(eta)}`;
          }),
      });
      const recorded = r.findings.filter((f) => f.severity !== 'info');
      const problems: RunProblem[] = recorded.slice(0, MAX_RECORDED_PROBLEMS).map((f) => ({
        table: f.table,
        chunk: f.chunk,
        chunkId: f.chunkId,
        ...(f.snapshots.length > 0 ? { snapshots: f.snapshots.slice(0, 20) } : {}),
        ...(f.object === undefined ? {} : { object: f.object }),
        kind: f.kind,
        message: f.message,
      }));
      const t = r.totals;
      return {
        value: r,
        ok: checkExitCode(r) === ExitCode.ok,
        problems,
        details: {
          readData: `${percent}%`,
          snapshots: t.snapshots,
          chunks: t.chunks,
          chunksRead: t.chunksRead,
          bytes: t.bytesRead,
          errors: t.errors,
          warnings: t.warnings,
          unreferencedChunks: t.unreferencedChunks,
          unreferencedBytes: t.unreferencedBytes,
          ...(recorded.length > MAX_RECORDED_PROBLEMS
            ? { problemsNotListed: recorded.length - MAX_RECORDED_PROBLEMS }
            : {}),
        },
      };
    },
    (err: unknown) =>
      ctx.err(
        `flashback: warning: could not record this run in the repository: ${(err as Error).message}\n`,
      ),
  );
  progress.done();
  const code = checkExitCode(report);
  if (ctx.json) {
    ctx.printJson({ ok: code === ExitCode.ok, exitCode: code, ...report });
    return code;
  }
  for (const f of report.findings) ctx.out(`${f.severity}: ${f.message}\n`);
  const t = report.totals;
  const read =
    report.readDataPercent === 0
      ? 'data not read (--read-data reads it)'
      : `${t.chunksRead} chunk(s) read${report.readDataPercent < 100 ? ` (a random ${report.readDataPercent}%)` : ''}, ${formatBytes(t.bytesRead)} at ${rate(t.bytesRead, t.readSeconds)}`;
  ctx.out(
    `${t.snapshots} snapshot(s), ${t.chunks} chunk(s) checked (${formatBytes(t.chunkBytes)}), ${read}; ${t.runs} run record(s); ${t.errors} error(s), ${t.warnings} warning(s)\n`,
  );
  const verdict: Record<number, string> = {
    [ExitCode.ok]: 'no problems found',
    [ExitCode.failed]: 'warnings found; the snapshots are intact',
    [ExitCode.repository]: 'some snapshots are of a newer format: this Flashback cannot check them',
    [ExitCode.damaged]:
      'DAMAGED: data is missing or damaged; the snapshots named above cannot be fully restored',
  };
  ctx.out(`${verdict[code]}\n`);
  // One hint per kind of problem, after the list, so the findings stay one line each.
  const hints = [...new Set(report.findings.map((f) => f.hint).filter((h) => h !== undefined))];
  for (const h of hints) ctx.out(`hint: ${h}\n`);
  return code;
}
