/**
 * Identity fingerprints of named targets, kept in the repository under
 * `targets/<name>.json`. The first successful contact records a target's
 * fingerprint; later contacts compare against it. See docs/REPOSITORY.md.
 */

import type { ServerIdentity } from '../pg/server-info.js';
import type { Repository } from '../repo/repository.js';
import { ObjectNotFoundError } from '../storage/storage.js';

/** A recorded fingerprint. */
export interface FingerprintRecord {
  readonly target: string;
  readonly systemIdentifier: string;
  readonly database: string;
  readonly host: string;
  /** Recorded for information; not compared (a pooler may sit on another port). */
  readonly port: number;
  /** When this fingerprint was first recorded (or last accepted). */
  readonly recorded: string;
  /** Other targets this one was deliberately accepted as sharing a database with. */
  readonly acceptedSameAs: readonly string[];
  /**
   * Whether the target was protected when those shares were accepted (absent
   * in older records). `targets accept` refuses an unprotected second name
   * for a protected database; the acceptance holds while the target stays
   * as protected as it was, so turning it unprotected afterwards cannot let
   * writes through without a confirmation (checkIdentity).
   */
  readonly acceptedProtected?: boolean | undefined;
}

/** One field of the fingerprint that differs from the record. */
export interface FingerprintChange {
  readonly field: 'systemIdentifier' | 'database' | 'host';
  readonly recorded: string;
  readonly current: string;
}

/** Reads and writes fingerprint records. */
export class FingerprintStore {
  constructor(private readonly repo: Repository) {}

  /** Where the records live, for messages. */
  get location(): string {
    return `${this.repo.storage.location}/targets`;
  }

  async get(target: string): Promise<FingerprintRecord | undefined> {
    try {
      return parse(await this.repo.storage.read(key(target)));
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return undefined;
      throw err;
    }
  }

  async all(): Promise<FingerprintRecord[]> {
    const out: FingerprintRecord[] = [];
    for await (const obj of this.repo.storage.list('targets/')) {
      if (!obj.key.endsWith('.json')) continue;
      out.push(parse(await this.repo.storage.read(obj.key)));
    }
    return out.sort((a, b) => a.target.localeCompare(b.target));
  }

  /** Records a first contact; returns false (and changes nothing) if a record already exists. */
  async recordFirst(target: string, identity: ServerIdentity): Promise<boolean> {
    return this.repo.storage.writeIfAbsent(key(target), serialize(toRecord(target, identity, [])));
  }

  /** Replaces a record: a deliberate acceptance of a changed or shared identity. */
  async accept(
    target: string,
    identity: ServerIdentity,
    sameAs: readonly string[],
    /** Whether the target is protected as it is accepted. */
    isProtected: boolean,
  ): Promise<FingerprintRecord> {
    const record = { ...toRecord(target, identity, sameAs), acceptedProtected: isProtected };
    await this.repo.storage.write(key(target), serialize(record));
    return record;
  }
}

/** The fields of `identity` that differ from `record`. */
export function compareFingerprint(
  record: FingerprintRecord,
  identity: ServerIdentity,
): FingerprintChange[] {
  const changes: FingerprintChange[] = [];
  for (const field of ['systemIdentifier', 'database', 'host'] as const) {
    if (record[field] !== identity[field])
      changes.push({ field, recorded: record[field], current: identity[field] });
  }
  return changes;
}

/** True if two identities are the same database of the same cluster (host is not compared: aliases exist). */
export function sameDatabase(
  a: { systemIdentifier: string; database: string },
  b: { systemIdentifier: string; database: string },
): boolean {
  return a.systemIdentifier === b.systemIdentifier && a.database === b.database;
}

function key(target: string): string {
  return `targets/${target}.json`;
}

function toRecord(
  target: string,
  identity: ServerIdentity,
  sameAs: readonly string[],
): FingerprintRecord {
  return {
    target,
    systemIdentifier: identity.systemIdentifier,
    database: identity.database,
    host: identity.host,
    port: identity.port,
    recorded: new Date().toISOString(),
    acceptedSameAs: [...sameAs].sort(),
  };
}

function serialize(record: FingerprintRecord): Buffer {
  return Buffer.from(`${JSON.stringify(record, null, 2)}\n`);
}

function parse(bytes: Buffer): FingerprintRecord {
  const r = JSON.parse(bytes.toString('utf8')) as Partial<FingerprintRecord>;
  return { ...r, acceptedSameAs: r.acceptedSameAs ?? [] } as FingerprintRecord;
}
