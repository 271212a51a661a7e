/** `flashback impact --since --until --by COLUMN`: who had rows changed in a window, per table. */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../../errors.js';
import { parseTimeArg } from '../../history/history.js';
import { type ImpactReport, type ImpactSince, impactCsv, impactReport } from '../../undo/impact.js';
import type { CliContext } from '../context.js';

interface ImpactFlags {
  readonly since?: string;
  readonly sinceSnapshot?: string;
  readonly until?: string;
  readonly by: string;
  readonly table?: string[];
  readonly target?: string;
  readonly json?: boolean;
  readonly csv?: boolean;
}

/** A snapshot id (or a prefix of one with its date and time) or `latest`, as `--since` takes it. */
const SNAPSHOT_REF = /^(?:latest|\d{8}-\d{6}(?:-[0-9a-f]{0,4})?)$/;

export function registerImpact(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('impact')
    .description(
      'which values of a column (tenants, users) had rows inserted, updated or deleted in a window, per table',
    )
    .requiredOption('--by <column>', 'the column to group by, e.g. tenant_id')
    .option(
      '--since <time|snapshot>',
      'start of the window (exclusive): an ISO time (UTC unless it has a zone), a duration ago (2h), or a snapshot id',
    )
    .option(
      '--since-snapshot <id>',
      "start at a snapshot's consistent point: what a restore of it would wipe out",
    )
    .option(
      '--until <time>',
      'end of the window, inclusive (default: now, or the end of the change log when it is less than a minute short of now)',
    )
    .option(
      '--table <table>',
      'only this table (repeatable): name or schema.name as in SQL (or exactly as written when only that exists); a partitioned table stands for its partitions',
      collect,
    )
    .option('-t, --target <name>', 'whose change log (default: the only target with one)')
    .option('--json', 'print JSON: an array of {value, table, inserted, updated, deleted, …}')
    .option('--csv', 'print CSV (RFC 4180), for customer communication')
    .addHelpText(
      'after',
      `
Examples:
  impact --since 2026-11-21T16:00:00Z --until 2026-11-21T16:30:00Z --by tenant_id
  impact --since 2h --by tenant_id --table files --csv > affected.csv
  impact --since 20261121-160530-3f9a --by user_id   everything written after that snapshot

Reads the repository only. Each row of the report is one value of the column
in one table: rows inserted, updated (once per row however often; a row whose
value changed counts under both values), deleted and truncated, with the
first and last commit time. A deleted row's value, which the change log
lacks unless the table has REPLICA IDENTITY FULL, comes from the row's
history: the newest snapshot before the window (only the chunks that can
hold the keys are read) and the log after it. A truncate counts every row the
table had at that moment. Tables without the column are listed, not counted.
With --json or --csv, notes go to stderr.

Exit codes: 0 report printed (also when empty); 1 report printed, but
incomplete: changes in the window that the change log does not hold (it
began after the window opened, or reaches only part of it), or whose value
is unknown (the notes say which); 3 usage (unknown target,
column, snapshot, bad time); 6 no repository; 7 locked (a prune is running:
it reads under a shared lock); 8 a snapshot chunk or change-log segment it
needs is missing or damaged.`,
    )
    .action(async (opts: ImpactFlags, self: Command) => {
      const ctx = context(self);
      if (opts.json === true && opts.csv === true) {
        throw new UsageError('give --json or --csv, not both');
      }
      const now = new Date();
      const since = windowStart(opts, now);
      const until = parseTimeArg(opts.until ?? 'now', '--until', now);
      const repo = await ctx.repository();
      const report = await impactReport({
        repo,
        target: opts.target,
        column: opts.by,
        tables: opts.table,
        since,
        until,
        untilIsNow: opts.until === undefined,
      });
      if (ctx.json || opts.csv === true) {
        // stdout stays machine-readable; what a reader should know goes to stderr.
        for (const n of report.notes) ctx.err(`note: ${n}\n`);
        if (opts.csv === true) ctx.out(impactCsv(report));
        else ctx.printJson(report.rows);
      } else {
        ctx.out(render(report));
      }
      if (report.gaps.length > 0) {
        ctx.err(
          `flashback: the report is incomplete: ${report.gaps.length} note(s) above name changes in the window it could not count or attribute\n`,
        );
      }
      process.exitCode = report.gaps.length > 0 ? ExitCode.failed : ExitCode.ok;
    });
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function windowStart(opts: ImpactFlags, now: Date): ImpactSince {
  if (opts.since !== undefined && opts.sinceSnapshot !== undefined) {
    throw new UsageError('give --since or --since-snapshot, not both');
  }
  if (opts.sinceSnapshot !== undefined) return { kind: 'snapshot', ref: opts.sinceSnapshot };
  if (opts.since === undefined) {
    throw new UsageError('where does the window start?', {
      hint: 'give --since TIME (e.g. --since 2h, --since 2026-11-21T16:00:00Z) or --since SNAPSHOT_ID',
    });
  }
  const text = opts.since.trim();
  if (SNAPSHOT_REF.test(text)) return { kind: 'snapshot', ref: text };
  return { kind: 'time', at: parseTimeArg(text, '--since', now) };
}

/** The human form: what was read, a table per value and table, then notes. */
export function render(r: ImpactReport): string {
  const lines: string[] = [];
  const from =
    r.sinceSnapshot === null
      ? time(r.since)
      : `snapshot ${r.sinceSnapshot.id} (LSN ${r.sinceSnapshot.lsn}, ${time(r.since)})`;
  lines.push(`impact by ${r.column} on target ${r.target}: after ${from}, up to ${time(r.until)}`);
  const lookup =
    r.lookup === null
      ? ''
      : `; ${count(r.lookup.keys, 'row')} whose value the log lacks looked up in ${
          r.lookup.snapshot === null
            ? 'the log alone'
            : `snapshot ${r.lookup.snapshot} (${count(r.lookup.chunksRead, 'chunk')} read) and the log after it`
        }`;
  lines.push(
    `${count(r.transactions, 'transaction')}, ${count(r.changes, 'row change')} counted${lookup}`,
  );
  lines.push('');
  if (r.rows.length === 0) {
    lines.push(`no row with a ${r.column} changed in the window`);
  } else {
    const header = [r.column.toUpperCase(), 'TABLE', 'INSERTED', 'UPDATED', 'DELETED'];
    const truncated = r.rows.some((x) => x.truncated > 0);
    if (truncated) header.push('TRUNCATED');
    header.push('FIRST', 'LAST');
    const body = r.rows.map((x) => {
      const cells = [cell(x.value), x.table, num(x.inserted), num(x.updated), num(x.deleted)];
      if (truncated) cells.push(num(x.truncated));
      cells.push(time(x.first), time(x.last));
      return cells;
    });
    const numeric = (i: number) => i >= 2 && i < header.length - 2;
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: readonly string[]) =>
      cells
        .map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd();
    lines.push(line(header));
    for (const b of body) lines.push(line(b));
    const values = new Set(r.rows.map((x) => x.value)).size;
    const tables = new Set(r.rows.map((x) => x.table)).size;
    lines.push('');
    lines.push(`${count(values, 'value')} of ${r.column} in ${count(tables, 'table')}`);
  }
  for (const n of r.notes) lines.push(`note: ${n}`);
  return `${lines.join('\n')}\n`;
}

function num(n: number): string {
  return n.toLocaleString('en-US');
}

function count(n: number, what: string): string {
  return `${num(n)} ${what}${n === 1 ? '' : 's'}`;
}

/** `2026-11-21 16:05:30.123456Z`. */
function time(iso: string): string {
  return iso.replace('T', ' ');
}

/** NULL for null; JSON-quoted when ambiguous or unprintable; long values cut (--json has them whole). */
function cell(v: string | null): string {
  if (v === null) return 'NULL';
  const plain = v !== '' && v !== 'NULL' && v.trim() === v && !/\p{Cc}/u.test(v);
  const shown = plain ? v : JSON.stringify(v);
  return shown.length > 60 ? `${shown.slice(0, 60)}…` : shown;
}
