/**
 * PostgreSQL's int64 timestamps (microseconds since 2000-01-01 UTC), as the
 * replication protocol carries them and as change-log segments store them.
 */

/** Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01 (UTC). */
export const PG_EPOCH_UNIX_MICROS = 946_684_800_000_000n;

/**
 * An int64 timestamp (microseconds since 2000-01-01 UTC, as the replication
 * protocol carries them) as an ISO 8601 string with all six fractional
 * digits, e.g. `2024-05-01T12:34:56.123456Z`.
 */
export function pgTimestampToIso(micros: bigint): string {
  const n = Number(micros);
  // Exact as a double for ±285 years around 2000; outside that, BigInt arithmetic.
  if (!Number.isSafeInteger(n)) return exactIso(micros);
  const seconds = Math.floor(n / 1_000_000);
  // Readers convert one or two timestamps per transaction, mostly of the same
  // second: the date part is formatted once per second.
  if (seconds !== cachedSecond) {
    cachedSecond = seconds;
    cachedPrefix = `${new Date(seconds * 1000 + PG_EPOCH_UNIX_MS).toISOString().slice(0, 19)}.`;
  }
  return `${cachedPrefix}${String(n - seconds * 1_000_000).padStart(6, '0')}Z`;
}

const PG_EPOCH_UNIX_MS = 946_684_800_000;
let cachedSecond = Number.NaN;
let cachedPrefix = '';

function exactIso(micros: bigint): string {
  const unix = micros + PG_EPOCH_UNIX_MICROS;
  let ms = unix / 1000n;
  let sub = unix % 1000n;
  // BigInt division truncates toward zero; timestamps before 1970 need floor.
  if (sub < 0n) {
    sub += 1000n;
    ms -= 1n;
  }
  const iso = new Date(Number(ms)).toISOString();
  return `${iso.slice(0, -1)}${sub.toString().padStart(3, '0')}Z`;
}

/** A timestamp as Unix milliseconds (a double: exact to well under a millisecond, for ages and lags). */
export function pgTimestampToMillis(micros: bigint): number {
  return Number(micros) / 1000 + PG_EPOCH_UNIX_MS;
}

/** The current time as the protocol's int64 microseconds since 2000-01-01. */
export function pgTimestampNow(): bigint {
  return BigInt(Date.now()) * 1000n - PG_EPOCH_UNIX_MICROS;
}

/**
 * The inverse of pgTimestampToIso: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC, up
 * to six fractional digits) to microseconds since 2000-01-01. RangeError on
 * anything else.
 */
export function isoToPgTimestamp(iso: string): bigint {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(iso);
  const seconds = m === null ? Number.NaN : Date.parse(`${m[1]}Z`);
  if (m === null || Number.isNaN(seconds)) throw new RangeError(`not a UTC timestamp: "${iso}"`);
  return BigInt(seconds) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0')) - PG_EPOCH_UNIX_MICROS;
}
