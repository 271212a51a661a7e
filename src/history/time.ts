/**
 * Times as users type them (--at, --since, --until) and as the change log
 * stores them: ISO 8601 UTC with six fractional digits, so that they compare
 * as strings.
 */

import { parseDuration } from '../config/duration.js';
import { UsageError } from '../errors.js';

/**
 * A time for --since/--until as ISO 8601 UTC with six fractional digits (the
 * form commit times have, so they compare as strings). Accepts
 * `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][Z|±HH[:MM]]` (no zone: UTC), `now`,
 * or a duration meaning that long ago (`90s`, `30m`, `2h`, `1d`, or `now-2h`).
 */
export function parseTimeArg(text: string, flag: string, now: Date = new Date()): string {
  const t = text.trim();
  if (t === 'now') return isoMicro(now.getTime(), '000');
  // `2h` and `now-2h` (the form `restore --at` takes) both mean two hours ago.
  const ago = parseDuration(t.replace(/^now-/, ''));
  if (ago !== undefined) return isoMicro(now.getTime() - ago, '000');
  const m =
    /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i.exec(
      t,
    );
  const bad = () =>
    new UsageError(`${flag}: not a time: "${text}"`, {
      hint: 'give an ISO time such as 2026-11-21T16:05:30Z or "2026-11-21 16:05:30.123456+01:00" (no zone means UTC), or a duration ago such as 30m or 2h',
    });
  if (m === null) throw bad();
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((x) => Number(x ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  const check = new Date(ms);
  if (
    check.getUTCFullYear() !== y ||
    check.getUTCMonth() !== mo - 1 ||
    check.getUTCDate() !== d ||
    h > 23 ||
    mi > 59 ||
    s > 59
  ) {
    throw bad();
  }
  let offsetMin = 0;
  const zone = m[8];
  if (zone !== undefined && zone.toUpperCase() !== 'Z') {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone)!;
    // (Real offsets run from -12:00 to +14:00; PostgreSQL takes up to 15:59.
    // "+99:00" is a typing mistake, not 99 hours to shift by.)
    if (Number(z[2]) > 15 || Number(z[3] ?? 0) > 59) throw bad();
    offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3] ?? 0));
  }
  const frac = (m[7] ?? '').padEnd(6, '0');
  // The offset is whole minutes, so the sub-second digits are unaffected.
  return isoMicro(ms - offsetMin * 60_000, frac.slice(3), Number(frac.slice(0, 3)));
}

/** `YYYY-MM-DDTHH:MM:SS.ffffffZ` from milliseconds (plus extra milliseconds and three more digits). */
export function isoMicro(ms: number, micro: string, extraMs = 0): string {
  const iso = new Date(Math.floor(ms) + extraMs).toISOString();
  return `${iso.slice(0, 23)}${micro}Z`;
}

/** An ISO time with any number of fractional digits in the six-digit form (for comparisons and output). */
export function normaliseTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$/.exec(iso);
  if (m === null) return iso;
  return `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}Z`;
}
