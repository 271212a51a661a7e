/** Running doctor's checks on one target, including its identity fingerprint. */

import { slotName } from '../capture/capture.js';
import { DEFAULT_MAX_RETAINED_WAL } from '../config/schema.js';
import type { ResolvedTarget } from '../config/targets.js';
import { TargetUnreachableError } from '../errors.js';
import type { FingerprintStore } from '../guard/fingerprints.js';
import { checkIdentity, type IdentityCheck, identityRefusal } from '../guard/identity.js';
import { connect, describeConnection } from '../pg/connect.js';
import { readServerInfo, type ServerInfo } from '../pg/server-info.js';
import { runScope } from '../repo/runs.js';
import {
  type ChangeLogEnd,
  type Finding,
  runChecks,
  type Severity,
  worstSeverity,
} from './checks.js';

/** Doctor's report on one target. */
export interface DoctorReport {
  readonly target: string;
  readonly connection: string;
  /** Absent when the target could not be reached. */
  readonly server?: ServerInfo | undefined;
  readonly identity?: IdentityCheck | undefined;
  readonly findings: readonly Finding[];
  readonly worst: Severity;
  /** The connection error, when unreachable. */
  readonly unreachable?: TargetUnreachableError | undefined;
}

/** Options of `diagnose`. */
export interface DiagnoseOptions {
  /** `capture.max_retained_wal` in bytes; default 1 GB. */
  readonly maxRetainedWal?: number | undefined;
  /** The target's change log in the repository, when it has one (its slot is then expected). */
  readonly log?: ChangeLogEnd | undefined;
}

/** Connects to a target and runs every check; an unreachable target is a report, not a throw. */
export async function diagnose(
  target: ResolvedTarget,
  fingerprints: FingerprintStore | undefined,
  options: DiagnoseOptions = {},
): Promise<DoctorReport> {
  const base = { target: target.name, connection: describeConnection(target.connection) };
  let client: Awaited<ReturnType<typeof connect>>;
  try {
    client = await connect(target, { timeoutSeconds: 10 });
  } catch (err) {
    if (!(err instanceof TargetUnreachableError)) throw err;
    const finding: Finding = {
      check: 'connect',
      severity: 'critical',
      summary: err.message,
      fix: err.hint,
    };
    return { ...base, findings: [finding], worst: 'critical', unreachable: err };
  }
  try {
    const server = await readServerInfo(client, target.connection);
    const identity = await checkIdentity(target, server.identity, fingerprints);
    const slot = {
      target: target.name,
      slot: slotName(runScope(target.name)),
      maxRetainedWal: options.maxRetainedWal ?? DEFAULT_MAX_RETAINED_WAL,
      log: options.log,
    };
    const checks = await runChecks(client, server, { slot });
    // Right after the privilege: can this target open the connection backups and capture use?
    const at = checks.findIndex((f) => f.check === 'replication-privilege');
    if (checks[at]?.severity === 'ok')
      checks.splice(at + 1, 0, await checkReplicationConnection(target));
    const findings = [identityFinding(target, identity), ...checks];
    return { ...base, server, identity, findings, worst: worstSeverity(findings) };
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Opens a replication connection, as a backup's snapshot and capture do: the
 * role's REPLICATION attribute is not enough when a connection pooler
 * (PgBouncer before 1.23) or pg_hba.conf refuses the connection itself.
 */
async function checkReplicationConnection(target: ResolvedTarget): Promise<Finding> {
  let repl: Awaited<ReturnType<typeof connect>>;
  try {
    repl = await connect(target, { replication: true, timeoutSeconds: 10 });
  } catch (err) {
    if (!(err instanceof TargetUnreachableError)) throw err;
    return {
      check: 'replication-connection',
      severity: 'critical',
      summary: err.message.replace(/^cannot connect/, 'cannot open a replication connection'),
      fix: err.hint,
    };
  }
  try {
    await repl.query('IDENTIFY_SYSTEM');
  } finally {
    await repl.end().catch(() => {});
  }
  return {
    check: 'replication-connection',
    severity: 'ok',
    summary: 'a replication connection opens (backups and capture use one)',
  };
}

function identityFinding(target: ResolvedTarget, check: IdentityCheck): Finding {
  const refusal = identityRefusal(target, check);
  if (refusal !== undefined) {
    return {
      check: 'identity',
      severity: 'critical',
      summary: refusal.message.replace(/ Nothing was written\.$/, ''),
      fix: refusal.hint,
    };
  }
  const summary: Record<IdentityCheck['status'], string> = {
    new: 'fingerprint recorded (first contact)',
    match: 'matches the recorded fingerprint',
    changed: '',
    'same-as-other': '',
    'one-off': 'one-off target: fingerprint not recorded, no other target is this database',
    unrecorded: 'fingerprint not checked: no repository configured',
  };
  return { check: 'identity', severity: 'ok', summary: summary[check.status] };
}
