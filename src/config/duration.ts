/**
 * Durations as written in the configuration file and on the command line:
 * one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`, `d`, `w`
 * (e.g. `500ms`, `90s`, `30m`, `26h`, `1h30m`, `7d`).
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

const WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|[smhdw]))+$/;
const PART = /(\d+(?:\.\d+)?)(ms|[smhdw])/g;

/** Milliseconds of a duration, or undefined if the text is not one. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!WHOLE.test(t)) return undefined;
  let ms = 0;
  for (const m of t.matchAll(PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return Math.round(ms);
}

/** A short human form of a duration: `26h`, `1h 30m`, `45s`, `3d 4h`. */
export function formatDuration(ms: number): string {
  const neg = ms < 0;
  let rest = Math.round(Math.abs(ms) / 1000);
  if (rest === 0) return neg ? '-0s' : '0s';
  const parts: string[] = [];
  for (const [unit, secs] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / secs);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * secs;
    if (parts.length === 2) break;
  }
  return `${neg ? '-' : ''}${parts.join(' ')}`;
}
