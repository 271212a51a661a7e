import { describe, expect, it } from 'vitest';
import { AlertTracker, alertPayload } from './alerts.js';
import type { Finding, Severity } from './status.js';

function t(severity: Severity, findings: Finding[]) {
  return [{ target: 'prod', severity, findings }];
}
const age = (severity: Finding['severity'], hours: number): Finding => ({
  severity,
  kind: 'backup-age',
  target: 'prod',
  message: `newest backup of "prod" is ${hours}h old`,
});
const failed = (at: string): Finding => ({
  severity: 'critical',
  kind: 'backup-failed',
  target: 'prod',
  message: `the last backup of "prod" FAILED at ${at}`,
});

describe('alert tracking', () => {
  it('alerts a finding once while it lasts, again when it worsens, and once on recovery', () => {
    const tr = new AlertTracker();
    expect(tr.update(t('ok', []), 't0')).toEqual([]);
    expect(tr.update(t('warning', [age('warning', 26)]), 't1').map((a) => a.severity)).toEqual([
      'warning',
    ]);
    expect(tr.update(t('warning', [age('warning', 27)]), 't2')).toEqual([]);
    expect(tr.update(t('critical', [age('critical', 50)]), 't3').map((a) => a.severity)).toEqual([
      'critical',
    ]);
    const rec = tr.update(t('ok', []), 't4');
    expect(rec.map((a) => [a.event, a.target])).toEqual([['recovered', 'prod']]);
    expect(tr.update(t('ok', []), 't5')).toEqual([]);
  });

  it('alerts every failed backup, not just the first', () => {
    const tr = new AlertTracker();
    expect(tr.update(t('critical', [failed('10:00')]), 'a')).toHaveLength(1);
    expect(tr.update(t('critical', [failed('10:00')]), 'b')).toHaveLength(0);
    expect(tr.update(t('critical', [failed('11:00')]), 'c')).toHaveLength(1);
  });

  it('sends Slack-compatible JSON with the facts as data', () => {
    const p = alertPayload({
      event: 'finding',
      severity: 'critical',
      target: 'prod',
      kind: 'verify-failed',
      message: 'snapshot X FAILED verification',
      snapshot: 'X',
      at: '2026-11-21T00:00:00Z',
    });
    expect(p.text).toBe(
      ':rotating_light: *Flashback CRITICAL: prod*\nsnapshot X FAILED verification',
    );
    expect((p.flashback as { snapshot: string }).snapshot).toBe('X');
  });
});
