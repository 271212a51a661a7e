/** `flashback restore SNAPSHOT --to TARGET`: a snapshot, some tables, or some rows. */
import type { Command } from 'commander';
import { staleUnlogged, staleUnloggedText } from '../../backup/from-log.js';
import type { FlashbackConfig } from '../../config/schema.js';
import { isTargetUrl, type ResolvedTarget, resolveTarget } from '../../config/targets.js';
import { ExitCode, UsageError } from '../../errors.js';
import {
  closeOverlay,
  describePoint,
  type Overlay,
  type PointInTime,
  planPointInTime,
  pointInTimeSource,
  rebuildPlan,
} from '../../history/state.js';
import { parseTimeArg } from '../../history/time.js';
import type { SchemaModel } from '../../pg/schema/model.js';
import { qualify } from '../../pg/schema/quote.js';
import { ChunkStore } from '../../repo/chunks.js';
import { whileShared } from '../../repo/lock.js';
import type { Repository } from '../../repo/repository.js';
import { type SnapshotManifest, SnapshotStore } from '../../repo/snapshots.js';
import type { TableSource } from '../../restore/load.js';
import { type OnConflict, type RestorePlan, selectTables } from '../../restore/plan.js';
import { type RestoreProgress, restore } from '../../restore/restore.js';
import { triggerList } from '../../restore/triggers.js';
import { formatBytes } from '../../util/format.js';
import { parseXidArg } from '../args.js';
import type { CliContext } from '../context.js';
import { clock, Progress, rate } from '../progress.js';
import { blockedRestoreWarning, describeUnsupported } from '../unsupported.js';
import { table } from './snapshots.js';

interface RestoreFlags {
  to?: string;
  table: string[];
  where?: string;
  onConflict: string;
  create?: boolean;
  dryRun?: boolean;
  confirm?: string;
  workers: string;
  owner: boolean;
  acl: boolean;
  disableTriggers?: boolean;
  at?: string;
  lsn?: string;
  beforeXid?: string;
}

export function registerRestore(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('restore')
    .description('restore a snapshot, some of its tables, or some of their rows, into a database')
    .argument(
      '<snapshot>',
      "snapshot id, a unique prefix of one, a target's name (its newest snapshot), or \"latest\" (refused when the repository holds several targets' snapshots); with --at/--lsn/--before-xid the source target's name, or a snapshot of it",
    )
    .requiredOption('--to <target>', 'target name or postgres:// URL to restore into')
    .option(
      '--table <pattern>',
      'only this table: name or schema.name as written, * and ? allowed, or "Quoted" as in SQL (repeatable); a partitioned table stands for its partitions',
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--where <sql>', 'only rows matching this SQL predicate (needs --table)')
    .option(
      '--on-conflict <mode>',
      'rows whose key exists in the target: skip, update (those that differ) or fail',
      'skip',
    )
    .option(
      '--create',
      'create the target database first (it must not exist); loads it in parallel',
    )
    .option('-j, --workers <n>', 'connections for a full restore with --create', '2')
    .option(
      '--no-owner',
      'leave new objects owned by the restoring role (roles are not in a snapshot)',
    )
    .option(
      '--no-acl',
      "do not restore grants (policies' roles must still exist: a policy for another role would let other rows through)",
    )
    .option(
      '--disable-triggers',
      "merging into existing tables: switch their user triggers off inside the restore's transaction (writers to them wait until it ends)",
    )
    .option(
      '--dry-run',
      'print the plan (rows to insert, update, skip per table), tried and rolled back; write nothing',
    )
    .option(
      '--confirm <name>',
      'the target name (for a URL target: its database name), to confirm without a prompt',
    )
    .option('--at <time>', 'the state at this moment: ISO 8601 (no zone = UTC) or now-5m')
    .option('--lsn <lsn>', 'the state just before this WAL position')
    .option('--before-xid <xid>', 'the state just before this transaction committed')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Without --table/--where, the whole snapshot goes into an empty database.
With them, rows are merged into existing tables: by default only rows whose
key is absent are inserted and the rest counted as skipped. The tables'
triggers fire on them, as on any write (a trigger stamping updated_at
changes the rows put back); --disable-triggers switches the user triggers
(not foreign keys) of the tables merged into off after the confirmation
and back on before the commit, as they were: no other session sees them
off, but writers to those tables wait until the restore ends, and it
needs the tables' owner. A table renamed since the snapshot, in the
database it was taken of, is found by its OID: name it as the snapshot
does, and its rows go into it under its name now (a note says so). One
transaction:
a failure leaves the target as it was. Protected targets need --confirm.
--dry-run stages the rows and tries the merge inside a transaction that is
rolled back: the counts are exact, and a merge that would fail (a key that
exists under --on-conflict fail, or for a table without a key an identical
row, a foreign key, deferred ones included, a unique value) says why
(exit 1). The rows it touches are locked while it runs.

Progress (tables, rows, MB of the total, MB/s, post-data statements, data
ETA; before that, with --at/--lsn/--before-xid, the change log read so far)
goes to stderr, except with --json.

With --at, --lsn or --before-xid, the rows are those of that moment: the
newest snapshot before it, with the target's change log (\`flashback
capture\`) up to the moment merged in chunk by chunk. Name the source
target (or a snapshot of it, to choose the starting snapshot). The log must
reach the moment: --at now (or another moment of the last minute) waits up
to 15 s for capture to store it; one in the future is refused. With
--table, only those tables' changes are rebuilt (other tables' changes
cannot refuse the restore).

Examples:
  flashback restore latest --to scratch --create
  flashback restore prod --at now-1m --to scratch --create
  flashback restore prod --before-xid 48211 --to prod --table files --where "kind = 'invoice'"
  flashback restore 20261121-0300 --to prod --table workflow_steps --where "tenant_id = 42" --dry-run

Exit codes: 0 restored (or planned); 1 failed (or a dry run found it would),
nothing written; 3 bad usage
(unknown snapshot or table, invalid --where, non-empty database); 4 refused
by the guard; 5 unreachable; 6 no repository; 7 locked; 8 the snapshot's
manifest, a chunk or a change-log segment it reads is missing or damaged
(nothing written); 130 interrupted.`,
    )
    .action(async (ref: string, opts: RestoreFlags, self: Command) => {
      process.exitCode = await runRestore(context(self), ref, opts);
    });
}

/**
 * The snapshot a restore without a moment names: an id (or prefix), a
 * target's name or URL (its newest snapshot), or `latest`, which is refused
 * when the repository holds snapshots of several targets: the newest of any
 * of them may be another database's, and `--table` would merge its rows
 * into this one.
 */
async function snapshotToRestore(
  ctx: CliContext,
  repo: Repository,
  config: FlashbackConfig,
  ref: string,
): Promise<SnapshotManifest> {
  const store = SnapshotStore.of(repo);
  if (ref in config.targets || isTargetUrl(ref)) {
    return store.resolve('latest', resolveTarget(ref, config, ctx.env).name);
  }
  if (ref === 'latest') {
    const all = await store.all();
    const targets = [...new Set(all.map((m) => m.target))];
    // (One reading of the manifests: resolve('latest') would read them all again.)
    if (targets.length === 1) return all.at(-1)!;
    if (targets.length > 1) {
      throw new UsageError(
        `"latest" is ambiguous: the repository holds snapshots of ${targets.length} targets (${targets.slice(0, 5).join(', ')}${targets.length > 5 ? ', …' : ''})`,
        {
          hint: `name the source instead (its newest snapshot): \`flashback restore ${targets[0]} --to …\`, or a snapshot id from \`flashback list\``,
        },
      );
    }
  }
  return store.resolve(ref);
}

async function runRestore(ctx: CliContext, ref: string, opts: RestoreFlags): Promise<number> {
  if (!['skip', 'update', 'fail'].includes(opts.onConflict)) {
    throw new UsageError(`--on-conflict: expected skip, update or fail, got "${opts.onConflict}"`);
  }
  const workers = Number(opts.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    throw new UsageError(`--workers: expected a whole number from 1 to 64, got "${opts.workers}"`);
  }
  const { config } = await ctx.config();
  const target = resolveTarget(opts.to, config, ctx.env);
  const repo = await ctx.repository();
  const point = pointOf(opts);
  if (point === undefined) return restoreFrom(ctx, ref, opts, { config, target, repo, workers });
  // The change log is read before restore() takes its lock: hold a shared one
  // from the start, so a prune cannot remove segments or the snapshot meanwhile.
  return whileShared(repo.storage, `restore --to ${target.name}`, () =>
    restoreFrom(ctx, ref, opts, { config, target, repo, workers, point }),
  );
}

async function restoreFrom(
  ctx: CliContext,
  ref: string,
  opts: RestoreFlags,
  resolved: {
    config: FlashbackConfig;
    target: ResolvedTarget;
    repo: Repository;
    workers: number;
    point?: PointInTime;
  },
): Promise<number> {
  const { config, target, repo, workers, point } = resolved;
  let manifest: SnapshotManifest<SchemaModel>;
  let source: TableSource | undefined;
  let asOf: string | undefined;
  let overlay: Overlay | undefined;
  if (point === undefined) {
    manifest = (await snapshotToRestore(ctx, repo, config, ref)) as SnapshotManifest<SchemaModel>;
  } else {
    // The source is a target (its newest usable snapshot) or a chosen snapshot of one.
    const isTarget = ref in config.targets || isTargetUrl(ref);
    const forced = isTarget
      ? undefined
      : ((await SnapshotStore.of(repo).resolve(ref)) as SnapshotManifest<SchemaModel>);
    const sourceName = forced?.target ?? resolveTarget(ref, config, ctx.env).name;
    const plan = await planPointInTime(repo, sourceName, point, forced?.id);
    const reading = new Progress(ctx.io.stderr, !ctx.json);
    const rebuilt = await rebuildPlan(
      plan,
      (p) =>
        reading.update(
          () =>
            `reading the change log of ${sourceName}: ${p.transactions.toLocaleString('en-US')} transactions, ${p.changes.toLocaleString('en-US')} changes, up to ${p.commitTime}`,
        ),
      // With --table, only those tables' changes are rebuilt (a table not
      // restored cannot refuse the restore), and a pattern that matches
      // nothing is refused before the log is read.
      opts.table.length === 0
        ? undefined
        : (m) =>
            selectTables(
              m,
              opts.table,
              `at ${describePoint(point)} (snapshot ${m.id} and the change log)`,
            ).map((t) => `${t.schema}.${t.name}`),
    ).finally(() => reading.done());
    overlay = rebuilt.overlay;
    manifest = rebuilt.manifest;
    source = pointInTimeSource(new ChunkStore(repo.storage), overlay);
    asOf = `as of ${describePoint(point)}: snapshot ${manifest.id} + ${overlay.transactions.toLocaleString('en-US')} transaction(s), ${overlay.changes.toLocaleString('en-US')} change(s) from the change log${overlay.last === undefined ? '' : ` (the last committed ${overlay.last.commitTime}, transaction ${overlay.last.xid})`}`;
    if (!ctx.json) ctx.err(`${asOf}\n`);
  }
  const progress = new Progress(ctx.io.stderr, !ctx.json && opts.dryRun !== true);
  const result = await restore({
    manifest,
    source,
    repo,
    target,
    onProgress: (p) => progress.update(() => restoreProgressLine(target.name, p, progress.seconds)),
    tables: opts.table,
    where: opts.where,
    onConflict: opts.onConflict as OnConflict,
    create: opts.create,
    workers,
    owners: opts.owner,
    grants: opts.acl,
    dryRun: opts.dryRun,
    disableTriggers: opts.disableTriggers,
    confirm: opts.confirm,
    io: ctx.guardIO,
    signal: ctx.interruptSignal(),
  }).finally(() => {
    progress.done();
    // (Its versions past the memory budget are in a temporary file.)
    if (overlay !== undefined) closeOverlay(overlay);
  });
  // What the backup named as not reproducible is missing from a whole
  // restore too: said again here, where someone is about to rely on the copy.
  const missing = result.plan.mode === 'full' ? manifest.schema.unsupported : [];
  // Unlogged tables are not in the change log (never published): at a
  // moment their rows are the snapshot's, and none for one created since.
  const restored = new Set(result.plan.tables.map((t) => `${t.schema}.${t.name}`));
  const unlogged =
    asOf === undefined
      ? []
      : manifest.schema.tables
          .filter((t) => t.unlogged && restored.has(`${t.schema}.${t.name}`))
          .map((t) => qualify(t.schema, t.name));
  if (unlogged.length > 0 && !ctx.json) {
    ctx.err(
      `flashback: warning: unlogged table(s) ${unlogged.join(', ')} are not in the change log: their rows are the snapshot's (none for a table created since), not the moment's\n`,
    );
  }
  // A snapshot from the log says the same of its own unlogged tables.
  const stale = asOf === undefined ? staleUnlogged(manifest).filter((t) => restored.has(t)) : [];
  if (stale.length > 0 && !ctx.json) {
    ctx.err(`flashback: warning: ${staleUnloggedText(stale, manifest.fromLog!.base)}\n`);
  }
  if (ctx.json) {
    ctx.printJson({
      applied: result.applied,
      seconds: result.seconds,
      plan: result.plan,
      ...(result.failure === undefined ? {} : { failure: result.failure }),
      ...(asOf === undefined ? {} : { asOf }),
      ...(result.sequencesRaised === undefined ? {} : { sequencesRaised: result.sequencesRaised }),
      notReproduced: missing,
      ...(unlogged.length === 0 ? {} : { unloggedAsOfSnapshot: unlogged }),
      ...(result.warnings === undefined ? {} : { warnings: result.warnings }),
    });
    return result.failure === undefined ? ExitCode.ok : ExitCode.failed;
  }
  ctx.out(formatPlan(result.plan, result.applied));
  for (const w of result.warnings ?? []) ctx.err(`flashback: warning: ${w}\n`);
  if (result.failure !== undefined) {
    ctx.out(`dry run: this restore would fail: ${result.failure}\nnothing was written\n`);
    return ExitCode.failed;
  }
  const raised = (result.sequencesRaised ?? []).filter((r) => r.error === undefined);
  for (const r of result.sequencesRaised ?? []) {
    if (r.error !== undefined)
      ctx.err(
        `flashback: warning: the sequence of ${r.sequence} could not be raised past its rows (${r.error}): set it with setval() before the application inserts\n`,
      );
  }
  if (raised.length > 0) {
    // The log carries no sequence changes: without this, the rebuilt
    // database's first INSERT would take a key that exists.
    ctx.out(
      `sequences moved past their columns' values (the change log does not carry sequence changes): ${raised.map((r) => `${r.sequence} ${r.from ?? '(unused)'} → ${r.to}`).join(', ')}\n`,
    );
  }
  if (missing.length > 0) {
    ctx.out(
      `${result.applied ? 'not reproduced' : 'would not be reproduced'} exactly, as the backup reported (\`flashback show ${manifest.id}\`):\n`,
    );
    for (const u of missing) ctx.out(`  ${describeUnsupported(u)}\n`);
  }
  const db = manifest.schema.database;
  if (
    result.plan.mode === 'full' &&
    opts.create !== true &&
    db !== undefined &&
    (db.acl !== null ||
      db.connectionLimit !== -1 ||
      db.settings.length > 0 ||
      db.comment !== undefined)
  ) {
    // (As pg_restore without --create: the database is the target's, not the snapshot's.)
    ctx.out(
      `the source database's privileges, connection limit, settings and comment ${result.applied ? 'were' : 'would be'} left as they are here: a restore applies them only to a database it creates (--create)\n`,
    );
  }
  if (result.applied) {
    ctx.out(`restored in ${result.seconds.toFixed(1)} s\n`);
  } else if (result.plan.mode === 'full' && opts.create === true) {
    // (No database to try it in: creating one would be a write.)
    const blocked = blockedRestoreWarning(missing);
    if (blocked !== undefined) ctx.out(`warning: ${blocked}\n`);
    ctx.out(
      'dry run: planned from the snapshot, not tried (--create has no database to try it in: `flashback verify` restores a snapshot in a scratch server); nothing was written\n',
    );
  } else {
    ctx.out('dry run: tried and rolled back; nothing was written\n');
  }
  return ExitCode.ok;
}

function pointOf(opts: RestoreFlags): PointInTime | undefined {
  const given = [opts.at, opts.lsn, opts.beforeXid].filter((v) => v !== undefined);
  if (given.length > 1) throw new UsageError('give one of --at, --lsn, --before-xid');
  if (opts.at !== undefined) return { kind: 'time', at: parseTimeArg(opts.at, '--at') };
  if (opts.lsn !== undefined) {
    if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(opts.lsn)) {
      throw new UsageError(`--lsn: not a WAL position: "${opts.lsn}"`, { hint: 'e.g. 0/16B3748' });
    }
    return { kind: 'lsn', lsn: opts.lsn };
  }
  if (opts.beforeXid !== undefined) {
    return { kind: 'xid', xid: parseXidArg(opts.beforeXid, '--before-xid') };
  }
  return undefined;
}

function formatPlan(plan: RestorePlan, applied: boolean): string {
  const head = `${applied ? 'restored' : 'plan'}: ${plan.mode} restore of snapshot ${plan.snapshot} into ${plan.target}${plan.where === undefined ? '' : ` where ${plan.where}`} (existing keys: ${plan.onConflict})\n`;
  const n = (v: number | undefined): string => (v === undefined ? '?' : v.toLocaleString('en-US'));
  const rows = plan.tables.map((t) => [
    `${t.schema}.${t.name}`,
    t.action,
    n(t.snapshotRows),
    n(t.insert),
    n(t.update),
    n(t.skip),
  ]);
  const off = plan.triggersOff ?? [];
  return (
    head +
    table(['TABLE', 'ACTION', 'IN SNAPSHOT', 'INSERT', 'UPDATE', 'SKIP'], rows, [2, 3, 4, 5]) +
    (off.length === 0
      ? ''
      : `user triggers ${applied ? 'switched' : 'to switch'} off while merging: ${triggerList(off)}\n`) +
    plan.tables
      .filter((t) => t.renamedFrom !== undefined)
      .map(
        (t) =>
          `note: ${t.renamedFrom} of the snapshot is ${t.schema}.${t.name} now (the same table by its OID, renamed since): its rows ${applied ? 'went' : 'go'} into ${t.schema}.${t.name}\n`,
      )
      .join('') +
    plan.tables
      .filter((t) => (t.dropped ?? 0) > 0)
      .map(
        (t) =>
          `warning: ${t.schema}.${t.name}: ${n(t.dropped)} row(s) whose key was absent ${applied ? 'were' : 'would be'} not written: a BEFORE INSERT trigger returned NULL for them, a rule took them elsewhere (--disable-triggers switches user triggers off), or another session wrote their keys meanwhile\n`,
      )
      .join('')
  );
}

/**
 * The progress line of a restore: tables, rows and data loaded (with an ETA
 * for the data once 5% of it is through), then the post-data statements
 * (indexes, keys, foreign keys), which a parallel restore runs beside the
 * loading.
 */
export function restoreProgressLine(target: string, p: RestoreProgress, seconds: number): string {
  const loading = p.bytes < p.bytesTotal && p.bytes >= p.bytesTotal * 0.05;
  const eta = loading ? ((p.bytesTotal - p.bytes) * seconds) / p.bytes : 0;
  const statements =
    p.statementsTotal > 0 ? `, post-data ${p.statementsDone}/${p.statementsTotal}` : '';
  // (Once the data is in, an average over the index builds would only fall.)
  const speed = p.bytes < p.bytesTotal ? `, ${rate(p.bytes, seconds)}` : '';
  return `restore to ${target}: ${p.tablesDone}/${p.tablesTotal} tables, ${p.rows.toLocaleString('en-US')} rows, ${formatBytes(p.bytes)} of ${formatBytes(p.bytesTotal)}${speed}${statements}${eta > 0 ? `, data ETA ${clock(eta)}` : ''}`;
}
