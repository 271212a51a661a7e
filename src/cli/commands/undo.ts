/** `flashback undo TARGET --tx XID | --since T1 --until T2`: put back what a transaction or a window changed. */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { resolveTarget } from '../../config/targets.js';
import { ExitCode, UsageError } from '../../errors.js';
import { parseTimeArg } from '../../history/time.js';
import { triggerList } from '../../restore/triggers.js';
import {
  type ConflictPolicy,
  type UndoProgress,
  type UndoReport,
  type UndoSelection,
  undo,
} from '../../undo/undo.js';
import { parseXidArg } from '../args.js';
import type { CliContext } from '../context.js';
import { Progress } from '../progress.js';
import { table } from './snapshots.js';

interface UndoFlags {
  tx?: string;
  since?: string;
  until?: string;
  table: string[];
  where?: string;
  conflicts: string;
  apply?: boolean;
  out?: string;
  by?: string;
  order?: string;
  orderFile?: string;
  estimate?: boolean;
  confirm?: string;
  disableTriggers?: boolean;
}

export function registerUndo(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('undo')
    .description('undo a transaction or a time window, row by row, keeping later writes')
    .argument('<target>', 'the captured target whose changes to undo (the live database)')
    .option('--tx <xid>', 'undo this transaction')
    .option(
      '--since <time>',
      'undo every transaction committed after this time (ISO 8601, UTC; or now-10m)',
    )
    .option('--until <time>', '… and at or before this one (default: the end of the change log)')
    .option(
      '--table <pattern>',
      'only this table: name or schema.name as written, * and ? allowed, or "Quoted" as in SQL (repeatable); a partitioned table stands for its partitions',
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--where <sql>', 'only rows matching this predicate')
    .option(
      '--conflicts <policy>',
      'rows written again since: skip (listed), overwrite, or fail',
      'skip',
    )
    .option('--apply', 'apply it (one transaction, through the guard); without it, a preview')
    .option(
      '--out <file>',
      'write the exact SQL (with the rows) to this file for review (whole or not at all)',
    )
    .option('--by <column>', 'tenant by tenant: one transaction per value of this column')
    .option('--order <values>', 'with --by: these values first, in this order (comma-separated)')
    .option('--order-file <file>', 'with --by: the order, one value per line')
    .option('--estimate', 'with --by: rows and expected time per tenant; nothing runs')
    .option(
      '--disable-triggers',
      'switch the user triggers of the tables written off inside each apply transaction (writers to them wait until it ends)',
    )
    .option('--confirm <name>', 'the target name, to confirm --apply without a prompt')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Computed from the change log (\`flashback capture\`) and the rows' history, so
REPLICA IDENTITY FULL is not needed: deleted rows are re-inserted with their
last values, updated rows set back (only the columns that changed), inserted
rows removed, truncated rows put back. A row written again after the changes
being undone is a conflict: shown with its versions (before, after the bad
change, now) and skipped unless --conflicts overwrite; so is a delete that
would cascade to rows written since (a conflict whose versions do not show
why, like that one, says why). Conflicts are checked again as the
apply reaches each row: one written between the plan and the apply (while
the prompt waits) is skipped too, or with --conflicts fail rolls the apply
back. A row whose key was changed is undone whole or not at all; in a table
without a key, copies of a row that are back already (the same undo run
twice) are conflicts. REINSERT, REVERT and DELETE count what is to be done
in a plan, and what was done once applied; conflicts are counted apart
(with --json, lateConflicts counts those found only at the apply). Foreign keys are
satisfied by the order of the work; the plan is tried (and rolled back) even
in a preview, so a plan that cannot be applied says why before anything is
written. The apply is an ordinary write: capture records it, and its
transaction id is printed, so an undo can itself be undone. --apply of rows
a DELETE removed (nothing updated or inserted), without --out, --by or
--where, puts them back at once without planning first; a row written
again since makes that fail with nothing written, and the plan is then
made and applied as above, without asking again.

The tables' triggers fire on the undo's writes, as on any write (a trigger
stamping updated_at changes the rows set back). --disable-triggers
switches the user triggers (not foreign keys) of the tables written off
after the confirmation and back on before each commit, as they were: no
other session sees them off, but writers to those tables wait until the
transaction ends, and it needs the tables' owner. The trial of a preview
and the --out script do the same. Cascades to other tables still fire
their triggers.

Progress is shown on stderr (not with --json): the change log read, the
rows read from the snapshot, the plan, the trial of a preview, the apply,
with the seconds since the start; on a terminal it is redrawn in place,
otherwise a line every 10 seconds.

Examples:
  flashback undo prod --since 2026-11-21T14:00:00Z --until 2026-11-21T14:05:00Z --table workflow_steps
  flashback undo prod --tx 48211 --out undo.sql
  flashback undo prod --since now-2h --table files --where "kind = 'invoice'" --by tenant_id --order 42,17,9 --apply

Exit codes: 0 done (or previewed); 1 failed or conflicts with --conflicts fail
(nothing written); 3 usage (no change log, unknown xid, bad window); 4
refused by the guard; 5 unreachable; 6 no repository; 7 locked (a prune is
running: it reads under a shared lock); 8 a snapshot chunk or change-log
segment it reads is missing or damaged (nothing written); 130 interrupted.`,
    )
    .action(async (ref: string, opts: UndoFlags, self: Command) => {
      process.exitCode = await runUndo(context(self), ref, opts);
    });
}

async function runUndo(ctx: CliContext, ref: string, opts: UndoFlags): Promise<number> {
  if (!['skip', 'overwrite', 'fail'].includes(opts.conflicts)) {
    throw new UsageError(`--conflicts: expected skip, overwrite or fail, got "${opts.conflicts}"`);
  }
  let selection: UndoSelection;
  if (opts.tx !== undefined) {
    if (opts.since !== undefined || opts.until !== undefined)
      throw new UsageError('give --tx or --since/--until, not both');
    selection = { kind: 'tx', xid: parseXidArg(opts.tx, '--tx') };
  } else if (opts.since !== undefined) {
    const since = parseTimeArg(opts.since, '--since');
    const until = opts.until === undefined ? undefined : parseTimeArg(opts.until, '--until');
    if (until !== undefined && until <= since)
      throw new UsageError('--until must be after --since');
    selection = { kind: 'window', since, until };
  } else {
    throw new UsageError('give --tx XID, or --since TIME (and --until TIME)', {
      hint: '`flashback impact --since … --until … --by …` shows what changed when',
    });
  }
  if (
    (opts.order !== undefined || opts.orderFile !== undefined || opts.estimate === true) &&
    opts.by === undefined
  ) {
    throw new UsageError('--order, --order-file and --estimate go with --by COLUMN');
  }
  const order =
    opts.orderFile !== undefined
      ? (await readFile(opts.orderFile, 'utf8'))
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean)
      : (opts.order
          ?.split(',')
          .map((s) => s.trim())
          .filter(Boolean) ?? []);
  const { config } = await ctx.config();
  const target = resolveTarget(ref, config, ctx.env);
  const repo = await ctx.repository();
  // The latest state, drawn by a ticker: the plan and the apply are single
  // statements that can run for minutes, during which a live clock shows
  // the work goes on. Nothing is drawn while the guard asks for confirmation.
  const progress = new Progress(ctx.io.stderr, !ctx.json);
  let latest: UndoProgress | undefined;
  const ticker = setInterval(() => {
    if (latest === undefined || latest.phase === 'confirm') return;
    const p = latest;
    progress.update(() => undoProgressLine(target.name, p, progress.seconds));
  }, 250);
  ticker.unref();
  const report = await undo({
    repo,
    target,
    selection,
    tables: opts.table,
    where: opts.where,
    conflicts: opts.conflicts as ConflictPolicy,
    mode: opts.estimate === true ? 'estimate' : opts.apply === true ? 'apply' : 'preview',
    out: opts.out,
    disableTriggers: opts.disableTriggers,
    by: opts.by,
    order,
    confirm: opts.confirm,
    io: ctx.guardIO,
    onProgress: (p) => {
      latest = p;
      if (p.phase === 'confirm') progress.done();
    },
    onTenant: (p) => {
      progress.done();
      if (!ctx.json && opts.by !== undefined)
        ctx.err(
          `undo ${opts.by} = ${p.value ?? 'NULL'}: ${p.rows.toLocaleString('en-US')} row(s) in ${p.seconds?.toFixed(2)} s, transaction ${p.xid} (${p.index}/${p.total})\n`,
        );
    },
  }).finally(() => {
    clearInterval(ticker);
    progress.done();
  });
  if (ctx.json) {
    ctx.printJson(report);
  } else {
    ctx.out(formatUndoReport(report));
  }
  return report.validation.ok ? ExitCode.ok : ExitCode.failed;
}

/** The progress line of an undo: its phase, what it has read, and the time since it started. */
export function undoProgressLine(target: string, p: UndoProgress, seconds: number): string {
  const n = (v: number) => v.toLocaleString('en-US');
  const what =
    p.phase === 'log'
      ? `reading the change log: ${n(p.transactions)} transaction(s), ${n(p.changes)} change(s), up to ${p.commitTime}`
      : p.phase === 'rows'
        ? `reading rows of ${p.table} from the snapshot: ${n(p.rows)}`
        : p.phase === 'plan'
          ? `planning ${p.table} (each row looked up in the live table)`
          : p.phase === 'trial'
            ? 'trying the plan (rolled back)'
            : p.phase === 'apply'
              ? `applying ${n(p.rows)} row change(s)`
              : 'waiting for confirmation';
  return `undo ${target}: ${what} (${Math.round(seconds)} s)`;
}

/** The report as printed (without --json). */
export function formatUndoReport(r: UndoReport): string {
  const n = (v: number) => v.toLocaleString('en-US');
  let s = `${r.applied ? 'undone' : 'plan'}: undo of ${r.selection} on ${r.target} (rows before it from snapshot ${r.snapshot} and the change log; ${n(r.window.changes)} change(s) in the window)\n`;
  s += table(
    ['TABLE', 'REINSERT', 'REVERT', 'DELETE', 'CONFLICTS'],
    r.tables.map((t) => [t.table, n(t.reinsert), n(t.revert), n(t.delete), n(t.conflicts)]),
    [1, 2, 3, 4],
  );
  if (r.conflicts.length > 0) {
    s += `\nconflicts (${r.policy === 'skip' ? 'skipped' : r.policy === 'overwrite' ? 'overwritten' : 'refused'}): rows written again after the changes being undone\n`;
    for (const c of r.conflicts) {
      s += `  ${c.table} ${c.op}${c.why === undefined ? '' : `: ${c.why}`}\n    before: ${show(c.before)}\n    after:  ${show(c.after)}\n    now:    ${show(c.now)}\n`;
    }
  }
  const late = r.tables.reduce((a, t) => a + (t.lateConflicts ?? 0), 0);
  if (late > 0) {
    s += `\n${n(late)} row(s) were written again between the plan and the apply: left alone, counted as conflicts above (without their versions)\n`;
  }
  if (r.tenants.length > 0 && !r.applied) {
    s += `\n${table(
      ['TENANT', 'ROWS', 'EXPECTED'],
      r.tenants.map((t) => [
        t.value ?? 'NULL',
        n(t.rows),
        `${(t.estimatedSeconds ?? 0).toFixed(1)} s`,
      ]),
      [1, 2],
    )}`;
  }
  if (r.triggersOff !== undefined && r.triggersOff.length > 0) {
    s += `user triggers ${r.applied ? 'switched' : 'to switch'} off while writing: ${triggerList(r.triggersOff)}\n`;
  }
  for (const note of r.notes) s += `note: ${note}\n`;
  if (r.out !== undefined) s += `\nthe exact SQL is in ${r.out}\n`;
  if (r.applied && r.xids.length === 0) {
    s +=
      late > 0
        ? 'nothing was written: every row left to write was written again since the plan\n'
        : 'nothing to apply: no row needed writing; nothing was written\n';
  } else if (r.applied) {
    s += `applied in ${r.xids.length} transaction(s): ${r.xids.join(', ')} (each can be undone with \`flashback undo ${r.target} --tx XID\`)\n`;
  } else if (!r.validation.ok) {
    s += `this plan cannot be applied: ${r.validation.error}\nnothing was written\n`;
  } else if (r.validation.tried === false) {
    s +=
      'estimate: the plan was not tried (a preview without --estimate tries it); nothing was written.\n';
  } else {
    s +=
      'preview: the plan applies cleanly (tried and rolled back); nothing was written. Run again with --apply.\n';
  }
  return s;
}

function show(row: Record<string, string | null> | null): string {
  if (row === null) return '(no row)';
  return Object.entries(row)
    .map(([k, v]) => `${k}=${v === null ? 'NULL' : v.length > 40 ? `${v.slice(0, 40)}…` : v}`)
    .join(' ');
}
