/**
 * The guard: the one function every destructive command calls before it
 * writes to a target. It shows who the target is and what is about to
 * happen, refuses targets whose identity changed or collides with another
 * target, and on protected targets requires the target's name, given as
 * `--confirm NAME` or typed at a prompt. Without a terminal and without
 * `--confirm` it refuses; a wrong `--confirm` is refused on any target.
 * Nothing is written before it returns.
 */
import { createInterface } from 'node:readline/promises';
import type { ResolvedTarget } from '../config/targets.js';
import { GuardRefusedError, InterruptedError } from '../errors.js';
import { connect, describeConnection, type PgClient } from '../pg/connect.js';
import { readServerInfo, type ServerInfo } from '../pg/server-info.js';
import { formatBytes } from '../util/format.js';
import type { FingerprintStore } from './fingerprints.js';
import { checkIdentity, type IdentityCheck, identityRefusal } from './identity.js';

/** Where the guard talks to the user. */
export interface GuardIO {
  /** Read for the typed confirmation, only when it is a terminal (`isTTY`). */
  readonly input: NodeJS.ReadableStream & { readonly isTTY?: boolean | undefined };
  /** The banner and prompt go here (stderr in the CLI, so stdout stays machine-readable). */
  readonly output: { write(text: string): unknown };
  /**
   * Aborted by Ctrl-C when the command stops cooperatively: a prompt
   * waiting for the name then ends as interrupted (exit 130), not as
   * a refusal, and not by waiting on.
   */
  readonly signal?: AbortSignal | undefined;
}

/** A request to write to a target. */
export interface GuardRequest {
  readonly target: ResolvedTarget;
  /** One line saying what will be done, e.g. `restore 3 tables (1,204 rows) into "shop"`. */
  readonly action: string;
  /** The value of `--confirm`, if given. */
  readonly confirm?: string | undefined;
  /** Fingerprint records; undefined when there is no repository (identity cannot be checked). */
  readonly fingerprints: FingerprintStore | undefined;
  readonly io: GuardIO;
  /** An open connection to the target, if the caller has one. */
  readonly client?: PgClient | undefined;
}

/** How a write was allowed. */
export type ConfirmedBy = 'unprotected' | 'flag' | 'prompt';

/** The guard's permission to write. */
export interface GuardApproval {
  readonly target: ResolvedTarget;
  readonly server: ServerInfo;
  readonly identity: IdentityCheck;
  readonly confirmedBy: ConfirmedBy;
}

/** Checks identity and confirmation; throws GuardRefusedError (exit 4) to refuse. */
export async function guard(req: GuardRequest): Promise<GuardApproval> {
  const client = req.client ?? (await connect(req.target));
  let server: ServerInfo;
  try {
    server = await readServerInfo(client, req.target.connection);
  } finally {
    if (req.client === undefined) await client.end().catch(() => {});
  }
  const identity = await checkIdentity(req.target, server.identity, req.fingerprints);
  req.io.output.write(banner(req.target, server, identity, req.action));
  const refusal = identityRefusal(req.target, identity);
  if (refusal !== undefined) throw refusal;
  const confirmedBy = await confirm(req.target, req.confirm, req.io);
  return { target: req.target, server, identity, confirmedBy };
}

/**
 * The identity check alone, for what writes nothing but still works inside
 * the target's database (a dry run's or preview's trial, rolled back: it
 * takes row locks and runs triggers): a database that is not the one
 * recorded for the target (changed, or another target's) is refused as for
 * a write. No banner and no confirmation: nothing is kept.
 */
export async function refuseWrongIdentity(
  target: ResolvedTarget,
  fingerprints: FingerprintStore,
  client: PgClient,
): Promise<void> {
  const server = await readServerInfo(client, target.connection);
  const refusal = identityRefusal(
    target,
    await checkIdentity(target, server.identity, fingerprints),
  );
  if (refusal !== undefined) throw refusal;
}

/**
 * The confirmation step alone: a protected target needs its confirm name,
 * from `--confirm` or typed at a terminal prompt.
 */
export async function confirm(
  target: ResolvedTarget,
  given: string | undefined,
  io: GuardIO,
): Promise<ConfirmedBy> {
  const expected = target.confirmName;
  // A wrong name is refused even on an unprotected target: whoever typed it
  // believes they are somewhere else.
  if (given !== undefined && given !== expected) throw wrongName(target, given);
  if (!target.protected) return 'unprotected';
  if (given !== undefined) return 'flag';
  if (io.input.isTTY !== true) {
    throw new GuardRefusedError(
      'not-confirmed',
      target.name,
      `refusing to write to protected target ${label(target)} without confirmation (no terminal to ask at). Nothing was written.`,
      { hint: `check the target above, then re-run with --confirm ${expected}` },
    );
  }
  const typed = await prompt(
    io,
    `Type ${kindOfName(target)} "${expected}" to continue, anything else to cancel: `,
  );
  if (typed === undefined) {
    throw new GuardRefusedError(
      'not-confirmed',
      target.name,
      `no confirmation given for ${label(target)}. Nothing was written.`,
    );
  }
  if (typed !== expected) throw wrongName(target, typed);
  return 'prompt';
}

function wrongName(target: ResolvedTarget, given: string): GuardRefusedError {
  return new GuardRefusedError(
    'wrong-confirmation',
    target.name,
    `confirmation "${given}" does not match ${kindOfName(target)} "${target.confirmName}" of ${label(target)}. Nothing was written.`,
    { hint: 'check that this is the target you mean; confirm with its exact name' },
  );
}

function kindOfName(target: ResolvedTarget): string {
  return target.kind === 'config' ? 'the target name' : 'the database name';
}

function label(target: ResolvedTarget): string {
  return target.kind === 'config' ? `"${target.name}"` : target.name;
}

async function prompt(io: GuardIO, question: string): Promise<string | undefined> {
  const signal = io.signal;
  const stopped = () =>
    new InterruptedError('interrupted at the confirmation: nothing was written');
  if (signal?.aborted === true) throw stopped();
  const rl = createInterface({ input: io.input, terminal: false });
  let onAbort: (() => void) | undefined;
  try {
    io.output.write(question);
    return await new Promise<string | undefined>((resolve, reject) => {
      rl.once('line', (line) => resolve(line.trim()));
      rl.once('close', () => resolve(undefined));
      onAbort = () => reject(stopped());
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
    rl.close();
  }
}

/** The identity banner printed before every destructive action. */
export function banner(
  target: ResolvedTarget,
  server: ServerInfo,
  identity: IdentityCheck,
  action: string,
): string {
  const c = target.connection;
  const protection = target.protected ? 'PROTECTED' : 'unprotected';
  const role = server.inRecovery ? 'standby' : 'primary';
  const lines = [
    `target    ${target.name}  (${protection})`,
    `server    PostgreSQL ${server.version} ${role} at ${c.host}:${c.port}, database "${server.identity.database}", ${formatBytes(server.sizeBytes)}`,
    `identity  system ${server.identity.systemIdentifier}; ${identityLine(identity)}`,
    `connect   ${describeConnection(c)}`,
    `action    ${action}`,
  ];
  const width = Math.max(...lines.map((l) => l.length));
  const rule = '='.repeat(Math.min(width, 100));
  return `${rule}\n${lines.join('\n')}\n${rule}\n`;
}

/** One phrase describing an identity check result. */
export function identityLine(check: IdentityCheck): string {
  switch (check.status) {
    case 'new':
      return check.unrecorded === undefined
        ? 'fingerprint recorded now (first contact)'
        : `first contact; fingerprint NOT recorded: the repository cannot be written (${check.unrecorded})`;
    case 'match':
      return `matches the fingerprint recorded ${check.record?.recorded ?? ''}`;
    case 'changed':
      return `CHANGED since ${check.record?.recorded ?? ''} (${check.changes.map((ch) => ch.field).join(', ')})`;
    case 'same-as-other':
      return `SAME DATABASE AS ${check.sameAs.map((r) => `"${r.target}"`).join(', ')}`;
    case 'one-off':
      return 'one-off target (not recorded)';
    case 'unrecorded':
      return 'not checked (no repository to keep fingerprints in)';
  }
}
