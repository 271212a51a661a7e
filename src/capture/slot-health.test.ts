import { describe, expect, it } from 'vitest';
import { judgeSlot, type SlotState } from './slot-health.js';

const GB = 1024 ** 3;
const state = (extra: Partial<SlotState> = {}): SlotState => ({
  slot: 'flashback_prod',
  active: true,
  walStatus: 'reserved',
  retainedWalBytes: 1024,
  ...extra,
});

describe('slot safety rules', () => {
  it('finds nothing wrong with an active slot within the limit', () => {
    expect(judgeSlot('prod', state(), GB)).toEqual([]);
    expect(judgeSlot('prod', state({ walStatus: 'extended', retainedWalBytes: GB }), GB)).toEqual(
      [],
    );
  });

  it('lost WAL is critical and says the log has a gap; unreserved warns before it happens', () => {
    const [lost] = judgeSlot('prod', state({ walStatus: 'lost' }), GB);
    expect(lost).toMatchObject({ kind: 'slot-lost', severity: 'critical' });
    expect(lost!.message).toContain('the change log has a gap');
    expect(lost!.fix).toContain('flashback capture prod --drop-slot');
    expect(judgeSlot('prod', state({ walStatus: 'unreserved' }), GB)[0]).toMatchObject({
      kind: 'slot-lost',
      severity: 'warning',
    });
  });

  it('warns above max_retained_wal, naming both sizes, and when no capture reads the slot', () => {
    const over = judgeSlot('prod', state({ retainedWalBytes: 1.5 * GB }), GB);
    expect(over.map((p) => p.kind)).toEqual(['slot-wal']);
    expect(over[0]!.message).toContain('holds 1.50 GiB of WAL');
    expect(over[0]!.message).toContain('capture.max_retained_wal, 1.00 GiB');
    const idle = judgeSlot('prod', state({ active: false, retainedWalBytes: 1.5 * GB }), GB);
    expect(idle.map((p) => [p.kind, p.severity])).toEqual([
      ['slot-wal', 'warning'],
      ['slot-inactive', 'warning'],
    ]);
    expect(idle[1]!.message).toBe(
      'nothing reads the replication slot "flashback_prod" of "prod": capture is not running, or is failing and retrying; the slot holds 1.50 GiB of WAL and keeps more as the database changes',
    );
  });
});
