/**
 * `capture`: the continuous change log of one target.
 *
 * Reads the target's logical replication slot (pgoutput, publication
 * `flashback`) and writes what it receives into change-log segments in the
 * repository (src/repo/changelog.ts). The contract that makes it lossless:
 *
 * - the slot's position is acknowledged only up to a position durably
 *   recorded in a stored segment's name (`<committed>`: the end of the last
 *   commit stored, or a later heartbeat's or keepalive's position when no
 *   transaction was open); so after any crash the server still has every
 *   change not yet stored, and the slot is never ahead of the repository;
 * - on start, capture resumes from the repository's own record (the newest
 *   segment's `<committed>`), and skips any transaction committed before it
 *   (delivery is at least once). A slot confirmed past it means stored
 *   segments were lost (an older copy of the repository): capture refuses,
 *   as resuming would leave a gap nothing else detects;
 * - segments are written at least every `flushIntervalMs` while changes
 *   arrive (the recovery point is seconds), and whenever the buffer reaches
 *   `maxSegmentBytes` (memory is bounded, even mid-transaction);
 * - a heartbeat (a non-transactional logical message) is emitted on the
 *   source every `heartbeatMs` and stored like a change: the age of the
 *   newest stored heartbeat is the real recovery point, also when the source
 *   is idle.
 */
import type { ResolvedTarget } from '../config/targets.js';
import {
  DamagedError,
  FlashbackError,
  OperationError,
  RepositoryError,
  UsageError,
} from '../errors.js';
import { FingerprintStore } from '../guard/fingerprints.js';
import { checkIdentity, identityRefusal } from '../guard/identity.js';
import { connect, type PgClient } from '../pg/connect.js';
import { createSlot, dropSlot, ensurePublication, ownSlotInfo } from '../pg/replication/slot.js';
import { slotWaitMessage } from '../pg/replication/slot-wait.js';
import {
  DEFAULT_PUBLICATION,
  openReplicationStream,
  type ReplicationEvent,
  type ReplicationStream,
} from '../pg/replication/stream.js';
import { qualify } from '../pg/schema/quote.js';
import { INTERNAL_SCHEMA_FILTER } from '../pg/schema/shapes.js';
import { readServerInfo } from '../pg/server-info.js';
import {
  type CaptureInfo,
  ChangeLog,
  HEARTBEAT_PREFIX,
  lsnText,
  lsnValue,
  type PendingSlot,
  type SchemaRecord,
} from '../repo/changelog.js';
import { decodeStored, SCHEMA_EVENT_PREFIX, SegmentBuilder } from '../repo/changelog-format.js';
import { targetLogs } from '../repo/changelogs.js';
import type { Repository } from '../repo/repository.js';
import { runScope } from '../repo/runs.js';
import { faultpoint } from '../util/faultpoint.js';
import { pgTimestampToIso, pgTimestampToMillis } from '../util/pg-time.js';
import {
  installSchemaEvents,
  parseSchemaEvent,
  readSchemaAt,
  type SchemaAt,
} from './schema-events.js';

export { HEARTBEAT_PREFIX };

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
  /**
   * Begin the target's next change log when the current one cannot continue
   * (its slot is gone, or lost WAL it needed). Refused while it can: that
   * would leave a gap for nothing. See src/repo/changelogs.ts.
   */
  readonly newLog?: boolean | undefined;
}

/** What capture started from. */
export interface CaptureStart {
  readonly slot: string;
  /** The slot was created: a new change log begins (see `newLogAdvice`). */
  readonly created: boolean;
  /** Which of the target's logs is written (1 for the first; more after `--new-log`). */
  readonly log: number;
  /** For a log begun after another: where that one ends (the gap lies between). */
  readonly previousEnd?: string | undefined;
  /** Where the log begins (the slot's consistent point). */
  readonly logStart: string;
  /** Where this session resumes (the last stored commit, or the log's start). */
  readonly resumeFrom: string;
}

/**
 * What to tell the user when a new change log begins: a moment in the log is
 * rebuilt from a snapshot the log continues, so every snapshot taken before
 * this start is useless for it (status reports `log-unjoined` until one is
 * taken). Said by `capture` and `serve` alike.
 */
export function newLogAdvice(target: string): string {
  return `a new change log of "${target}" begins: moments in it are restored from a snapshot taken from now on, none taken before; take one while capture runs: \`flashback backup ${target}\``;
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
  /** The log is complete up to here: the newest stored segment's `<committed>`, or the log's start. */
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
  const slot = slotName(scope);

  const client = await connect(target, { applicationName: 'flashback capture' });
  let stream: ReplicationStream | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  try {
    const server = await readServerInfo(client, target.connection);
    const identity = await checkIdentity(target, server.identity, new FingerprintStore(repo));
    const refusal = identityRefusal(target, identity);
    if (refusal !== undefined) throw refusal;

    const ensureSchemaEvents = async (): Promise<void> => {
      const events = await installSchemaEvents(client);
      if (!events.installed) {
        options.onWarning?.(
          `schema changes on "${target.name}" are not recorded in the change log (${events.reason}): a restore to a moment after a column or table change is refused; a superuser can start capture once to install the event triggers (docs/CAPTURE.md, "Schema changes")`,
        );
      }
    };
    // The current log is the target's newest; the one after it is where a
    // new log is begun (or where a start of one died before recording it).
    const current = (await targetLogs(repo.storage, scope)).at(-1);
    let log = current?.log ?? new ChangeLog(repo.storage, scope);
    let info = current?.info;
    const next =
      current === undefined ? undefined : new ChangeLog(repo.storage, scope, log.number + 1);
    let existing = await ownSlotInfo(client, slot);
    const ours = (pending: PendingSlot | undefined): pending is PendingSlot =>
      pending?.slot === slot &&
      pending.systemIdentifier === server.identity.systemIdentifier &&
      pending.database === server.identity.database;
    // A start of the next log that died before recording it: carried on (the
    // old log's slot was dropped before the record was written).
    const nextPending = next === undefined ? undefined : await next.pendingSlot();
    let beginNext = ours(nextPending);
    const startLog = beginNext ? next! : info === undefined ? log : undefined;
    if (existing !== undefined && startLog !== undefined) {
      const pending = beginNext ? nextPending : await startLog.pendingSlot();
      if (ours(pending)) {
        // This repository's start created the slot and died before recording
        // it: no segment came from it. Made again below, with a new start.
        // (Refused while it is being read: then another capture runs.)
        options.onWarning?.(
          `replication slot "${slot}" was created by a start of capture that stopped before recording it (${pending.at}); it holds nothing of the change log: dropping it and starting again`,
        );
        await dropSlot(client, slot);
        existing = undefined;
      }
    }
    if (options.newLog === true && info !== undefined && !beginNext) {
      // Only a log that cannot continue is ended: a slot that is gone or has
      // lost WAL. A healthy slot is never dropped here (--drop-slot, with its
      // confirmation, is for that).
      if (existing !== undefined && existing.walStatus !== 'lost') {
        throw new UsageError(
          `the change log of ${log.label} can continue from its replication slot "${slot}": --new-log begins a new log only when the slot is gone or has lost WAL, since everything between the two logs is in neither`,
          {
            hint: `run \`flashback capture ${target.name}\` to continue it; to end it anyway, drop the slot first (\`flashback capture ${target.name} --drop-slot\`)`,
          },
        );
      }
      if (existing !== undefined) {
        if (existing.active) {
          throw new OperationError(
            'capture.slot-active',
            `replication slot "${slot}" of "${target.name}" is being read by process ${existing.activePid ?? '?'}: another capture runs`,
            { hint: 'stop it first' },
          );
        }
        // Lost: it can stream nothing the log could use.
        await dropSlot(client, slot);
        existing = undefined;
      }
      beginNext = true;
    }
    let previousEnd: string | undefined;
    if (beginNext) {
      const segs = await log.segments();
      previousEnd = lsnText(segs.at(-1)?.committed ?? lsnValue(info!.startLsn));
      log = next!;
      info = undefined;
    }
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
            hint: `give each a primary key (not DEFERRABLE: the server cannot use a deferrable one as replica identity), or run ALTER TABLE ${unidentified[0]} REPLICA IDENTITY FULL (and the same for the others), then start capture again`,
          },
        );
      }
      if (info !== undefined) {
        const end = (await log.segments()).at(-1)?.committed;
        throw new OperationError(
          'capture.slot-missing',
          `the change log of ${log.label} continues from slot "${slot}", which no longer exists on the server: changes after ${end === undefined || end === 0n ? info.startLsn : lsnText(end)} (where the log ends) may be missing`,
          {
            hint: `begin a new log: \`flashback capture ${target.name} --new-log\`, then take a backup (\`flashback backup ${target.name}\`); this log stays, readable for the moments it covers (docs/CAPTURE.md, "Recovery point and slot safety")`,
          },
        );
      }
      // The publication first: pgoutput looks it up as of each change's WAL position.
      await ensurePublication(client, DEFAULT_PUBLICATION);
      // The event triggers before the slot: every schema change in the log is then recorded.
      await ensureSchemaEvents();
      await log.setPendingSlot({
        slot,
        systemIdentifier: server.identity.systemIdentifier,
        database: server.identity.database,
        at: new Date().toISOString(),
      });
      const made = await createSlot({ name: target.name, connection: target.connection }, slot, {
        signal,
        onWait: (w) => options.onWarning?.(slotWaitMessage(`capture ${target.name}`, w)),
      });
      // Tests SIGKILL capture here: a slot the repository has not recorded yet.
      await faultpoint('capture.after-slot');
      created = true;
      const begun: CaptureInfo = {
        format: 'flashback-capture',
        version: 1,
        target: target.name,
        slot,
        publication: DEFAULT_PUBLICATION,
        systemIdentifier: server.identity.systemIdentifier,
        database: server.identity.database,
        startLsn: made.consistentPoint.text,
        created: new Date().toISOString(),
        ...(previousEnd !== undefined ? { log: log.number, previousEnd } : {}),
      };
      info = begun;
      await log.writeInfo(info);
      await log.setPendingSlot(undefined);
    } else if (info === undefined) {
      throw new OperationError(
        'capture.foreign-slot',
        `slot "${slot}" exists on "${target.name}" but this repository has no change log from it`,
        {
          hint: `it may belong to another repository; if not, drop it with \`flashback capture ${target.name} --drop-slot\``,
        },
      );
    }

    if (!created) await ensureSchemaEvents();
    if (unidentified.length > 0) {
      options.onWarning?.(
        `${unidentified.length} table(s) have no primary key and no replica identity (${unidentified.slice(0, 5).join(', ')}): UPDATE and DELETE on them fail while the publication exists; set REPLICA IDENTITY FULL`,
      );
    }
    if (existing?.walStatus === 'lost') {
      // The server would refuse to stream; say what it means for the log.
      throw new OperationError(
        'capture.slot-lost',
        `replication slot "${slot}" of ${log.label} has lost WAL it needed (wal_status lost, max_slot_wal_keep_size): changes after what the log holds are gone from the server, and the change log cannot continue without a gap`,
        {
          hint: `begin a new log: \`flashback capture ${target.name} --new-log\` (it drops the slot), then take a backup; this log stays, readable for the moments it covers (docs/CAPTURE.md, "Recovery point and slot safety")`,
        },
      );
    }
    const segments = await log.segments();
    const lastSeg = segments[segments.length - 1];
    let seq = (lastSeg?.seq ?? 0) + 1;
    // Where the slot's log began (pruning moves startLsn, not the slot).
    const logStart = lsnValue(info.originLsn ?? info.startLsn);
    let committed = lastSeg?.committed ?? 0n;
    const resumeFrom = committed > logStart ? committed : logStart;
    // The slot (read above, before the segments: a capture storing and
    // acknowledging meanwhile only makes the log longer) is never confirmed
    // past the log's end, except by versions before acknowledged.json.
    const confirmed = existing?.confirmedFlushLsn?.value;
    const acks = await log.ackRecord();
    if (acks === undefined) {
      await log.writeAckRecord(lsnText(confirmed ?? logStart));
    } else if (
      confirmed !== undefined &&
      confirmed > resumeFrom &&
      confirmed > lsnValue(acks.since)
    ) {
      throw new DamagedError(
        'capture.log-behind-slot',
        `the change log of ${log.label} ends at ${lsnText(resumeFrom)}, but its replication slot "${slot}" has confirmed ${lsnText(confirmed)}: the changes in between were stored and are no longer in the repository (segments lost, or an older copy of the repository), and the server has discarded them; capturing on would leave a gap nothing detects`,
        {
          hint: `if a newer copy of the repository has them, put ${log.dir} back from it and start capture again; otherwise begin a new log: \`flashback capture ${target.name} --drop-slot\`, then \`flashback capture ${target.name} --new-log\`, and take a backup (docs/CAPTURE.md, "Recovery point and slot safety")`,
        },
      );
    }
    options.onStart?.({
      slot,
      created,
      log: log.number,
      previousEnd,
      logStart: info.startLsn,
      resumeFrom: lsnText(resumeFrom),
    });

    stream = await openReplicationStream(
      { name: target.name, connection: target.connection },
      { slot, startLsn: lsnText(resumeFrom), label: `target "${target.name}"`, raw: true },
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

    // The segment being filled: the messages as received (changelog-format.ts).
    let segment = new SegmentBuilder();
    let firstAt = 0;
    let described = new Set<number>();
    let txInSeg = 0;
    let changesInSeg = 0;
    let lags: number[] = [];
    // Source times of the newest commit (PostgreSQL microseconds) and heartbeat (ISO) stored.
    let newestCommit: bigint | undefined;
    let newestBeat: string | undefined;
    // Transaction state. Relation messages are kept to repeat in every segment.
    const relations = new Map<number, Buffer>();
    // Relations warned about as having no replica identity (once each).
    const warned = new Set<number>();
    // The schema-change generation of the open transaction, and a committed
    // one whose schema is still to be recorded (before its segment is stored).
    let txGeneration: number | undefined;
    let txXid = 0;
    let schemaPending:
      | { generation: number; xid: number; commitLsn: bigint; endLsn: bigint; commitTime: bigint }
      | undefined;
    let inTx = false;
    let skipping = false;
    // Where the log is complete up to once the segment being filled is
    // stored: the last Commit's end LSN, or a later heartbeat's or
    // keepalive's position received with no transaction open (the server
    // sends in WAL order: everything committed before it came before it).
    let pendingCommitted = committed;
    // An idle position to store on its own (an empty segment), see handle().
    let markerDue = false;
    let storedAt = Date.now();
    const totals = { segments: 0, transactions: 0, changes: 0 };

    const push = (m: Buffer): void => {
      if (segment.messages === 0) firstAt = Date.now();
      segment.append(m);
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
      push(rel);
      described.add(relationId);
    };
    const flush = async (): Promise<void> => {
      if (segment.messages === 0 && !(markerDue && pendingCommitted > committed)) return;
      markerDue = false;
      storedAt = Date.now();
      // The repository gone from under the capture (moved, its volume
      // unmounted: an empty mount point): nothing is stored there, and so
      // nothing acknowledged; the slot keeps the changes for when it is back.
      const present = await repo.storage.stat(`${log.dir}capture.json`).catch((err: unknown) => {
        throw storeFailed(target.name, repo.storage.location, err);
      });
      if (present === undefined) {
        throw new RepositoryError(
          'gone',
          `the change log of "${target.name}" is gone from the repository at ${repo.storage.location} (no ${log.dir}capture.json): moved, deleted, or its volume unmounted; nothing was stored, nothing acknowledged`,
          {
            hint: 'mount or restore the repository, then start capture again: the replication slot keeps every change not yet stored',
          },
        );
      }
      const key = await log
        .writeSegment(seq, pendingCommitted, segment.content())
        .catch((err: unknown) => {
          throw storeFailed(target.name, repo.storage.location, err);
        });
      seq++;
      committed = pendingCommitted;
      const now = Date.now();
      const commitAt = newestCommit === undefined ? undefined : pgTimestampToIso(newestCommit);
      options.onSegment?.({
        key,
        records: segment.messages,
        bytes: segment.bytes,
        transactions: txInSeg,
        changes: changesInSeg,
        committed: lsnText(committed),
        lagsMs: lags.map((t) => Math.round(now - t)),
        // Both ISO UTC with six fractional digits: the text order is the time order.
        newestAt:
          commitAt === undefined || (newestBeat !== undefined && newestBeat > commitAt)
            ? newestBeat
            : commitAt,
      });
      totals.segments++;
      segment = new SegmentBuilder();
      described = new Set();
      txInSeg = 0;
      changesInSeg = 0;
      lags = [];
      // Durable: now the server may forget everything up to here (and never
      // anything further: see the startup check against the slot).
      if (committed > 0n) stream?.acknowledge(lsnText(committed));
    };

    // Handles one event; synchronous (storing is the loop's part).
    const handle = (ev: ReplicationEvent): void => {
      if (ev.kind !== 'raw') {
        // No transaction open: the server has sent everything before walEnd,
        // so the slot may move past it once it is stored. Through idle periods
        // (or changes only to other databases) it rides with the next segment,
        // a heartbeat's; stored on its own when the server asks for a reply
        // (a shutting-down server waits until it is confirmed) or when nothing
        // was stored for a while (heartbeats failing).
        if (ev.kind === 'keepalive' && !inTx) {
          if (ev.walEnd.value > pendingCommitted) pendingCommitted = ev.walEnd.value;
          if (
            segment.messages === 0 &&
            pendingCommitted > committed &&
            (ev.replyRequested || Date.now() - storedAt >= IDLE_STORE_MS)
          ) {
            markerDue = true;
          }
        }
        return;
      }
      // Messages are stored as received; only what capture itself needs is read
      // from them (offsets per "Logical Replication Message Formats", protocol 1).
      const m = ev.data;
      switch (m[0]) {
        case 0x52: {
          // Relation: id at 1
          const id = m.readUInt32BE(1);
          relations.set(id, m);
          described.delete(id);
          if (!warned.has(id)) {
            const bare = unidentifiedRelation(m);
            if (bare !== undefined) {
              warned.add(id);
              // The description is as of the change: a table created without
              // a key and given an identity since (the event trigger does so
              // at the end of its CREATE) is fine now. Asked aside, so the
              // stream does not wait; a failed look says nothing.
              void stillUnidentified(client, id)
                .then((still) => {
                  if (still)
                    options.onWarning?.(
                      `${bare} has no primary key and no replica identity: UPDATE and DELETE on it fail on the source while the publication exists; set REPLICA IDENTITY FULL (capture's event triggers do this for new tables when its role is a superuser)`,
                    );
                })
                .catch(() => {});
            }
          }
          break;
        }
        case 0x42: // Begin: final LSN at 1, commit time at 9
          inTx = true;
          txGeneration = undefined;
          txXid = m.readUInt32BE(17);
          // Stored already (delivered again after a restart): skip it whole.
          skipping = m.readBigUInt64BE(1) < committed;
          if (!skipping) push(m);
          lags.push(pgTimestampToMillis(m.readBigInt64BE(9)));
          break;
        case 0x49: // Insert, Update, Delete: relation id at 1
        case 0x55:
        case 0x44:
          if (skipping) break;
          describe(m.readUInt32BE(1));
          push(m);
          changesInSeg++;
          totals.changes++;
          break;
        case 0x54: {
          // Truncate: count at 1, options at 5, relation ids from 6
          if (skipping) break;
          const n = m.readInt32BE(1);
          for (let i = 0; i < n; i++) describe(m.readUInt32BE(6 + 4 * i));
          push(m);
          changesInSeg++;
          totals.changes++;
          break;
        }
        case 0x43: // Commit: flags at 1, commit LSN at 2, end LSN at 10, commit time at 18
          inTx = false;
          if (skipping) {
            skipping = false;
            lags.pop();
            break;
          }
          push(m);
          pendingCommitted = m.readBigUInt64BE(10);
          newestCommit = m.readBigInt64BE(18);
          if (txGeneration !== undefined) {
            schemaPending = {
              generation: txGeneration,
              xid: txXid,
              commitLsn: m.readBigUInt64BE(2),
              endLsn: pendingCommitted,
              commitTime: newestCommit,
            };
          }
          txInSeg++;
          totals.transactions++;
          break;
        case 0x4d: {
          // Message: flags at 1 (1 = transactional), LSN at 2, prefix from 10
          const beat = messageContent(m, BEAT, false);
          if (beat !== undefined) {
            push(m);
            if (newestBeat === undefined || beat > newestBeat) newestBeat = beat;
            // Its position, like a keepalive's (with no transaction open, all
            // before it was sent before it).
            const at = m.readBigUInt64BE(2);
            if (!inTx && at > pendingCommitted) pendingCommitted = at;
            break;
          }
          const event = messageContent(m, SCHEMA_EVENT, true);
          if (event !== undefined && inTx && !skipping) {
            push(m);
            try {
              const e = parseSchemaEvent(event);
              if (e.kind !== 'rewrite') txGeneration = e.generation;
            } catch (err) {
              // Stored as received; readers refuse what they cannot parse.
              options.onWarning?.(`a schema event could not be read: ${(err as Error).message}`);
            }
          }
          break;
        }
        default:
          // Type and Origin messages: nothing a reader needs.
          break;
      }
    };

    let pending: Promise<ReplicationEvent | undefined> | undefined;
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
    // The schema right after a transaction that changed it, recorded before
    // the segment holding its commit is stored (src/capture/schema-events.ts).
    const recordSchema = async (): Promise<void> => {
      const p = schemaPending!;
      schemaPending = undefined;
      let at: SchemaAt | undefined;
      try {
        at = await readSchemaAt(client, p.generation);
      } catch (err) {
        // The source went away: retried (nothing acknowledged). A server's
        // refusal (privileges, a catalog oddity) would refuse again on every
        // retry: that moment is recorded as not known instead.
        const code = (err as { code?: unknown }).code;
        if (!(typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code))) throw err;
        options.onWarning?.(
          `the schema after transaction ${p.xid} could not be read: ${(err as Error).message}; a restore to a moment after it is refused until the next schema change`,
        );
      }
      const record: SchemaRecord = {
        format: 'flashback-schema',
        version: 1,
        generation: p.generation,
        xid: p.xid,
        commitLsn: lsnText(p.commitLsn),
        endLsn: lsnText(p.endLsn),
        commitTime: pgTimestampToIso(p.commitTime),
        readAt: new Date().toISOString(),
        model: at?.model ?? null,
        shapes: at === undefined ? null : Object.fromEntries(at.shapes),
      };
      await log.writeSchema(record).catch((err: unknown) => {
        throw storeFailed(target.name, repo.storage.location, err);
      });
    };
    let w: Wake | undefined;
    let busy = false;
    for (;;) {
      if (signal.aborted) break;
      // Under load, events are taken in batches every BATCH_MS, not one
      // promise per event: waking per event was most of capture's own CPU
      // (which it takes from the source's machine). When a batch comes back
      // empty, the loop waits for the next event instead (idle costs nothing).
      if (busy) await stream.accumulate(BATCH_MS);
      let batch = pending === undefined ? stream.readQueued() : [];
      busy = batch.length > 0;
      if (batch.length === 0) {
        const deadline = segment.messages === 0 ? Date.now() + 60_000 : firstAt + flushMs;
        if (w === undefined || w.deadline > deadline) {
          w?.cancel();
          w = wake(deadline);
        }
        pending ??= stream.read();
        const ev = await Promise.race([pending, w.promise]);
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
        batch = [ev];
      }
      for (const ev of batch) {
        handle(ev);
        if (schemaPending !== undefined) await recordSchema();
        if (segment.bytes >= maxBytes || markerDue) await flush();
      }
      // Checked here too, not only by the timer: while events keep arriving
      // nothing waits on the timer, and nothing would be stored until the
      // buffer filled.
      if (segment.messages > 0 && Date.now() - firstAt >= flushMs) await flush();
    }
    w?.cancel();
    await flush();
    // (Nothing stored in any session: the log is complete up to its start.)
    return { ...totals, committed: lsnText(committed > logStart ? committed : logStart) };
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

/**
 * How long an idle capture goes without storing a segment before it stores
 * the server's position on its own (heartbeats, every few seconds, normally
 * carry it; this keeps the slot moving when they fail).
 */
const IDLE_STORE_MS = 60_000;

/** How long capture lets events accumulate between batches while they keep arriving. */
const BATCH_MS = 20;

const BEAT = Buffer.from(`${HEARTBEAT_PREFIX}\0`, 'utf8');
const SCHEMA_EVENT = Buffer.from(`${SCHEMA_EVENT_PREFIX}\0`, 'utf8');

/**
 * The content of a Message with this (NUL-terminated) prefix, transactional
 * or not as asked (the heartbeat's content is the source's clock; a schema
 * event's, JSON); undefined for any other message.
 */
function messageContent(m: Buffer, prefix: Buffer, transactional: boolean): string | undefined {
  if (m[1] !== (transactional ? 1 : 0) || m.length < 10 + prefix.length + 4) return undefined;
  if (m.compare(prefix, 0, prefix.length, 10, 10 + prefix.length) !== 0) return undefined;
  const at = 10 + prefix.length;
  return m.toString('utf8', at + 4, at + 4 + m.readInt32BE(at));
}

/** The slot of a target's change log, for `status` and `doctor`. */
export async function captureSlotInfo(client: PgClient, scope: string) {
  return ownSlotInfo(client, slotName(scope));
}

/** Ordinary tables (and partitions) whose updates and deletes cannot be published. */
/**
 * The table a Relation message describes, if it has no replica identity
 * (NOTHING, or DEFAULT without a primary key: no column flagged as key).
 * A table created after capture started, when no event trigger could set
 * its identity: the server is then refusing UPDATE and DELETE on it.
 */
function unidentifiedRelation(m: Buffer): string | undefined {
  const r = decodeStored(m, 0, m.length);
  if (r?.[0] !== 'R') return undefined;
  const [, , schema, name, identity, columns] = r;
  const none = identity === 'n' || (identity === 'd' && !columns.some((c) => c[3]));
  return none ? qualify(schema, name) : undefined;
}

/**
 * A table `c` on whose rows the server refuses UPDATE and DELETE once
 * published. A DEFERRABLE primary key is no replica identity: the server
 * uses only an immediate one.
 */
const UNIDENTIFIED = `(c.relreplident = 'n'
  OR (c.relreplident = 'd' AND NOT EXISTS (
        SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate)))`;

async function tablesWithoutIdentity(client: PgClient): Promise<string[]> {
  const r = await client.query<{ t: string }>(
    `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS t
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r'
        AND ${INTERNAL_SCHEMA_FILTER} AND ${UNIDENTIFIED}
      ORDER BY 1`,
  );
  return r.rows.map((x) => x.t);
}

/** Whether the table of this OID has no replica identity now. */
async function stillUnidentified(client: PgClient, oid: number): Promise<boolean> {
  const r = await client.query(`SELECT 1 FROM pg_class c WHERE c.oid = $1 AND ${UNIDENTIFIED}`, [
    oid,
  ]);
  return (r.rowCount ?? 0) > 0;
}
