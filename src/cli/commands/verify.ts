/** `flashback verify [SNAPSHOT | --latest | --unverified]`: restore-test snapshots. */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../../errors.js';
import { formatBytes } from '../../util/format.js';
import { selectSnapshots, type VerifySelection, verifyAll } from '../../verify/run.js';
import type { VerifyReport } from '../../verify/verify.js';
import type { CliContext } from '../context.js';
import { Progress, rate } from '../progress.js';

interface VerifyFlags {
  readonly latest?: boolean;
  readonly unverified?: boolean;
  readonly target?: string;
}

export function registerVerify(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('verify')
    .description('restore-test snapshots in a scratch server and compare them with the backup')
    .argument('[snapshot]', 'snapshot id, a unique prefix of one, or "latest"')
    .option('--latest', 'the newest snapshot of each target')
    .option('--unverified', 'every snapshot not verified yet')
    .option('-t, --target <name>', 'with --latest/--unverified: only snapshots of this target')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Restores each snapshot into a new database on a scratch server (verify.scratch
in flashback.yaml: "embedded", the default, starts a PostgreSQL of the
snapshot's major version; or an unprotected target), then proves it: the
restored schema equals the one recorded at backup time, object by object,
and every table read back and re-cut into chunks gives the same sha256 and
row count per chunk as the backup stored. The result is recorded in the
repository; \`list\` and \`status\` show it.

Exit codes: 0 every snapshot verified; 8 a snapshot differs, has a damaged
chunk, or does not restore (its schema or rows refused: the output names
snapshot, table and chunk, or the statement); 1 verify could not run (e.g.
no scratch server to start, or the scratch server's disk full), or it
passed and its result could not be recorded in the repository; 3 usage;
5 a configured scratch target (verify.scratch) cannot be reached; 6 no
repository; 130 interrupted.`,
    )
    .action(async (ref: string | undefined, opts: VerifyFlags, self: Command) => {
      process.exitCode = await runVerify(context(self), ref, opts);
    });
}

function selection(ref: string | undefined, opts: VerifyFlags): VerifySelection {
  const given = [ref !== undefined, opts.latest === true, opts.unverified === true].filter(
    Boolean,
  ).length;
  if (given !== 1) {
    throw new UsageError('give one of: a snapshot id, --latest, --unverified', {
      hint: '`flashback list` shows the snapshots and whether they are verified',
    });
  }
  if (ref !== undefined) {
    if (opts.target !== undefined)
      throw new UsageError('--target goes with --latest or --unverified, not a snapshot id');
    return { kind: 'snapshot', ref };
  }
  return opts.latest === true
    ? { kind: 'latest', target: opts.target }
    : { kind: 'unverified', target: opts.target };
}

async function runVerify(
  ctx: CliContext,
  ref: string | undefined,
  opts: VerifyFlags,
): Promise<number> {
  const sel = selection(ref, opts);
  const { config } = await ctx.config();
  const repo = await ctx.repository();
  const manifests = await selectSnapshots(repo, sel);
  if (manifests.length === 0) {
    if (ctx.json) ctx.printJson({ verified: [] });
    else ctx.out('nothing to verify: every snapshot has been verified\n');
    return ExitCode.ok;
  }
  const progress = new Progress(ctx.io.stderr, !ctx.json);
  const results = await verifyAll({
    repo,
    config,
    env: ctx.env,
    manifests,
    trigger: 'command',
    signal: ctx.interruptSignal(),
    onStart: (m, scratch) => {
      if (!ctx.json) ctx.err(`verify ${m.id} (${m.target}): restoring into ${scratch}\n`);
    },
    onProgress: (m, p) =>
      progress.update(() =>
        p.phase === 'data'
          ? `verify ${m.id}: comparing ${p.tablesDone}/${p.tablesTotal} tables, ${formatBytes(p.bytes)}, ${rate(p.bytes, progress.seconds)}`
          : `verify ${m.id}: ${p.phase === 'restore' ? 'restoring' : 'comparing schema'}`,
      ),
    onRecordError: (err: unknown) =>
      ctx.err(
        `flashback: warning: could not record the verification in the repository: ${(err as Error).message}\n`,
      ),
  });
  progress.done();
  const failed = results.filter((r) => !r.value.ok);
  if (ctx.json) {
    ctx.printJson({
      verified: results.map((r) => ({ ...r.value, recorded: r.record?.id ?? null })),
      ok: failed.length === 0,
    });
  } else {
    for (const { value: r } of results) {
      const rows = r.tables.reduce((a, t) => a + t.rows, 0);
      const chunks = r.tables.reduce((a, t) => a + t.chunks, 0);
      if (r.ok) {
        ctx.out(
          `PASS ${r.snapshot} (${r.target}): ${r.tables.length} tables, ${rows.toLocaleString('en-US')} rows, ${chunks} chunks and the schema equal to the backup; restore ${r.restoreSeconds.toFixed(1)} s, compare ${r.compareSeconds.toFixed(1)} s\n`,
        );
      } else {
        ctx.out(`FAIL ${r.snapshot} (${r.target}): ${r.problems.length} problem(s)\n`);
        for (const p of r.problems) ctx.out(`  ${p.message}\n`);
      }
    }
  }
  if (failed.length > 0) {
    ctx.err(
      `flashback: ${failed.length} of ${results.length} snapshot(s) FAILED verification: ${failed.map((r) => r.value.snapshot).join(', ')}\n${failureHints(failed.map((r) => r.value))}`,
    );
    return ExitCode.damaged;
  }
  // Verified, but not on record: status, prune and serve go by the record,
  // so for them the snapshot is not verified. Not "0, all is well".
  const unrecorded = results.filter((r) => r.record === undefined);
  if (unrecorded.length > 0) {
    ctx.err(
      `flashback: ${unrecorded.length} verification(s) passed but could not be recorded in the repository (${unrecorded.map((r) => r.value.snapshot).join(', ')}): status, prune and serve still count the snapshot(s) unverified; free or fix the repository and verify again\n`,
    );
    return ExitCode.failed;
  }
  return ExitCode.ok;
}

/**
 * What to do, by what failed: damaged chunks are repaired by the next
 * backup; a snapshot whose schema or rows the server refuses is not (the
 * next backup has the same schema), nor is a restore that differs.
 */
function failureHints(failed: readonly VerifyReport[]): string {
  const problems = failed.flatMap((r) => r.problems);
  const out: string[] = [];
  if (problems.some((p) => p.kind === 'chunk-damaged' || p.kind === 'chunk-missing')) {
    out.push(
      'hint: `flashback check --read-data` shows every damaged chunk; take a new backup now: it writes a chunk verify found damaged again, and the snapshots that used it restore again if its rows are unchanged',
    );
  }
  if (problems.some((p) => p.message.startsWith('the snapshot does not restore'))) {
    out.push(
      'hint: a snapshot that does not restore is not repaired by a new backup, which takes the same schema: `flashback show SNAPSHOT` lists what the backup could not reproduce; create that on the source some other way, or restore only the tables that do not need it (--table)',
    );
  }
  if (out.length === 0) {
    out.push(
      'hint: the restored database differs from the backup (listed above): keep the snapshots, and report it with the output of `flashback verify --json`',
    );
  }
  return `${out.join('\n')}\n`;
}
