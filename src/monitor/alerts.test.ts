import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { AlertSender, AlertTracker, alertPayload } from './alerts.js';
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

  it('alerts a failing backup once per cause, not at every attempt; again after a success', () => {
    const tr = new AlertTracker();
    const down = (at: string, n: number) =>
      failed(
        `${at}: connection refused (${n} failed attempt(s) since the last good backup at 2026-11-23T00:00:00.000Z)`,
      );
    expect(tr.update(t('critical', [down('2026-11-23T01:00:00.000Z', 1)]), 'a')).toHaveLength(1);
    expect(tr.update(t('critical', [down('2026-11-23T01:00:00.000Z', 1)]), 'b')).toHaveLength(0);
    // The next attempts, same error: no new page.
    expect(tr.update(t('critical', [down('2026-11-23T01:02:00.000Z', 2)]), 'c')).toHaveLength(0);
    expect(tr.update(t('critical', [down('2026-11-23T01:04:00.000Z', 3)]), 'd')).toHaveLength(0);
    // Another error is news.
    expect(
      tr.update(
        t('critical', [
          failed('2026-11-23T01:06:00.000Z: disk full (4 failed attempt(s) since x)'),
        ]),
        'e',
      ),
    ).toHaveLength(1);
    // Recovered, then failing again: alerted again.
    expect(tr.update(t('ok', []), 'f').map((a) => a.event)).toEqual(['recovered']);
    expect(tr.update(t('critical', [down('2026-11-23T02:00:00.000Z', 1)]), 'g')).toHaveLength(1);
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

const FAILED_ALERT = {
  event: 'finding',
  severity: 'critical',
  target: 'prod',
  kind: 'backup-failed',
  message: 'x',
  at: 't',
} as const;

describe('alert delivery', () => {
  it('gives up on a webhook that accepts and never answers, within the timeout of each attempt', async () => {
    // (It hung serve for good: the timeout's signal could be collected before it fired.)
    const server = createServer((req) => req.resume()).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    try {
      const sender = new AlertSender([{ name: 'hang', url: `http://127.0.0.1:${port}/` }], {
        attempts: 2,
        backoffMs: 10,
        timeoutMs: 200,
      });
      const started = Date.now();
      const [r] = await sender.send(FAILED_ALERT);
      expect(r).toMatchObject({ ok: false, attempts: 2, error: 'no answer within 200 ms' });
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('sends nothing once stopping (an alert still queued at shutdown does not hold it up)', async () => {
    const sender = new AlertSender([{ name: 'never', url: 'http://127.0.0.1:9/' }], {
      attempts: 3,
      backoffMs: 1000,
      timeoutMs: 10_000,
    });
    const stop = new AbortController();
    stop.abort();
    const started = Date.now();
    const [r] = await sender.send(FAILED_ALERT, stop.signal);
    expect(r).toMatchObject({ ok: false, attempts: 0, error: 'not sent: stopping' });
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('alerts again, at the next evaluation, what no webhook took, while it holds', () => {
    const tr = new AlertTracker();
    const [a] = tr.update(t('critical', [failed('2026-01-01T00:00:00Z')]), 't1');
    tr.undelivered(a!);
    expect(tr.update(t('critical', [failed('2026-01-01T00:00:00Z')]), 't2')).toHaveLength(1);
    // Delivered this time: not again.
    expect(tr.update(t('critical', [failed('2026-01-01T00:00:00Z')]), 't3')).toEqual([]);
    const [rec] = tr.update(t('ok', []), 't4');
    expect(rec?.event).toBe('recovered');
    tr.undelivered(rec!);
    expect(tr.update(t('ok', []), 't5').map((x) => x.event)).toEqual(['recovered']);
    expect(tr.update(t('ok', []), 't6')).toEqual([]);
  });
});
