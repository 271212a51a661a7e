/**
 * The configuration file's schema (flashback.yaml), validated with zod.
 * Keys are snake_case as written in YAML; `docs/CONFIG.md` describes each.
 */
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { parseSize } from './size.js';

/** Default of `capture.max_retained_wal`: 1 GB. */
export const DEFAULT_MAX_RETAINED_WAL = 1024 ** 3;

/** Target names: lower-case words, so they can never be mistaken for a URL or a flag. */
export const TARGET_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

/** A duration such as `30m`, `26h`, `1h30m`, `7d` (milliseconds after parsing). */
const duration = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration such as 500ms, 30s, 30m, 26h, 1h30m or 7d, got "${text}"`,
    });
    return z.NEVER;
  }
  return ms;
});

/** A size such as `512MB` or `2GB` (bytes after parsing; units are powers of 1024). */
const size = z.string().transform((text, ctx) => {
  const bytes = parseSize(text);
  if (bytes === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a size such as 512MB, 2GB or 1.5GB, got "${text}"`,
    });
    return z.NEVER;
  }
  return bytes;
});

/** A cron expression: 5 fields (minute hour day month weekday) or 6 (with seconds first). */
const cron = z.string().superRefine((text, ctx) => {
  try {
    CronExpressionParser.parse(text, { tz: 'UTC' });
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `not a cron expression (${(err as Error).message}); e.g. "0 2 * * *" for 02:00 daily`,
    });
  }
});

/** The jobs a target's schedule names, in the order they are listed. */
export const SCHEDULE_JOBS = ['backup', 'backup_from_log', 'verify', 'prune'] as const;
export type ScheduleJob = (typeof SCHEDULE_JOBS)[number];

/** A job as users know it from the command line: `backup --from-log` for backup_from_log. */
export function scheduleJobLabel(job: ScheduleJob): string {
  return job === 'backup_from_log' ? 'backup --from-log' : job;
}

/** When `flashback serve` runs each job for a target (a key per SCHEDULE_JOBS). */
const scheduleSchema = z.strictObject({
  backup: cron.optional(),
  /**
   * `backup --from-log`: a snapshot from the previous one and the change log,
   * without reading the source; bounds how much log a restore to a moment reads.
   */
  backup_from_log: cron.optional(),
  verify: cron.optional(),
  prune: cron.optional(),
});

/**
 * Freshness thresholds for `status`, metrics and alerts. Ages are measured
 * from a snapshot's consistent point (its start) to now.
 */
const freshnessSchema = z
  .strictObject({
    backup_warning: duration.optional(),
    backup_critical: duration.optional(),
    verified_warning: duration.optional(),
    verified_critical: duration.optional(),
    /** How late a scheduled run may be before the scheduler itself is a finding. */
    missed_run_grace: duration.optional(),
    /** Age of the newest change or heartbeat stored in the change log (targets that have one). */
    recovery_point_warning: duration.optional(),
    recovery_point_critical: duration.optional(),
    /** Change log stored after the newest snapshot, which restoring to a moment after it must read first. */
    log_since_snapshot_warning: size.optional(),
  })
  .superRefine((f, ctx) => {
    // A warning past its critical would never be seen: the critical comes first.
    for (const kind of ['backup', 'verified', 'recovery_point'] as const) {
      const warning = f[`${kind}_warning`];
      const critical = f[`${kind}_critical`];
      if (warning !== undefined && critical !== undefined && warning > critical) {
        ctx.addIssue({
          code: 'custom',
          path: [`${kind}_warning`],
          message: `expected at most ${kind}_critical (a warning after the critical would never be seen)`,
        });
      }
    }
  });

/** Which snapshots `prune` keeps, per target. A snapshot kept by any rule stays. */
const retentionSchema = z.strictObject({
  keep_last: z.number().int().min(1, { error: 'keep at least 1 snapshot' }).optional(),
  keep_hourly: z.number().int().min(0).optional(),
  keep_daily: z.number().int().min(0).optional(),
  keep_weekly: z.number().int().min(0).optional(),
  keep_monthly: z.number().int().min(0).optional(),
  keep_yearly: z.number().int().min(0).optional(),
  keep_within: duration.optional(),
});

const targetSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, { error: 'expected a postgres:// or postgresql:// URL' })
      .optional(),
    host: z.string().min(1).optional(),
    port: z
      .number({ error: 'expected a port number' })
      .int()
      .min(1, { error: 'expected a port from 1 to 65535' })
      .max(65535, { error: 'expected a port from 1 to 65535' })
      .optional(),
    database: z.string().min(1).optional(),
    user: z.string().min(1).optional(),
    password_env: z
      .string()
      .regex(ENV_NAME, {
        error: 'expected the name of an environment variable, e.g. PROD_PGPASSWORD',
      })
      .optional(),
    sslmode: z.enum(SSL_MODES).optional(),
    protected: z.boolean({ error: 'expected true or false' }).default(true),
    description: z.string().optional(),
    schedule: scheduleSchema.optional(),
    freshness: freshnessSchema.optional(),
    retention: retentionSchema.optional(),
    /** `flashback serve` runs a continuous capture of this target (its change log). */
    capture: z.boolean({ error: 'expected true or false' }).optional(),
  })
  .superRefine((t, ctx) => {
    if (t.url !== undefined) {
      for (const k of ['host', 'port', 'database', 'user'] as const) {
        if (t[k] !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: [k],
            message: `give either url or ${k}, not both`,
          });
        }
      }
    } else if (t.database === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: 'a target needs either url or database (with host, port, user as needed)',
      });
    }
  });

const webhookSchema = z
  .strictObject({
    url: z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' }).optional(),
    /** The URL is often a secret (Slack's is): read it from this variable instead. */
    url_env: z
      .string()
      .regex(ENV_NAME, { error: 'expected the name of an environment variable' })
      .optional(),
    name: z.string().optional(),
  })
  .superRefine((w, ctx) => {
    if ((w.url === undefined) === (w.url_env === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'give exactly one of url and url_env' });
    }
  });

const alertsSchema = z.strictObject({
  webhooks: z.array(webhookSchema).default([]),
  /** Attempts per alert before it is logged as undeliverable. */
  attempts: z.number().int().min(1).max(20).default(5),
  /** First retry delay; doubled for each later attempt. */
  backoff: duration.default(2000),
  /** Per-attempt timeout. */
  timeout: duration.default(10_000),
});

const verifySchema = z.strictObject({
  /**
   * Where restore-tests run: `embedded` (a PostgreSQL of the snapshot's major
   * version that Flashback starts, with throwaway settings) or a target name,
   * in whose server a temporary database is created and dropped.
   */
  scratch: z.string().default('embedded'),
  /** Parallel connections for the restore and the comparison. */
  workers: z.number().int().min(1).max(64).default(2),
});

/** Safety limits of continuous capture, for every target. */
const captureSchema = z.strictObject({
  /**
   * WAL that Flashback's replication slot may hold back on the server before
   * `doctor` and `status` warn: a slot nobody reads keeps WAL until the disk
   * is full.
   */
  max_retained_wal: size.default(DEFAULT_MAX_RETAINED_WAL),
});

/** Whether the runtime knows `tz` as a time zone (the cron schedules are computed in it). */
function knownTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const serveSchema = z.strictObject({
  /** host:port for /metrics and /healthz. */
  listen: z
    .string()
    .regex(/^[^\s:]*:\d{1,5}$/, { error: 'expected host:port, e.g. 127.0.0.1:9187' })
    .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, {
      error: 'expected a port from 0 to 65535',
    })
    .default('127.0.0.1:9187'),
  /** Log lines: JSON (for log shippers) or human. */
  log: z.enum(['json', 'human']).default('json'),
  /** Time zone of the cron expressions. */
  timezone: z
    .string()
    .refine(knownTimeZone, { error: 'expected an IANA time zone name, e.g. Europe/Berlin or UTC' })
    .default('UTC'),
  /** How often freshness is re-evaluated for alerts (each evaluation reads the repository). */
  check_interval: duration
    .refine((ms) => ms >= 1000, { error: 'expected at least 1s' })
    .default(60_000),
});

/** The whole configuration file. */
export const configSchema = z.strictObject({
  version: z.literal(1, { error: 'expected 1 (the only configuration version so far)' }).optional(),
  repository: z.string().min(1, { error: 'expected a directory path' }).optional(),
  targets: z
    .record(
      z.string().regex(TARGET_NAME, {
        error: 'target names are lower-case letters, digits, "-" and "_", starting with a letter',
      }),
      targetSchema,
    )
    .default({}),
  /** Defaults for every target; a target's own `freshness`/`retention` keys override these. */
  freshness: freshnessSchema.default({}),
  retention: retentionSchema.default({}),
  verify: verifySchema.default({ scratch: 'embedded', workers: 2 }),
  capture: captureSchema.default({ max_retained_wal: DEFAULT_MAX_RETAINED_WAL }),
  alerts: alertsSchema.default({ webhooks: [], attempts: 5, backoff: 2000, timeout: 10_000 }),
  serve: serveSchema.default({
    listen: '127.0.0.1:9187',
    log: 'json',
    timezone: 'UTC',
    check_interval: 60_000,
  }),
});

/** Freshness thresholds in milliseconds, every one set. */
export interface Freshness {
  readonly backupWarning: number;
  readonly backupCritical: number;
  readonly verifiedWarning: number;
  readonly verifiedCritical: number;
  readonly missedRunGrace: number;
  readonly recoveryPointWarning: number;
  readonly recoveryPointCritical: number;
  /** Bytes, not milliseconds: the stored change log after the newest snapshot. */
  readonly logSinceSnapshotWarning: number;
}

/**
 * Defaults: a daily backup may be an hour late; no verified backup within
 * 26 h is critical; a change log more than a minute behind is a warning
 * (capture stores changes within seconds and a heartbeat every 5 s).
 */
export const DEFAULT_FRESHNESS: Freshness = {
  backupWarning: 25 * 3_600_000,
  backupCritical: 49 * 3_600_000,
  verifiedWarning: 25 * 3_600_000,
  verifiedCritical: 26 * 3_600_000,
  missedRunGrace: 30 * 60_000,
  recoveryPointWarning: 60_000,
  recoveryPointCritical: 5 * 60_000,
  // About 16 million changes: a minute of reading the log before a restore
  // to a moment begins (docs/BENCHMARKS.md: 595 MB held 37 million changes,
  // read at 309,000 a second).
  logSinceSnapshotWarning: 256 * 1024 ** 2,
};

/** A target's thresholds: its own keys, else the file's top-level ones, else the defaults. */
export function freshnessFor(config: FlashbackConfig, target: string): Freshness {
  const own = config.targets[target]?.freshness ?? {};
  const top = config.freshness;
  return {
    backupWarning: own.backup_warning ?? top.backup_warning ?? DEFAULT_FRESHNESS.backupWarning,
    backupCritical: own.backup_critical ?? top.backup_critical ?? DEFAULT_FRESHNESS.backupCritical,
    verifiedWarning:
      own.verified_warning ?? top.verified_warning ?? DEFAULT_FRESHNESS.verifiedWarning,
    verifiedCritical:
      own.verified_critical ?? top.verified_critical ?? DEFAULT_FRESHNESS.verifiedCritical,
    missedRunGrace:
      own.missed_run_grace ?? top.missed_run_grace ?? DEFAULT_FRESHNESS.missedRunGrace,
    recoveryPointWarning:
      own.recovery_point_warning ??
      top.recovery_point_warning ??
      DEFAULT_FRESHNESS.recoveryPointWarning,
    recoveryPointCritical:
      own.recovery_point_critical ??
      top.recovery_point_critical ??
      DEFAULT_FRESHNESS.recoveryPointCritical,
    logSinceSnapshotWarning:
      own.log_since_snapshot_warning ??
      top.log_since_snapshot_warning ??
      DEFAULT_FRESHNESS.logSinceSnapshotWarning,
  };
}

/** A retention policy, as written. */
export type RetentionConfig = z.output<typeof retentionSchema>;

/** A target's retention policy: its own keys replace the top-level ones (no per-key merge). */
export function retentionFor(config: FlashbackConfig, target: string): RetentionConfig {
  return config.targets[target]?.retention ?? config.retention;
}

/** A target as written in the configuration file. */
export type TargetConfig = z.output<typeof targetSchema>;
/** The validated configuration file. */
export type FlashbackConfig = z.output<typeof configSchema>;
