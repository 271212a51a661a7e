/**
 * Comparing a target's identity with the recorded fingerprints: has the
 * target changed since it was first seen, and is it secretly the same
 * database as another named target (a `staging` URL that now points at
 * production)?
 */
import type { ResolvedTarget } from '../config/targets.js';
import { GuardRefusedError } from '../errors.js';
import type { ServerIdentity } from '../pg/server-info.js';
import { unwritable } from '../repo/lock.js';
import {
  compareFingerprint,
  type FingerprintChange,
  type FingerprintRecord,
  type FingerprintStore,
  sameDatabase,
} from './fingerprints.js';

/** The result of checking a target's identity. */
export interface IdentityCheck {
  /**
   * - `new`: first contact, fingerprint recorded now;
   * - `match`: equals the recorded fingerprint;
   * - `changed`: differs from the recorded fingerprint (refused for writes);
   * - `same-as-other`: the same database as another named target (refused for writes);
   * - `one-off`: a URL/environment target, not recorded, no collision;
   * - `unrecorded`: no repository to keep fingerprints in.
   */
  readonly status: 'new' | 'match' | 'changed' | 'same-as-other' | 'one-off' | 'unrecorded';
  readonly identity: ServerIdentity;
  /** The record before this check, if there was one. */
  readonly record?: FingerprintRecord | undefined;
  readonly changes: readonly FingerprintChange[];
  /** Other targets whose recorded fingerprint is the same database, not accepted as such. */
  readonly sameAs: readonly FingerprintRecord[];
  /**
   * First contact whose fingerprint could not be written (a read-only or
   * full repository, which a restore reads from all the same): why.
   */
  readonly unrecorded?: string | undefined;
}

/**
 * Checks `identity` for `target` against the store, recording the
 * fingerprint of a named target on first contact.
 */
export async function checkIdentity(
  target: ResolvedTarget,
  identity: ServerIdentity,
  store: FingerprintStore | undefined,
): Promise<IdentityCheck> {
  if (store === undefined) return { status: 'unrecorded', identity, changes: [], sameAs: [] };
  const all = await store.all();
  const named = target.kind === 'config';
  const record = named ? all.find((r) => r.target === target.name) : undefined;
  // An accepted share holds while it does not make an unprotected second
  // name for a protected target's database (which `targets accept` refuses):
  // made unprotected since, or the other target protected since, writes to
  // that database would go through this name without a confirmation.
  // Without the configuration's protections, only shares accepted unprotected.
  const honoured = (other: string): boolean =>
    target.protected ||
    (target.protectedTargets !== undefined
      ? !target.protectedTargets.has(other)
      : record?.acceptedProtected === false);
  const accepted = new Set((record?.acceptedSameAs ?? []).filter(honoured));
  const sameAs = all.filter(
    (r) => r.target !== target.name && !accepted.has(r.target) && sameDatabase(r, identity),
  );
  if (!named)
    return {
      status: sameAs.length > 0 ? 'same-as-other' : 'one-off',
      identity,
      changes: [],
      sameAs,
    };
  if (record === undefined) {
    let unrecorded: string | undefined;
    try {
      await store.recordFirst(target.name, identity);
    } catch (err) {
      // Recorded at the next contact that can write; a restore from a
      // read-only repository (what it is for) must not fail for it.
      if (unwritable(err) === undefined) throw err;
      unrecorded = (err as Error).message;
    }
    return {
      status: sameAs.length > 0 ? 'same-as-other' : 'new',
      identity,
      changes: [],
      sameAs,
      ...(unrecorded === undefined ? {} : { unrecorded }),
    };
  }
  const changes = compareFingerprint(record, identity);
  const status = changes.length > 0 ? 'changed' : sameAs.length > 0 ? 'same-as-other' : 'match';
  return { status, identity, record, changes, sameAs };
}

const FIELD_NAMES: Record<FingerprintChange['field'], string> = {
  systemIdentifier: 'system identifier',
  database: 'database',
  host: 'host',
};

/** The refusal a write to this target must meet, or undefined if its identity is fine. */
export function identityRefusal(
  target: ResolvedTarget,
  check: IdentityCheck,
): GuardRefusedError | undefined {
  if (check.status === 'changed') {
    const what = check.changes
      .map((c) => `${FIELD_NAMES[c.field]} was ${c.recorded}, now ${c.current}`)
      .join('; ');
    const also =
      check.sameAs.length > 0
        ? `; it is now the same database as target ${check.sameAs.map((r) => `"${r.target}"`).join(', ')}`
        : '';
    return new GuardRefusedError(
      'fingerprint-changed',
      target.name,
      `target "${target.name}" is not the database it was when first recorded (${check.record?.recorded ?? '?'}): ${what}${also}. Nothing was written.`,
      {
        hint: `if this change is deliberate (a new cluster, a moved server), accept it with: flashback targets accept ${target.name}`,
      },
    );
  }
  if (check.status === 'same-as-other') {
    const others = check.sameAs.map((r) => `"${r.target}" (${r.host}:${r.port})`).join(', ');
    const id = `system identifier ${check.identity.systemIdentifier}, database "${check.identity.database}"`;
    const self = target.kind === 'config' ? `target "${target.name}"` : `${target.name}`;
    return new GuardRefusedError(
      'fingerprint-collision',
      target.name,
      `${self} is the same database as target ${others} (${id}). Nothing was written.`,
      {
        hint:
          target.kind === 'config'
            ? `check ${target.name}'s host/URL; if both names deliberately point at one database: flashback targets accept ${target.name}`
            : `if you mean that database, name it as target ${check.sameAs[0]?.target ?? ''} so its protection applies`,
      },
    );
  }
  return undefined;
}
