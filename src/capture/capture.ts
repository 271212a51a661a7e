/**
 * `capture`: the continuous change log of one target.
 *
 * Reads the target's logical replication slot (pgoutput, publication
 * `flashback`) and writes what it receives into change-log segments in the
 * repository (src/repo/changelog.ts). The contract that makes it lossless:
 *
 * - the slot's position is acknowledged only up to the end of the last
 *   commit that is durably in a stored segment; so after any crash the
 *   server still has every change not yet stored;
 * - on start, capture resumes from the repository's own record of the last
 *   stored commit (the `<committed>` part of the newest segment's name), and
 *   skips any transaction committed before it (delivery is at least once);
 * - segments are written at least every `flushIntervalMs` while changes
 *   arrive (the recovery point is seconds), and whenever the buffer reaches
 *   `maxSegmentBytes` (memory is bounded, even mid-transaction);
 * - a heartbeat (a non-transactional logical message) is emitted on the
 *   source every `heartbeatMs` and stored like a change: the age of the
 *   newest stored heartbeat is the real recovery point, also when the source
 *   is idle.
 */
import type { ResolvedTarget } from '../config/targets.js';
import { FlashbackError, OperationError, UsageError } from '../errors.js';
import { FingerprintStore } from '../guard/fingerprints.js';
import { checkIdentity, identityRefusal } from '../guard/identity.js';
import { connect, type PgClient } from '../pg/connect.js';
import { type RelationMessage, type Tuple, UNCHANGED_TOAST } from '../pg/replication/pgoutput.js';
import { createSlot, ensurePublication, ownSlotInfo } from '../pg/replication/slot.js';
import {
  DEFAULT_PUBLICATION,
  openReplicationStream,
  type ReplicationEvent,
  type ReplicationStream,
} from '../pg/replication/stream.js';
import { readServerInfo } from '../pg/server-info.js';
import {
  ChangeLog,
  type ChangeRecord,
  type ChangeValue,
  lsnText,
  lsnValue,
} from '../repo/changelog.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';

/** The prefix of heartbeat messages on the source. */
export const HEARTBEAT_PREFIX = 'flashback.heartbeat';

/** How to capture. */
export interface CaptureOptions {
  readonly target: ResolvedTarget;
  readonly repo: Repository;
  /** Aborting stops capture cleanly: what was received is stored first. */
  readonly signal: AbortSignal;
  /** Longest time a received change waits before it is stored; default 1000 ms. */
  readonly flushIntervalMs?: number | undefined;
  /** A segment is written once its records reach this many bytes; default 8 MiB. */
  readonly maxSegmentBytes?: number | undefined;
  /** Interval of heartbeats on the source; default 5000 ms. */
  readonly heartbeatMs?: number | undefined;
  /** Called after each segment is stored. */
  readonly onSegment?: ((s: SegmentStored) => void) | undefined;
  /** Problems that do not stop capture (e.g. a table that cannot publish its updates). */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Called once streaming (slot created or resumed). */
  readonly onStart?: ((s: CaptureStart) => void) | undefined;
}

/** What capture started from. */
export interface CaptureStart {
  readonly slot: string;
  readonly created: boolean;
  /** Where the log begins (the slot's consistent point). */
  readonly logStart: string;
  /** Where this session resumes (the last stored commit, or the log's start). */
  readonly resumeFrom: string;
}

/** One stored segment. */
export interface SegmentStored {
  readonly key: string;
  readonly records: number;
  readonly bytes: number;
  readonly transactions: number;
  readonly changes: number;
  /** End LSN of the last commit stored so far. */
  readonly committed: string;
  /** Per transaction in this segment: milliseconds from its commit on the source to stored. */
  readonly lagsMs: readonly number[];
  /** Source time of the newest heartbeat or commit now stored. */
  readonly newestAt: string | undefined;
}

/** Totals of a capture session. */
export interface CaptureResult {
  readonly segments: number;
  readonly transactions: number;
  readonly changes: number;
  readonly committed: string;
}

/** Flashback's slot name for a target (slot names allow [a-z0-9_]). */
export function slotName(scope: string): string {
  return `flashback_${scope.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/** Runs capture until the signal aborts (resolves) or the stream fails (throws). */
export async function capture(options: CaptureOptions): Promise<CaptureResult> {
  const { target, repo, signal } = options;
  const flushMs = options.flushIntervalMs ?? 1000;
  const maxBytes = options.maxSegmentBytes ?? 8 * 1024 * 1024;
  const heartbeatMs = options.heartbeatMs ?? 5000;
  const scope = runScope(target.name);
  const log = new ChangeLog(repo.storage, scope);
  const slot = slotName(scope);

  const client = await connect(target, { applicationName: 'flashback capture' });
  let stream: ReplicationStream | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  try {
    const server = await readServerInfo(client, target.connection);
    const identity = await checkIdentity(target, server.identity, new FingerprintStore(repo));
    const refusal = identityRefusal(target, identity);
    if (refusal !== undefined) throw refusal;

    let info = await log.info();
    const existing = await ownSlotInfo(client, slot);
    let created = false;
    const unidentified = await tablesWithoutIdentity(client);
    if (existing === undefined) {
      if (unidentified.length > 0) {
        // A publication FOR ALL TABLES makes the server refuse UPDATE and
        // DELETE on tables without a replica identity: creating it would
        // break the application's writes. Never do that silently.
        throw new UsageError(
          `capture would break writes on "${target.name}": ${unidentified.length} table(s) have no primary key and no replica identity (${unidentified.slice(0, 5).join(', ')}${unidentified.length > 5 ? ', …' : ''}); once published, UPDATE and DELETE on them fail`,
          {
            hint: `give each a primary key, or run ALTER TABLE ${unidentified[0]} REPLICA IDENTITY FULL (and the same for the others), then start capture again`,
          },
        );
      }
      if (info !== undefined) {
        throw new OperationError(
          'capture.slot-missing',
          `the change log of "${target.name}" continues from slot "${slot}", which no longer exists on the server: changes since ${info.startLsn} may be missing`,
          {
            hint: `take a new backup after starting a new log: \`flashback capture ${target.name} --new-log\``,
          },
        );
      }
      // The publication first: pgoutput looks it up as of each change's WAL position.
      await ensurePublication(client, DEFAULT_PUBLICATION);
      const made = await createSlot({ name: target.name, connection: target.connection }, slot);
      created = true;
      info = {
        format: 'flashback-capture',
        version: 1,
        target: target.name,
        slot,
        publication: DEFAULT_PUBLICATION,
        systemIdentifier: server.identity.systemIdentifier,
        database: server.identity.database,
        startLsn: made.consistentPoint.text,
        created: new Date().toISOString(),
      };
      await log.writeInfo(info);
    } else if (info === undefined) {
      throw new OperationError(
        'capture.foreign-slot',
        `slot "${slot}" exists on "${target.name}" but this repository has no change log from it`,
        {
          hint: `it may belong to another repository; if not, drop it with \`flashback capture ${target.name} --drop-slot\``,
        },
      );
    }

    if (unidentified.length > 0) {
      options.onWarning?.(
        `${unidentified.length} table(s) have no primary key and no replica identity (${unidentified.slice(0, 5).join(', ')}): UPDATE and DELETE on them fail while the publication exists; set REPLICA IDENTITY FULL`,
      );
    }
    if (existing?.walStatus === 'lost') {
      // The server would refuse to stream; say what it means for the log.
      throw new OperationError(
        'capture.slot-lost',
        `replication slot "${slot}" of "${target.name}" has lost WAL it needed (wal_status lost, max_slot_wal_keep_size): changes after what the log holds are gone from the server, and the change log cannot continue without a gap`,
        {
          hint: `drop the slot (\`flashback capture ${target.name} --drop-slot\`), then a new change log and a new backup are needed (docs/CAPTURE.md, "Recovery point and slot safety")`,
        },
      );
    }
    const segments = await log.segments();
    const lastSeg = segments[segments.length - 1];
    let seq = (lastSeg?.seq ?? 0) + 1;
    const logStart = lsnValue(info.startLsn);
    let committed = lastSeg?.committed ?? 0n;
    const resumeFrom = committed > logStart ? committed : logStart;
    options.onStart?.({
      slot,
      created,
      logStart: info.startLsn,
      resumeFrom: lsnText(resumeFrom),
    });

    stream = await openReplicationStream(
      { name: target.name, connection: target.connection },
      { slot, startLsn: lsnText(resumeFrom), label: `target "${target.name}"` },
    );
    // Heartbeats go through the ordinary connection; a failure is not fatal
    // (the stream's own errors are what stop capture).
    heartbeat = setInterval(() => {
      void client
        .query(
          `SELECT pg_logical_emit_message(false, '${HEARTBEAT_PREFIX}', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))`,
        )
        .catch(() => {});
    }, heartbeatMs);

    // The segment being filled.
    // Serialised once, as they will be stored (their length is the segment's size).
    let records: string[] = [];
    let bytes = 0;
    let firstAt = 0;
    let described = new Set<number>();
    let txInSeg = 0;
    let changesInSeg = 0;
    let lags: number[] = [];
    let newestAt: string | undefined;
    // Transaction state.
    const relations = new Map<number, RelationMessage>();
    let inTx = false;
    let skipping = false;
    let pendingCommitted = committed;
    const totals = { segments: 0, transactions: 0, changes: 0 };

    const push = (r: ChangeRecord): void => {
      if (records.length === 0) firstAt = Date.now();
      const line = JSON.stringify(r);
      records.push(line);
      bytes += line.length + 1;
    };
    const describe = (relationId: number): void => {
      if (described.has(relationId)) return;
      const rel = relations.get(relationId);
      if (rel === undefined) {
        throw new OperationError(
          'capture.protocol',
          `the server sent a change of relation ${relationId} before describing it`,
        );
      }
      push([
        'R',
        rel.relationId,
        rel.schema,
        rel.name,
        rel.replicaIdentity,
        rel.columns.map((c) => [c.name, c.typeOid, c.typeMod, c.isKey] as const),
      ]);
      described.add(relationId);
    };
    const flush = async (): Promise<void> => {
      if (records.length === 0) return;
      const key = await log.writeSegment(seq, pendingCommitted, records).catch((err: unknown) => {
        throw storeFailed(target.name, repo.storage.location, err);
      });
      seq++;
      committed = pendingCommitted;
      const now = Date.now();
      options.onSegment?.({
        key,
        records: records.length,
        bytes,
        transactions: txInSeg,
        changes: changesInSeg,
        committed: lsnText(committed),
        lagsMs: lags.map((t) => now - t),
        newestAt,
      });
      totals.segments++;
      records = [];
      bytes = 0;
      described = new Set();
      txInSeg = 0;
      changesInSeg = 0;
      lags = [];
      // Durable: now the server may forget everything up to here.
      if (committed > 0n) stream?.acknowledge(lsnText(committed));
    };

    let pending: Promise<ReplicationEvent | undefined> | undefined;
    let arrived: { e: ReplicationEvent | undefined } | undefined;
    // A wait races the next event against a "wake" promise that the flush
    // timer or an abort settles. One wake serves every event until it settles
    // (a timer and a listener per event cost a quarter of capture's CPU), and
    // it settles at least every flush interval while data waits: racing one
    // promise keeps a reaction per race until it settles, so this bounds them
    // to one interval's events (which the segment buffer holds anyway).
    type Wake = { promise: Promise<'tick' | 'stop'>; cancel: () => void; deadline: number };
    const wake = (deadline: number): Wake => {
      let done: (v: 'tick' | 'stop') => void = () => {};
      const promise = new Promise<'tick' | 'stop'>((resolve) => {
        done = resolve;
      });
      const onAbort = (): void => done('stop');
      const timer = setTimeout(() => done('tick'), Math.max(0, deadline - Date.now()));
      timer.unref();
      if (signal.aborted) done('stop');
      else signal.addEventListener('abort', onAbort, { once: true });
      return {
        promise,
        deadline,
        cancel: () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
        },
      };
    };
    let w: Wake | undefined;
    for (;;) {
      const deadline = records.length === 0 ? Date.now() + 60_000 : firstAt + flushMs;
      if (w === undefined || w.deadline > deadline) {
        w?.cancel();
        w = wake(deadline);
      }
      if (pending === undefined) {
        arrived = undefined;
        pending = stream.read().then((e) => {
          arrived = { e };
          return e;
        });
      }
      // Under load the next event is already queued: take it without a race
      // (a race per event leaves a reaction on the wake promise until it settles).
      await undefined;
      await undefined;
      const ev = arrived !== undefined ? arrived.e : await Promise.race([pending, w.promise]);
      if (ev === 'tick' || ev === 'stop') {
        w.cancel();
        w = undefined;
      }
      if (ev === 'stop') break;
      if (ev === 'tick') {
        await flush();
        continue;
      }
      pending = undefined;
      if (ev === undefined) break; // stream closed
      if (ev.kind === 'keepalive') {
        // Idle and everything stored: let the slot move past WAL we don't need.
        if (!inTx && records.length === 0 && ev.walEnd.value > committed) {
          stream.acknowledge(ev.walEnd);
        }
        continue;
      }
      const m = ev.message;
      switch (m.tag) {
        case 'relation':
          relations.set(m.relationId, m);
          described.delete(m.relationId);
          break;
        case 'begin':
          inTx = true;
          // Stored already (delivered again after a restart): skip it whole.
          skipping = m.finalLsn.value < committed;
          if (!skipping) push(['B', m.xid, m.finalLsn.text, m.commitTime]);
          lags.push(Date.parse(m.commitTime));
          break;
        case 'insert':
          if (skipping) break;
          describe(m.relationId);
          push(['I', m.relationId, values(m.newTuple)]);
          changesInSeg++;
          totals.changes++;
          break;
        case 'update':
          if (skipping) break;
          describe(m.relationId);
          push([
            'U',
            m.relationId,
            m.oldKey === undefined ? null : values(m.oldKey),
            m.oldTuple === undefined ? null : values(m.oldTuple),
            values(m.newTuple),
          ]);
          changesInSeg++;
          totals.changes++;
          break;
        case 'delete':
          if (skipping) break;
          describe(m.relationId);
          push([
            'D',
            m.relationId,
            m.oldKey === undefined ? null : values(m.oldKey),
            m.oldTuple === undefined ? null : values(m.oldTuple),
          ]);
          changesInSeg++;
          totals.changes++;
          break;
        case 'truncate':
          if (skipping) break;
          for (const id of m.relationIds) describe(id);
          push(['T', m.relationIds, m.cascade, m.restartIdentity]);
          changesInSeg++;
          totals.changes++;
          break;
        case 'commit':
          inTx = false;
          if (skipping) {
            skipping = false;
            lags.pop();
            break;
          }
          push(['C', m.commitLsn.text, m.endLsn.text, m.commitTime]);
          pendingCommitted = m.endLsn.value;
          newestAt = m.commitTime;
          txInSeg++;
          totals.transactions++;
          break;
        case 'message':
          if (!m.transactional && m.prefix === HEARTBEAT_PREFIX) {
            const at = m.content.toString('utf8');
            push(['H', m.lsn.text, at]);
            newestAt = at > (newestAt ?? '') ? at : newestAt;
          }
          break;
        default:
          break;
      }
      // Checked here too, not only by the timer: while events keep arriving
      // the read always wins the race against the timer, and nothing would
      // be stored until the buffer filled.
      if (bytes >= maxBytes || (records.length > 0 && Date.now() - firstAt >= flushMs)) {
        await flush();
      }
    }
    w?.cancel();
    await flush();
    return { ...totals, committed: lsnText(committed) };
  } catch (err) {
    throw sourceFailed(target.name, err);
  } finally {
    if (heartbeat !== undefined) clearInterval(heartbeat);
    await stream?.close().catch(() => {});
    await client.end().catch(() => {});
  }
}

/** Socket errors of a connection that the server or the network dropped. */
const CONNECTION_ERRNO = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
]);

/**
 * The source failing under capture's ordinary connection (a server
 * restarting or shutting down, the network dropping it: a server error with
 * a SQLSTATE, a reset socket) is an operational failure to retry, not a bug.
 * Anything else is passed on unchanged.
 */
function sourceFailed(target: string, err: unknown): unknown {
  if (err instanceof FlashbackError || !(err instanceof Error)) return err;
  const code = (err as { code?: unknown }).code;
  const fromServer = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
  const dropped =
    (typeof code === 'string' && CONNECTION_ERRNO.has(code)) ||
    /Connection terminated|is not queryable/i.test(err.message);
  if (!fromServer && !dropped) return err;
  return new OperationError(
    'capture.source-failed',
    `capture of "${target}" failed on the source: ${err.message}`,
    {
      hint: 'nothing is lost: once the server is reachable again, capture resumes where the log ends (`flashback serve` retries by itself)',
      cause: err,
    },
  );
}

/**
 * A segment that could not be stored (a full, read-only or unmounted
 * repository) is an operational failure, not a bug: nothing was acknowledged,
 * so the slot keeps every change and the next capture stores them.
 */
function storeFailed(target: string, location: string, err: unknown): FlashbackError {
  if (err instanceof FlashbackError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return new OperationError(
    'capture.store-failed',
    `cannot store the change log of "${target}" in the repository (${location}): ${err instanceof Error ? err.message : String(err)}; nothing is lost: the replication slot keeps every change not yet stored`,
    {
      hint:
        code === 'ENOSPC' || code === 'EDQUOT'
          ? 'free space in the repository, then start capture again: it resumes where the log ends'
          : 'make the repository writable again (mount, permissions, space), then start capture again: it resumes where the log ends',
      cause: err,
    },
  );
}

/** A tuple as stored: unchanged TOASTed values as 0. */
function values(t: Tuple): ChangeValue[] {
  return t.map((v) => (v === UNCHANGED_TOAST ? 0 : v));
}

/** The slot of a target's change log, for `status` and `doctor`. */
export async function captureSlotInfo(client: PgClient, scope: string) {
  return ownSlotInfo(client, slotName(scope));
}

/** Ordinary tables (and partitions) whose updates and deletes cannot be published. */
async function tablesWithoutIdentity(client: PgClient): Promise<string[]> {
  const r = await client.query<{ t: string }>(
    `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS t
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        AND (c.relreplident = 'n'
             OR (c.relreplident = 'd' AND NOT EXISTS (
                   SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
      ORDER BY 1`,
  );
  return r.rows.map((x) => x.t);
}
