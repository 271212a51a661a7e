/** Small formatting helpers for human output. */

/** Bytes as a short human string: `41.2 MB`, `812 B`. Decimal units, like pg_size_pretty's magnitudes. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  // (Bytes are whole, except a rate: 17.07 B/s, not 17.072590019747622 B/s.)
  if (i === 0) return `${Number.isInteger(v) ? v : v.toFixed(v < 10 ? 2 : 1)} B`;
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** A duration in seconds as `12 s`, `4 min`, `3.5 h`, `2.1 d`. */
export function formatAge(seconds: number): string {
  if (seconds < 90) return `${Math.max(0, Math.round(seconds))} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

/** An ISO timestamp shortened for display: `2026-11-21 15:50:03Z`. */
export function formatTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
