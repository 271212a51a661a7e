import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from './duration.js';

describe('durations', () => {
  it('parses single and combined units', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('26h')).toBe(93_600_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('2d')).toBe(172_800_000);
    expect(parseDuration('1w')).toBe(604_800_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    expect(parseDuration('100ms')).toBe(100);
    expect(parseDuration('1s500ms')).toBe(1500);
  });

  it('rejects what is not a duration', () => {
    for (const bad of ['', '26', 'h', '26 hours', '-1h', '1h 30m', '1y']) {
      expect(parseDuration(bad), bad).toBeUndefined();
    }
  });

  it('formats the two largest units', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45_000)).toBe('45s');
    expect(formatDuration(5_400_000)).toBe('1h 30m');
    expect(formatDuration(93_600_000)).toBe('1d 2h');
    expect(formatDuration(93_661_000)).toBe('1d 2h');
  });
});
