/**
 * Sizes as written in the configuration file: a number and a unit, `B`,
 * `kB`, `MB`, `GB`, `TB` (e.g. `512MB`, `2GB`, `1.5GB`). Units are powers
 * of 1024, as in PostgreSQL's own settings (`max_slot_wal_keep_size = 1GB`
 * is 1024³ bytes), so a value can be compared with the server's directly;
 * the IEC spellings `KiB`, `MiB`, `GiB`, `TiB` mean the same.
 */

const UNIT_BYTES: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

const SIZE = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i;

/** Bytes of a size such as `512MB`, or undefined if the text is not one. */
export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text.trim());
  if (m === null) return undefined;
  const unit = UNIT_BYTES[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  return Math.round(Number(m[1]) * unit);
}

/** A size in IEC units (`812 MiB`, `1.2 GiB`), unambiguous next to a configured `1GB`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}
