/** `flashback list` and `flashback show SNAPSHOT`. */
import type { Command } from 'commander';
import { staleUnlogged, staleUnloggedText } from '../../backup/from-log.js';
import { ExitCode } from '../../errors.js';
import type { SchemaModel } from '../../pg/schema/model.js';
import { damagedSnapshots, readKnownDamage } from '../../repo/damage.js';
import { type RunRecord, RunStore } from '../../repo/runs.js';
import { type SnapshotManifest, SnapshotStore } from '../../repo/snapshots.js';
import { formatBytes, formatTime } from '../../util/format.js';
import type { CliContext } from '../context.js';
import { blockedRestoreWarning, describeUnsupported } from '../unsupported.js';

export function registerSnapshots(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('list')
    .description('list the snapshots in the repository, oldest data first')
    .option('-t, --target <name>', 'only snapshots of this target')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
TIME is the moment of the snapshot's data (its consistent point), which
orders the list: a snapshot from the log (backup --from-log --lsn) may be
of an earlier moment than snapshots written before it. "latest", status
and retention go by the same order.

VERIFIED is the newest verification (pass, FAIL, or error: it could not
run), or DAMAGED for a snapshot using a chunk found missing or damaged
since and not written again (damaged: true with --json).

A snapshot whose manifest cannot be read is left out with a warning on
stderr: commands that choose a snapshot ("latest", a moment) choose among
the others, and prune refuses to run. \`flashback check\` says what else is
affected.

Exit codes: 0 listed; 6 no repository, or a snapshot of a newer format; 8 a
snapshot's manifest is damaged (the others are listed).`,
    )
    .action(async (opts: { target?: string }, self: Command) => {
      process.exitCode = await list(context(self), opts.target);
    });
  program
    .command('show')
    .description('show one snapshot: its source, totals, tables and anything not reproducible')
    .argument('<snapshot>', 'snapshot id, a unique prefix of one, or "latest"')
    .option('--json', 'print JSON')
    .action(async (ref: string, _opts, self: Command) => {
      process.exitCode = await show(context(self), ref);
    });
}

async function list(ctx: CliContext, target: string | undefined): Promise<number> {
  const repo = await ctx.repository();
  const { storage } = repo;
  // Readable manifests are listed; each unreadable one is warned of (on
  // stderr) and sets the exit code: 8 damaged, 6 of a newer format.
  const { manifests: all, unreadable } = await new SnapshotStore(storage).scan(target);
  for (const u of unreadable) repo.options.onUnreadableManifest?.(u);
  const code = unreadable.reduce<number>(
    (worst, u) => Math.max(worst, u.error.exitCode),
    ExitCode.ok,
  );
  const verified = await new RunStore(storage).verifications();
  // Snapshots using a chunk found bad since (src/repo/damage.ts): not "pass", whatever verify said then.
  const broken = damagedSnapshots(await readKnownDamage(storage));
  const verification = (id: string) => {
    const v = verified.get(id);
    return v === undefined
      ? null
      : {
          ok: v.ok,
          at: v.finishedAt,
          seconds: v.seconds,
          ...(v.error === undefined ? {} : { error: v.error }),
          problems: v.problems?.length ?? 0,
        };
  };
  if (ctx.json) {
    ctx.printJson(
      all.map((m) => ({
        id: m.id,
        target: m.target,
        database: m.database,
        time: m.startedAt,
        // (The moment of its data, which orders the list: a snapshot from the log may be of an earlier one.)
        dataAt: m.consistentAt ?? m.startedAt,
        lsn: m.lsn,
        serverVersion: m.serverVersion,
        totals: m.totals,
        verification: verification(m.id),
        damaged: broken.has(m.id),
        // (Made from the log: the snapshot it started from and what it took of the log.)
        ...(m.fromLog === undefined ? {} : { fromLog: m.fromLog }),
      })),
    );
    return code;
  }
  if (all.length === 0) {
    ctx.out(`no snapshots${target === undefined ? '' : ` of target "${target}"`}\n`);
    return code;
  }
  const rows = all.map((m) => [
    m.id,
    formatTime(m.consistentAt ?? m.startedAt),
    m.target,
    m.lsn,
    String(m.totals.tables),
    m.totals.rows.toLocaleString('en-US'),
    formatBytes(m.totals.bytes),
    formatBytes(m.totals.storedBytes),
    formatBytes(m.totals.newBytes),
    broken.has(m.id) ? 'DAMAGED' : verifiedCell(verified.get(m.id)),
  ]);
  ctx.out(
    table(
      ['ID', 'TIME (UTC)', 'TARGET', 'LSN', 'TABLES', 'ROWS', 'SIZE', 'STORED', 'NEW', 'VERIFIED'],
      rows,
      [4, 5, 6, 7, 8],
    ),
  );
  return code;
}

async function show(ctx: CliContext, ref: string): Promise<number> {
  const store = SnapshotStore.of(await ctx.repository());
  const m = (await store.resolve(ref)) as SnapshotManifest<SchemaModel>;
  if (ctx.json) {
    ctx.printJson({
      ...m,
      schema: undefined,
      tables: m.tables.map(({ chunks, ...t }) => ({ ...t, chunks: chunks.length })),
      unsupported: m.schema.unsupported,
    });
    return ExitCode.ok;
  }
  ctx.out(`snapshot ${m.id}\n`);
  ctx.out(
    `  target    ${m.target}: database "${m.database}" on ${m.host}, PostgreSQL ${m.serverVersion}, system ${m.systemIdentifier}\n`,
  );
  ctx.out(
    `  taken     ${formatTime(m.startedAt)} to ${formatTime(m.finishedAt)}, consistent at LSN ${m.lsn}\n`,
  );
  if (m.fromLog !== undefined) {
    ctx.out(
      `  from log  snapshot ${m.fromLog.base} and ${m.fromLog.transactions.toLocaleString('en-US')} transaction(s), ${m.fromLog.changes.toLocaleString('en-US')} change(s) of the change log (the source's tables not read)\n`,
    );
  }
  ctx.out(
    `  totals    ${m.totals.tables} tables, ${m.totals.rows.toLocaleString('en-US')} rows, ${formatBytes(m.totals.bytes)} of data, ${formatBytes(m.totals.storedBytes)} stored, ${formatBytes(m.totals.newBytes)} new\n\n`,
  );
  const rows = m.tables.map((t) => [
    `${t.schema}.${t.name}`,
    t.rows.toLocaleString('en-US'),
    String(t.chunks.length),
    formatBytes(t.bytes),
    formatBytes(t.storedBytes),
    t.keyKind === 'none'
      ? '(none: whole-row chunking)'
      : `${t.key.join(', ')}${t.keyKind === 'replica-identity' ? ' (replica identity)' : ''}`,
  ]);
  ctx.out(table(['TABLE', 'ROWS', 'CHUNKS', 'SIZE', 'STORED', 'KEY'], rows, [1, 2, 3, 4]));
  for (const u of m.schema.unsupported) ctx.out(`\nnot reproducible: ${describeUnsupported(u)}`);
  if (m.schema.unsupported.length > 0) ctx.out('\n');
  const blocked = blockedRestoreWarning(m.schema.unsupported);
  if (blocked !== undefined) ctx.out(`warning: ${blocked}\n`);
  const stale = staleUnlogged(m);
  if (stale.length > 0) ctx.out(`warning: ${staleUnloggedText(stale, m.fromLog!.base)}\n`);
  return ExitCode.ok;
}

/** `pass 11-21 03:12`, `FAIL 11-21 03:12` (differences), `error 11-21 03:12` (could not run), or `-`. */
function verifiedCell(v: RunRecord | undefined): string {
  if (v === undefined) return '-';
  const when = formatTime(v.finishedAt).slice(5, 16);
  if (v.ok) return `pass ${when}`;
  return `${(v.problems?.length ?? 0) > 0 ? 'FAIL' : 'error'} ${when}`;
}

/** A plain text table; `right` lists columns aligned right (numbers). */
export function table(
  head: readonly string[],
  rows: ReadonlyArray<readonly string[]>,
  right: readonly number[] = [],
): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(head), ...rows.map(line)].join('\n')}\n`;
}
