import { describe, expect, it } from 'vitest';
import { formatUndoReport, undoProgressLine } from './undo.js';

describe('undo progress line', () => {
  it('says which phase the undo is in, what it has read, and for how long', () => {
    expect(
      undoProgressLine(
        'prod',
        {
          phase: 'log',
          transactions: 12000,
          changes: 1500000,
          commitTime: '2026-11-21T14:03:07.000001Z',
        },
        4.4,
      ),
    ).toBe(
      'undo prod: reading the change log: 12,000 transaction(s), 1,500,000 change(s), up to 2026-11-21T14:03:07.000001Z (4 s)',
    );
    expect(
      undoProgressLine('prod', { phase: 'rows', table: 'public.files', rows: 250000 }, 9.6),
    ).toBe('undo prod: reading rows of public.files from the snapshot: 250,000 (10 s)');
    expect(undoProgressLine('prod', { phase: 'plan', table: 'public.files' }, 12)).toBe(
      'undo prod: planning public.files (each row looked up in the live table) (12 s)',
    );
    expect(undoProgressLine('prod', { phase: 'trial' }, 15)).toBe(
      'undo prod: trying the plan (rolled back) (15 s)',
    );
    expect(undoProgressLine('prod', { phase: 'apply', rows: 2000000 }, 20)).toBe(
      'undo prod: applying 2,000,000 row change(s) (20 s)',
    );
  });
});

describe('undo report', () => {
  it('says how many rows were left alone because they were written between the plan and the apply', () => {
    const text = formatUndoReport({
      target: 'prod',
      selection: 'transaction 48211',
      snapshot: 'snap1',
      window: { transactions: 1, changes: 12 },
      tables: [
        {
          table: 'public.orders',
          reinsert: 0,
          revert: 11,
          delete: 0,
          conflicts: 1,
          lateConflicts: 1,
        },
      ],
      conflicts: [],
      policy: 'skip',
      validation: { ok: true },
      applied: true,
      xids: [48300],
      tenants: [],
      seconds: 1,
      notes: [],
    });
    expect(text).toContain(
      '1 row(s) were written again between the plan and the apply: left alone, counted as conflicts above (without their versions)',
    );
    expect(text).toMatch(/public\.orders\s+0\s+11\s+0\s+1/);
  });
});
