/** `flashback targets` (describe targets) and `flashback targets accept NAME`. */
import type { Command } from 'commander';
import {
  configuredTargets,
  environmentTarget,
  type ResolvedTarget,
  resolveTarget,
} from '../../config/targets.js';
import {
  type ConfigError,
  ExitCode,
  FlashbackError,
  GuardRefusedError,
  UsageError,
} from '../../errors.js';
import { FingerprintStore } from '../../guard/fingerprints.js';
import { confirm, identityLine } from '../../guard/guard.js';
import { checkIdentity, type IdentityCheck } from '../../guard/identity.js';
import { connect, describeConnection } from '../../pg/connect.js';
import { readServerInfo, type ServerInfo } from '../../pg/server-info.js';
import { formatAge, formatBytes, formatTime } from '../../util/format.js';
import type { CliContext } from '../context.js';

/** One target's description, as `targets --json` prints it. */
export interface TargetReport {
  readonly name: string;
  readonly kind: ResolvedTarget['kind'];
  readonly protected: boolean;
  readonly description?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  readonly database?: string | undefined;
  readonly user?: string | undefined;
  readonly reachable: boolean;
  readonly serverVersion?: string | undefined;
  readonly standby?: boolean | undefined;
  readonly sizeBytes?: number | undefined;
  readonly systemIdentifier?: string | undefined;
  readonly lastWrite?: ServerInfo['lastWrite'] | null;
  readonly identity?: {
    readonly status: IdentityCheck['status'];
    /** One phrase, as the human output shows it. */
    readonly summary: string;
    readonly recorded?: string | undefined;
    readonly changes: IdentityCheck['changes'];
    readonly sameAs: readonly string[];
  };
  readonly error?: {
    readonly code: string;
    readonly message: string;
    readonly hint?: string | undefined;
  };
}

export function registerTargets(program: Command, context: (cmd: Command) => CliContext): void {
  const cmd = program
    .command('targets')
    .description(
      'describe targets: address, server version, size, system identifier, last write, identity',
    )
    .argument('[targets...]', 'target names or postgres:// URLs (default: every configured target)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Connects to each target, records its identity fingerprint on first contact
(in the repository), and compares it on every later contact.

Exit codes: 0 all reachable; 2 a target's identity changed or it is the
same database as another target (writes to it are refused until \`flashback
targets accept\`); 5 a target could not be reached; 3 bad config.`,
    )
    .action(async (refs: string[], _opts, self: Command) => {
      process.exitCode = await listTargets(context(self), refs);
    });

  cmd
    .command('accept')
    .description(
      "accept a target's changed identity, or that it shares a database with another target",
    )
    .argument('<target>', 'target name')
    .option('--confirm <name>', 'the target name, to confirm without a prompt (protected targets)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
A target that shares its database with a protected target is accepted only
if it is protected itself: an unprotected second name for that database
would let writes through without a confirmation (refused, exit 4).

Exit codes: 0 accepted or nothing to accept; 3 usage; 4 refused (not
confirmed, or an unprotected second name for a protected database); 5 the
target cannot be reached; 6 no repository.`,
    )
    .action(async (name: string, opts: { confirm?: string }, self: Command) => {
      process.exitCode = await acceptTarget(context(self), name, opts.confirm);
    });
}

/** Describes targets; returns the exit code. */
export async function listTargets(ctx: CliContext, refs: readonly string[]): Promise<number> {
  const { config } = await ctx.config();
  const entries: Array<{
    name: string;
    target?: ResolvedTarget;
    error?: ConfigError | FlashbackError;
  }> = [];
  if (refs.length > 0) {
    for (const ref of refs)
      entries.push({ name: ref, target: resolveTarget(ref, config, ctx.env) });
  } else {
    entries.push(...configuredTargets(config, ctx.env));
    if (entries.length === 0) {
      const env = environmentTarget(ctx.env);
      if (env !== undefined) entries.push({ name: env.name, target: env });
    }
  }
  if (entries.length === 0) {
    if (ctx.json) ctx.printJson([]);
    else
      ctx.out(
        'no targets configured\nhint: declare targets in flashback.yaml (`flashback init` writes a starter), or name a postgres:// URL\n',
      );
    return ExitCode.ok;
  }
  const { store, note } = await ctx.fingerprints();
  // Sequential on purpose: fingerprints are recorded in order, so two targets
  // that are one database are reported as such on the very first run.
  const reports: TargetReport[] = [];
  for (const e of entries) {
    reports.push(
      e.target === undefined ? errorReport(e.name, e.error!) : await describe(e.target, store),
    );
  }
  if (ctx.json) {
    ctx.printJson(reports);
  } else {
    ctx.out(reports.map(formatReport).join('\n'));
    if (note !== undefined) ctx.out(`\nnote: ${note}\n`);
  }
  if (reports.some((r) => !r.reachable)) return ExitCode.unreachable;
  // A changed identity, or two names for one database: writes to it are
  // refused until accepted, so a scheduled `flashback targets` must notice.
  const suspect = reports.some(
    (r) => r.identity?.status === 'changed' || r.identity?.status === 'same-as-other',
  );
  return suspect ? ExitCode.critical : ExitCode.ok;
}

async function describe(
  target: ResolvedTarget,
  store: Awaited<ReturnType<CliContext['fingerprints']>>['store'],
): Promise<TargetReport> {
  const c = target.connection;
  const base = {
    name: target.name,
    kind: target.kind,
    protected: target.protected,
    description: target.description,
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
  };
  let client: Awaited<ReturnType<typeof connect>>;
  try {
    client = await connect(target, { timeoutSeconds: 5 });
  } catch (err) {
    if (err instanceof FlashbackError) return { ...errorReport(target.name, err), ...base };
    throw err;
  }
  try {
    const info = await readServerInfo(client, c);
    const identity = await checkIdentity(target, info.identity, store);
    return {
      ...base,
      reachable: true,
      serverVersion: info.version,
      standby: info.inRecovery,
      sizeBytes: info.sizeBytes,
      systemIdentifier: info.identity.systemIdentifier,
      lastWrite: info.lastWrite ?? null,
      identity: {
        status: identity.status,
        summary: identityLine(identity),
        recorded: identity.record?.recorded,
        changes: identity.changes,
        sameAs: identity.sameAs.map((r) => r.target),
      },
    };
  } finally {
    await client.end().catch(() => {});
  }
}

function errorReport(name: string, err: FlashbackError): TargetReport {
  return {
    name,
    kind: 'config',
    protected: true,
    reachable: false,
    error: { code: err.code, message: err.message, hint: err.hint },
  };
}

const SOURCE: Record<NonNullable<ServerInfo['lastWrite']>['source'], string> = {
  'commit-timestamp': 'commit timestamps',
  'wal-file': 'newest WAL file',
  'table-statistics': 'newest vacuum/analyze, a lower bound',
};

function formatReport(r: TargetReport): string {
  const head = `${r.name}  (${r.protected ? 'protected' : 'unprotected'})${r.description === undefined ? '' : `  ${r.description}`}`;
  const rows: Array<[string, string]> = [];
  if (r.host !== undefined) rows.push(['address', `${r.user}@${r.host}:${r.port}/${r.database}`]);
  if (r.error !== undefined) {
    rows.push(['error', r.error.message]);
    if (r.error.hint !== undefined) rows.push(['hint', r.error.hint]);
  } else {
    rows.push([
      'server',
      `PostgreSQL ${r.serverVersion}, ${r.standby === true ? 'standby' : 'primary'}, ${formatBytes(r.sizeBytes ?? 0)}`,
    ]);
    rows.push(['system id', r.systemIdentifier ?? '']);
    const lw = r.lastWrite;
    rows.push([
      'last write',
      lw == null
        ? 'unknown (no readable signal: enable track_commit_timestamp, or grant pg_monitor)'
        : `${formatTime(lw.at)}, ${formatAge((Date.now() - Date.parse(lw.at)) / 1000)} ago (${SOURCE[lw.source]})`,
    ]);
    rows.push(['identity', r.identity?.summary ?? '']);
  }
  return `${head}\n${rows.map(([k, v]) => `  ${k.padEnd(11)} ${v}`).join('\n')}\n`;
}

/** Re-records a target's fingerprint after a deliberate change; returns the exit code. */
export async function acceptTarget(
  ctx: CliContext,
  name: string,
  confirmFlag: string | undefined,
): Promise<number> {
  const { config } = await ctx.config();
  const target = resolveTarget(name, config, ctx.env);
  if (target.kind !== 'config')
    throw new UsageError('only configured targets have recorded fingerprints to accept');
  const store = new FingerprintStore(await ctx.repository());
  const client = await connect(target);
  let info: ServerInfo;
  try {
    info = await readServerInfo(client, target.connection);
  } finally {
    await client.end().catch(() => {});
  }
  const before = await store.get(target.name);
  const check = await checkIdentity(target, info.identity, store);
  if (check.status === 'new' || check.status === 'match') {
    const msg = `target "${target.name}" (${describeConnection(target.connection)}): fingerprint ${check.status === 'new' ? 'recorded now' : 'matches'}; nothing to accept`;
    if (ctx.json) ctx.printJson({ target: target.name, accepted: false, status: check.status });
    else ctx.out(`${msg}\n`);
    return ExitCode.ok;
  }
  const lines = [
    `target "${target.name}" (${describeConnection(target.connection)})`,
    ...check.changes.map((c) => `  ${c.field}: recorded ${c.recorded}, now ${c.current}`),
    ...check.sameAs.map(
      (r) =>
        `  same database as target "${r.target}" (${r.host}:${r.port}, system ${r.systemIdentifier}, database "${r.database}")`,
    ),
    '',
  ];
  ctx.err(lines.join('\n'));
  // Accepting a share makes this target a second name for the other's
  // database. If that one is protected, an unprotected name for it would
  // let writes to production through without a confirmation: refused.
  const guarded = check.sameAs
    .map((r) => r.target)
    .filter((n) => n !== target.name && config.targets[n]?.protected === true);
  if (guarded.length > 0 && !target.protected) {
    throw new GuardRefusedError(
      'unprotected-alias',
      target.name,
      `target "${target.name}" is unprotected and its database is that of protected target${guarded.length === 1 ? '' : 's'} ${guarded.map((n) => `"${n}"`).join(', ')}: accepting it would let writes to ${guarded.length === 1 ? 'that database' : 'those databases'} through without a confirmation. Nothing was accepted.`,
      {
        hint: `if "${target.name}" should point there, mark it protected (\`protected: true\`) and accept again; otherwise fix its connection in the configuration`,
      },
    );
  }
  await confirm(target, confirmFlag, ctx.guardIO);
  const sameAs = [...(before?.acceptedSameAs ?? []), ...check.sameAs.map((r) => r.target)];
  const record = await store.accept(
    target.name,
    info.identity,
    [...new Set(sameAs)],
    target.protected,
  );
  if (ctx.json) ctx.printJson({ target: target.name, accepted: true, record });
  else
    ctx.out(
      `accepted: target "${target.name}" is now recorded as system ${record.systemIdentifier}, database "${record.database}", host ${record.host}${record.acceptedSameAs.length > 0 ? `; shares its database with ${record.acceptedSameAs.join(', ')}` : ''}\n`,
    );
  return ExitCode.ok;
}
