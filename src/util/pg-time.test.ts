import { describe, expect, it } from 'vitest';
import { isoToPgTimestamp, pgTimestampToIso } from './pg-time.js';

describe('PostgreSQL timestamps', () => {
  it('convert to ISO and back exactly, across seconds, before 1970 and far out', () => {
    for (const iso of [
      '2026-11-21T10:00:00.000000Z',
      '2026-11-21T10:00:00.999999Z',
      '2026-11-21T10:00:01.000001Z',
      '1969-12-31T23:59:59.999999Z',
      '1900-01-01T00:00:00.000001Z',
      '9999-12-31T23:59:59.999999Z',
    ]) {
      expect(pgTimestampToIso(isoToPgTimestamp(iso))).toBe(iso);
    }
    expect(isoToPgTimestamp('2000-01-01T00:00:01Z')).toBe(1_000_000n);
    expect(isoToPgTimestamp('2000-01-01T00:00:00.5Z')).toBe(500_000n);
  });

  it('refuses anything but UTC ISO with up to six fractional digits', () => {
    for (const bad of [
      '2026-11-21 10:00:00Z',
      '2026-11-21T10:00:00+01:00',
      '2026-13-01T00:00:00Z',
      'x',
    ]) {
      expect(() => isoToPgTimestamp(bad)).toThrow(RangeError);
    }
  });
});
