import { describe, expect, it } from 'vitest';
import { restoreProgressLine } from './restore.js';

describe('restore progress line', () => {
  const p = {
    tablesDone: 2,
    tablesTotal: 6,
    rows: 1234567,
    bytes: 100e6,
    bytesTotal: 400e6,
    statementsDone: 3,
    statementsTotal: 19,
  };

  it('shows tables, rows, data of the total, rate, post-data, and the data ETA', () => {
    expect(restoreProgressLine('copy', p, 10)).toBe(
      'restore to copy: 2/6 tables, 1,234,567 rows, 100.0 MB of 400.0 MB, 10.0 MB/s, post-data 3/19, data ETA 0:30',
    );
  });

  it('gives no ETA before 5% of the data, and neither ETA nor rate once it is all in', () => {
    expect(restoreProgressLine('copy', { ...p, bytes: 1e6 }, 1)).not.toContain('ETA');
    expect(restoreProgressLine('copy', { ...p, bytes: 400e6, statementsTotal: 0 }, 40)).toBe(
      'restore to copy: 2/6 tables, 1,234,567 rows, 400.0 MB of 400.0 MB',
    );
  });
});
