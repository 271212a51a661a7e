/**
 * Is Flashback's replication slot safe for the server? A logical slot keeps
 * every WAL file from its restart_lsn on, whether anyone reads it or not: a
 * capture that stopped (or never runs) fills the source's disk, and a server
 * with `max_slot_wal_keep_size` set removes the WAL instead, leaving a gap in
 * the change log. The rules are pure, shared by `doctor` (one check) and
 * `status` (findings, metrics and alerts of `serve`).
 */
import { formatSize } from '../config/size.js';
import type { SlotInfo } from '../pg/replication/slot.js';
import { lsnText, lsnValue } from '../repo/changelog-format.js';

/** What the rules look at: pg_replication_slots, as plain data (JSON-safe). */
export interface SlotState {
  readonly slot: string;
  /** A walsender streams from it now (a capture is reading). */
  readonly active: boolean;
  /** reserved, extended, unreserved or lost; undefined when the server does not say. */
  readonly walStatus: string | undefined;
  /** WAL held back by the slot, in bytes. */
  readonly retainedWalBytes: number | undefined;
  /** Where the slot's consumer confirmed it has everything up to (confirmed_flush_lsn). */
  readonly confirmedLsn?: string | undefined;
}

/** The change log the slot feeds, as stored in the repository. */
export interface SlotLog {
  /** The newest segment's `<committed>` (or the log's start while it has none). */
  readonly end: bigint;
  /** acknowledged.json's `since`, when written (src/repo/changelog.ts, AckRecord). */
  readonly ackSince?: bigint | undefined;
  /** Its directory in the repository (`changes/<scope>[.<n>]/`). */
  readonly dir: string;
}

/** One thing wrong with the slot. */
export interface SlotProblem {
  /** Stable identifier (the status finding kind). */
  readonly kind: 'slot-ahead' | 'slot-lost' | 'slot-wal' | 'slot-inactive';
  readonly severity: 'warning' | 'critical';
  readonly message: string;
  /** What to do. */
  readonly fix: string;
}

/** The plain-data state of a slot from `slotInfo`. */
export function slotState(info: SlotInfo): SlotState {
  return {
    slot: info.slotName,
    active: info.active,
    walStatus: info.walStatus,
    retainedWalBytes:
      info.retainedWalBytes === undefined ? undefined : Number(info.retainedWalBytes),
    confirmedLsn: info.confirmedFlushLsn?.text,
  };
}

/**
 * The problems of a target's slot, worst first; empty when it is healthy.
 * `maxRetainedWal` is `capture.max_retained_wal` in bytes.
 */
export function judgeSlot(
  target: string,
  s: SlotState,
  maxRetainedWal: number,
  /** The log it feeds: with it, a slot confirmed past the stored log is found. */
  log?: SlotLog,
): SlotProblem[] {
  const out: SlotProblem[] = [];
  // Confirmed past the stored log (and past where capture began to confirm
  // only what is stored): segments the server has discarded are gone from
  // the repository (lost, or an older copy of it put back), and capture
  // refuses to resume (capture.log-behind-slot). Running it, as the
  // inactive slot's advice says, would not help.
  const confirmed = s.confirmedLsn === undefined ? undefined : lsnValue(s.confirmedLsn);
  if (
    !s.active &&
    log?.ackSince !== undefined &&
    confirmed !== undefined &&
    confirmed > log.end &&
    confirmed > log.ackSince
  ) {
    out.push({
      kind: 'slot-ahead',
      severity: 'critical',
      message: `replication slot "${s.slot}" has confirmed ${lsnText(confirmed)}, past the end of the change log of "${target}" in the repository (${lsnText(log.end)}): changes stored in between are no longer in the repository (segments lost, or an older copy of it), and capture refuses to resume`,
      fix: `if a newer copy of the repository has them, put ${log.dir} back from it; otherwise \`flashback capture ${target} --drop-slot\`, then \`flashback capture ${target} --new-log\`, and take a backup`,
    });
    return out;
  }
  const held =
    s.retainedWalBytes === undefined ? 'WAL' : `${formatSize(s.retainedWalBytes)} of WAL`;
  if (s.walStatus === 'lost') {
    out.push({
      kind: 'slot-lost',
      severity: 'critical',
      message: `replication slot "${s.slot}" of "${target}" has lost WAL it needed (wal_status lost, max_slot_wal_keep_size): the change log has a gap and capture cannot continue it`,
      fix: `drop the slot (\`flashback capture ${target} --drop-slot\`), start a new change log and take a new backup; raise max_slot_wal_keep_size or keep capture running so it does not happen again`,
    });
  } else if (s.walStatus === 'unreserved') {
    out.push({
      kind: 'slot-lost',
      severity: 'warning',
      message: `replication slot "${s.slot}" of "${target}" holds more WAL than max_slot_wal_keep_size allows (wal_status unreserved): the next checkpoint removes WAL it needs, a gap in the change log`,
      fix: `start capture now (\`flashback capture ${target}\` or \`capture: true\` under \`flashback serve\`) so it catches up, or raise max_slot_wal_keep_size`,
    });
  }
  if (s.retainedWalBytes !== undefined && s.retainedWalBytes > maxRetainedWal) {
    out.push({
      kind: 'slot-wal',
      severity: 'warning',
      message: `replication slot "${s.slot}" of "${target}" holds ${held} on the server (more than capture.max_retained_wal, ${formatSize(maxRetainedWal)})`,
      fix: s.active
        ? 'capture is running but behind: check its log and the repository'
        : `start capture (\`flashback capture ${target}\`) so the slot moves on, or stop capturing for good with \`flashback capture ${target} --drop-slot\``,
    });
  }
  if (!s.active) {
    out.push({
      kind: 'slot-inactive',
      severity: 'warning',
      message: `nothing reads the replication slot "${s.slot}" of "${target}": capture is not running, or is failing and retrying; the slot holds ${held} and keeps more as the database changes`,
      fix: `if capture runs under \`flashback serve\`, its log says why it fails (a full or read-only repository stops it); otherwise run \`flashback capture ${target}\` (or set \`capture: true\` under serve). If the change log is no longer wanted, \`flashback capture ${target} --drop-slot\``,
    });
  }
  return out;
}
