/** `flashback history TABLE KEY`: every version of one row, from the repository alone. */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../../errors.js';
import {
  type Cell,
  type HistoryPart,
  parseKeyArgs,
  parseTimeArg,
  type RowHistory,
  type RowVersion,
  rowHistory,
} from '../../history/history.js';
import type { CliContext } from '../context.js';

interface HistoryFlags {
  readonly key?: string[];
  readonly target?: string;
  readonly since?: string;
  readonly until?: string;
}

export function registerHistory(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('history')
    .description('every version of one row: transaction, commit time and the columns that changed')
    .argument('<table>', 'the table: name or schema.name')
    .argument(
      '[key]',
      'the primary-key value; for a composite key, values in key-column order, comma-separated',
    )
    .option(
      '--key <column=value>',
      'a key column by name (repeat per column), instead of KEY',
      collect,
    )
    .option('-t, --target <name>', 'whose change log (default: the only target with one)')
    .option(
      '--since <time>',
      'start of the window: an ISO time (UTC unless it has a zone) or a duration ago (2h)',
    )
    .option('--until <time>', 'end of the window, inclusive: same forms as --since')
    .option('--json', 'print JSON: an array of versions')
    .addHelpText(
      'after',
      `
Keys:
  history subscribers 42                         one key column
  history memberships 7,42                       composite key (tenant_id, user_id), in key order
  history memberships --key tenant_id=7 --key user_id=42
                                                 by name; for values containing a comma
A one-column key takes the whole KEY argument, commas included. Values are
PostgreSQL's text form (what \`SELECT col::text\` prints); integer columns
accept any integer spelling.

Reads the repository only. The row's starting state comes from the newest
snapshot before the window (only the chunk that can hold the key is read);
then every transaction in the change log that touched the row gives one
version: its commit time (UTC, microseconds), transaction id, LSN, operation
and the columns that changed, old → new. The first version shown is the row
as it was when the window opened (every column). If the key changes, the
history follows the row to its new key and says so (asked by a key the row
moved to, it starts under the old key); if the table was renamed, it
follows the table (by its OID) under its earlier names; a renamed column
shows as "new (renamed from old)", a dropped table as the row's last
version (drop). After a
failover (\`capture --new-log\`), a window that spans several of the
target's change logs reads each, oldest first, as its own history; the gap
between two is shown (what was committed in it is in neither), and in
--json each version carries \`log\` (1, 2, …). Times: --since
2026-11-21T16:05:30Z, "2026-11-21 17:05:30.123456+01:00", 30m, 2h.

Exit codes: 0 versions found; 3 usage, or no version of the row in the
window; 6 no repository; 7 locked (a prune is running: it reads under a
shared lock); 8 a snapshot chunk or change-log segment it needs is missing or
damaged.`,
    )
    .action(async (table: string, key: string | undefined, opts: HistoryFlags, self: Command) => {
      const ctx = context(self);
      const spec = parseKeyArgs(key, opts.key ?? []);
      const now = new Date();
      const since = opts.since === undefined ? undefined : parseTimeArg(opts.since, '--since', now);
      const until = opts.until === undefined ? undefined : parseTimeArg(opts.until, '--until', now);
      if (since !== undefined && since > parseTimeArg('now', '--since', now)) {
        throw new UsageError(
          `--since ${since} is in the future: no version can be in that window`,
          {
            hint: 'check the date and its zone (no zone means UTC)',
          },
        );
      }
      const repo = await ctx.repository();
      const h = await rowHistory({ repo, target: opts.target, table, key: spec, since, until });
      if (ctx.json) {
        // stdout stays an array of versions; what a reader should know goes to stderr.
        for (const n of h.notes) ctx.err(`note: ${n}\n`);
        for (const p of h.parts ?? []) {
          if (p.gapBefore !== undefined) ctx.err(`note: ${gapLine(p.gapBefore)}\n`);
          if (p.none !== undefined) ctx.err(`note: log ${p.log}: ${p.none}\n`);
        }
        ctx.printJson(h.versions);
      } else {
        ctx.out(render(h, since, until));
      }
      process.exitCode = ExitCode.ok;
    });
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The gap before a log's part, said the same way in both forms. */
function gapLine(gap: string): string {
  return `gap: ${gap}; what was committed between them is in neither log`;
}

/** The human form: a header, notes, then one block per version. */
export function render(h: RowHistory, since?: string, until?: string): string {
  const lines: string[] = [];
  const n = h.versions.length;
  lines.push(
    `${h.schema}.${h.table} (${h.keyColumns.join(', ')}) = (${h.key.join(', ')}), target ${h.target}: ${n} version${n === 1 ? '' : 's'}`,
  );
  const from = (snapshot: RowHistory['snapshot'], logStart: string): string =>
    `from ${
      snapshot === null
        ? 'no snapshot'
        : `snapshot ${snapshot.id} (read ${snapshot.chunksRead} of its ${snapshot.chunks} chunk${snapshot.chunks === 1 ? '' : 's'} of the table)`
    } and the change log (from LSN ${logStart})`;
  const window =
    since !== undefined || until !== undefined
      ? `window ${since === undefined ? 'start' : time(since)} to ${until === undefined ? 'now' : time(until)}`
      : '';
  const parts = h.parts ?? [];
  if (parts.length === 0) lines.push(`${from(h.snapshot, h.logStart)}${window && `; ${window}`}`);
  else {
    lines.push(
      `from change logs ${parts[0]!.log} to ${parts.at(-1)!.log}, each its own history${window && `; ${window}`}`,
    );
  }
  for (const note of h.notes) lines.push(`note: ${note}`);
  // A part's header before its first version (or in place of versions it has none of).
  let at = 0;
  const partHeader = (p: HistoryPart): void => {
    lines.push('');
    if (p.gapBefore !== undefined) {
      lines.push(`-- ${gapLine(p.gapBefore)}`);
    }
    lines.push(`-- log ${p.log}: ${p.none ?? from(p.snapshot, p.logStart)}`);
  };
  h.versions.forEach((v, i) => {
    while (at < parts.length && (v.log === undefined || parts[at]!.log <= v.log)) {
      partHeader(parts[at++]!);
    }
    lines.push('');
    lines.push(heading(v));
    // The first version of each log's part shows every column: the log starts afresh.
    const first = i === 0 || (v.log !== undefined && h.versions[i - 1]!.log !== v.log);
    const cols = v.row === null ? [] : first ? Object.keys(v.row) : v.changed;
    const shown = (c: string): string =>
      v.renamed?.[c] !== undefined ? `${c} (renamed from ${v.renamed[c]})` : c;
    const width = Math.max(0, ...cols.map((c) => shown(c).length));
    if (v.keyChangedFrom !== undefined) {
      lines.push(`    key moved from (${v.keyChangedFrom.join(', ')}) to (${v.key.join(', ')})`);
    }
    if (v.row === null) {
      lines.push(
        `    (row ${v.op === 'truncate' ? 'removed by TRUNCATE' : v.op === 'drop' ? 'removed with its table: DROP TABLE' : 'deleted'})`,
      );
      return;
    }
    if (cols.length === 0) lines.push('    (no column changed)');
    for (const c of cols) {
      const now =
        v.dropped?.includes(c) === true
          ? '(column dropped)'
          : cell(v.row[c] ?? null, v.unknown?.includes(c) === true);
      const was =
        v.added?.includes(c) === true
          ? '(column added) → '
          : v.old !== undefined && c in v.old
            ? `${cell(v.old[c] ?? null, false)} → `
            : '';
      lines.push(`    ${shown(c).padEnd(width)}  ${was}${now}`);
    }
  });
  while (at < parts.length) partHeader(parts[at++]!);
  return `${lines.join('\n')}\n`;
}

function heading(v: RowVersion): string {
  const what = v.op === 'snapshot' ? `as in snapshot ${v.snapshot}` : `${v.op}  xid ${v.xid}`;
  return `${time(v.time)}  ${what}  LSN ${v.lsn}`;
}

/** `2026-11-21 16:05:30.123456Z`. */
function time(iso: string): string {
  return iso.replace('T', ' ');
}

/**
 * A value for display: NULL for null; JSON-quoted only when it would be
 * ambiguous or unprintable (empty, the text "NULL", edge spaces, control
 * characters); long ones cut (--json has them whole).
 */
function cell(v: Cell, unknown: boolean): string {
  if (unknown) return '(unknown: unchanged TOASTed value, not in the log)';
  if (v === null) return 'NULL';
  const plain = v !== '' && v !== 'NULL' && v.trim() === v && !/\p{Cc}/u.test(v);
  const shown = plain ? v : JSON.stringify(v);
  return shown.length > 200 ? `${shown.slice(0, 200)}… (${v.length} characters)` : shown;
}
