import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config/load.js';
import { jobName, nextDue, scheduledJobs } from './schedule.js';
import { webhooks } from './serve.js';

describe('the schedule of serve', () => {
  it('lists every scheduled job per target, backups from the log included', () => {
    const config = parseConfig(
      'targets:\n  prod:\n    database: app\n    schedule:\n      prune: "0 3 * * *"\n      backup_from_log: "*/15 * * * *"\n      backup: "0 2 * * *"\n  dev:\n    database: d\n    schedule:\n      verify: "0 4 * * *"\n',
      undefined,
    );
    const jobs = scheduledJobs(config);
    expect(jobs.map(jobName)).toEqual([
      'verify dev',
      'backup prod',
      'backup --from-log prod',
      'prune prod',
    ]);
    const fromLog = jobs.find((j) => j.job === 'backup_from_log')!;
    expect(nextDue(fromLog, new Date('2026-11-21T10:07:00Z'), 'UTC').toISOString()).toBe(
      '2026-11-21T10:15:00.000Z',
    );
  });

  it('refuses a schedule key it does not know, naming it', () => {
    expect(() =>
      parseConfig(
        'targets:\n  prod:\n    database: app\n    schedule:\n      from_log: "* * * * *"\n',
        undefined,
      ),
    ).toThrow(/from_log/);
  });
});

describe("serve's webhooks", () => {
  it('refuses at start a url_env variable that holds no http(s) URL, naming it (not at the first alert)', () => {
    const config = parseConfig(
      'alerts:\n  webhooks:\n    - url_env: HOOK\ntargets:\n  prod:\n    database: app\n',
      undefined,
    );
    expect(() => webhooks(config, { HOOK: 'notaurl' })).toThrow(
      /alerts\.webhooks\.0\.url_env: environment variable HOOK does not hold an http:\/\/ or https:\/\/ URL/,
    );
    expect(webhooks(config, { HOOK: 'https://hooks.example/x' })).toEqual([
      { name: '$HOOK', url: 'https://hooks.example/x' },
    ]);
  });
});
