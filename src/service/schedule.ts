/**
 * The schedule of `serve` as data: which job runs for which target, and when
 * it is next due. Cron expressions are evaluated in `serve.timezone`.
 */
import { CronExpressionParser } from 'cron-parser';
import {
  type FlashbackConfig,
  SCHEDULE_JOBS,
  type ScheduleJob,
  scheduleJobLabel,
} from '../config/schema.js';

export type JobKind = ScheduleJob;

/** One scheduled job. */
export interface ScheduledJob {
  readonly target: string;
  readonly job: JobKind;
  readonly cron: string;
}

/** Every job in the configuration, in a stable order. */
export function scheduledJobs(config: FlashbackConfig): ScheduledJob[] {
  const out: ScheduledJob[] = [];
  for (const [target, t] of Object.entries(config.targets).sort(([a], [b]) => (a < b ? -1 : 1))) {
    for (const job of SCHEDULE_JOBS) {
      const cron = t.schedule?.[job];
      if (cron !== undefined) out.push({ target, job, cron });
    }
  }
  return out;
}

/** The first time strictly after `after` that the job is due. */
export function nextDue(job: ScheduledJob, after: Date, timezone: string): Date {
  return CronExpressionParser.parse(job.cron, { currentDate: after, tz: timezone }).next().toDate();
}

/** A stable name for logs and metrics: `backup prod`, `backup --from-log prod`. */
export function jobName(job: Pick<ScheduledJob, 'job' | 'target'>): string {
  return `${scheduleJobLabel(job.job)} ${job.target}`;
}
