/** `flashback serve`: scheduled backups, verifications and pruning; metrics, health and alerts. */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../../errors.js';
import type { CliContext } from '../context.js';

interface ServeFlags {
  readonly listen?: string;
  readonly log?: string;
}

export function registerServe(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('serve')
    .description(
      'run scheduled backups, verifications and pruning, and continuous captures; serve /metrics and /healthz; send alerts',
    )
    .option(
      '--listen <host:port>',
      'address for /metrics and /healthz (default: serve.listen, 127.0.0.1:9187)',
    )
    .option('--log <format>', 'log format: json or human (default: serve.log, json)')
    .addHelpText(
      'after',
      `
Jobs come from each target's schedule in flashback.yaml (cron expressions,
5 fields, or 6 with seconds first, in serve.timezone, default UTC):

  targets:
    prod:
      url: postgres://backup@db1/app
      schedule: { backup: "0 2 * * *", verify: "30 3 * * *", prune: "0 5 * * *" }

A target with a change log may also have backup_from_log: "*/15 * * * *",
snapshots from the log that never read the source (restores to a moment
then read at most one interval of log).

Jobs run one at a time; each outcome is recorded in the repository like a
command's. The status (as \`flashback status\`) is re-evaluated every
serve.check_interval and after each job: metrics are updated, and every new
finding, and every recovery, is sent to the webhooks in alerts.webhooks.

A target with \`capture: true\` is also captured continuously (as
\`flashback capture\`), beside the jobs; a failed capture is logged, alerted
(capture-failed) and started again after 1 s, 2 s, 4 s, ... at most 60 s.

SIGTERM or SIGINT stops the running job cleanly (a backup commits nothing
and releases its lock) and every capture (what was received is stored
first), and exits 0; a second signal exits at once (130).

One serve per repository: another one already running on it is refused
(exit 7, naming its pid and host; the lease is serve/<uuid>.json).

Exit codes: 0 stopped cleanly; 3 configuration error; 6 no repository; 7
another serve runs on the repository.`,
    )
    .action(async (opts: ServeFlags, self: Command) => {
      const ctx = context(self);
      const { config, file } = await ctx.config();
      const mode = opts.log ?? config.serve.log;
      if (mode !== 'json' && mode !== 'human') {
        throw new UsageError(`--log: expected json or human, got "${mode}"`);
      }
      if (
        opts.listen !== undefined &&
        (!/^[^\s:]*:\d{1,5}$/.test(opts.listen) ||
          Number(opts.listen.slice(opts.listen.lastIndexOf(':') + 1)) > 65535)
      ) {
        throw new UsageError(
          `--listen: expected host:port, e.g. 127.0.0.1:9187, got "${opts.listen}"`,
        );
      }
      const repo = await ctx.repository();
      // Loaded here, not at start-up: the metrics and logging libraries cost
      // every other command ~150 ms of start-up time.
      const { createLogger } = await import('../../service/log.js');
      const { serve } = await import('../../service/serve.js');
      await serve({
        config,
        repo,
        env: ctx.env,
        log: createLogger(mode, ctx.io.stdout),
        signal: ctx.interruptSignal(),
        listen: opts.listen,
        configFile: file,
      });
      process.exitCode = ExitCode.ok;
    });
}
