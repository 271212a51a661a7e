import { describe, expect, it } from 'vitest';
import { rate } from '../cli/progress.js';
import { formatBytes } from './format.js';

describe('formatBytes', () => {
  it('prints whole bytes as they are, and a fraction of one (a rate) rounded', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('1.00 kB');
    expect(formatBytes(20_480_000)).toBe('20.5 MB');
    expect(rate(1219, 71.4)).toBe('17.1 B/s');
    expect(rate(21, 71.4)).toBe('0.29 B/s');
  });
});
