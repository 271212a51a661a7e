/** `flashback capture TARGET`: the continuous change log. */
import type { Command } from 'commander';
import { capture, newLogAdvice, slotName } from '../../capture/capture.js';
import { parseDuration } from '../../config/duration.js';
import { resolveTarget } from '../../config/targets.js';
import { ExitCode, UsageError } from '../../errors.js';
import { FingerprintStore } from '../../guard/fingerprints.js';
import { guard } from '../../guard/guard.js';
import { connect } from '../../pg/connect.js';
import {
  dropSlot,
  otherCaptureSlots,
  ownSlotInfo,
  readPublication,
} from '../../pg/replication/slot.js';
import { DEFAULT_PUBLICATION } from '../../pg/replication/stream.js';
import { runScope } from '../../repo/runs.js';
import type { CliContext } from '../context.js';
import { Progress } from '../progress.js';

interface CaptureFlags {
  readonly flushInterval: string;
  readonly heartbeat: string;
  readonly dropSlot?: boolean;
  readonly confirm?: string;
  readonly newLog?: boolean;
}

export function registerCapture(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('capture')
    .description('capture every change of a target continuously into the change log')
    .argument('<target>', 'target name or postgres:// URL')
    .option('--flush-interval <duration>', 'longest time a change waits before it is stored', '1s')
    .option('--heartbeat <duration>', 'interval of heartbeat messages on the source', '5s')
    .option('--drop-slot', "remove Flashback's replication slot from the target and stop")
    .option('--confirm <name>', 'with --drop-slot: the target name, to confirm')
    .option(
      '--new-log',
      'begin a new change log when the current one cannot continue (its slot is gone or lost WAL)',
    )
    .addHelpText(
      'after',
      `
Creates, on first use, the publication "flashback" (FOR ALL TABLES) and a
logical replication slot "flashback_<target>" on the target, then streams
every insert, update, delete and truncate into change-log segments in the
repository, until Ctrl-C or SIGTERM. The slot's position moves only past
changes that are stored, so a crash at any point loses nothing; a restart
resumes exactly where the repository's log ends. A heartbeat on the source
every few seconds measures the recovery point (\`flashback status\`).

Schema changes: when its role is a superuser, capture also installs event
triggers (schema "_flashback", triggers "flashback_ddl", "flashback_drop",
"flashback_rewrite") that put every DDL into the log inside its transaction,
and it records the schema right after each one, so \`restore --at\` rebuilds
moments after a column or table change. Without a superuser it warns and
captures rows only (docs/CAPTURE.md, "Schema changes").

A slot that nobody reads keeps WAL on the server: stop capture for good with
--drop-slot (through the guard, since it writes to the target).

After a failover (logical slots do not move to the promoted standby), or
once the slot lost WAL it needed, the log cannot continue without a gap and
capture refuses. --new-log then begins the target's next change log (a lost
slot is dropped first; a healthy one never is). The old log stays readable:
restore --at, undo, impact and history use the log that holds the moment.
Changes between the old log's end and the new one's start are in neither,
and moments of the new log need a snapshot taken after it began: run
\`flashback backup\` once it has started.

Exit codes: 0 stopped; 1 failed (the stream or the repository); 4 refused
(identity, or --drop-slot not confirmed); 5 unreachable; 6 no repository; 8
the repository lacks change-log segments the slot had confirmed (capture
will not resume past them).`,
    )
    .action(async (ref: string, opts: CaptureFlags, self: Command) => {
      const ctx = context(self);
      const { config } = await ctx.config();
      const target = resolveTarget(ref, config, ctx.env);
      const repo = await ctx.repository();
      const slot = slotName(runScope(target.name));
      if (opts.dropSlot === true) {
        const client = await connect(target);
        try {
          // Refuses (naming the database) a slot of this name that another database owns.
          await ownSlotInfo(client, slot);
          await guard({
            target,
            action: `drop replication slot "${slot}": the change log of "${target.name}" stops here, and the WAL the slot holds is freed`,
            confirm: opts.confirm,
            fingerprints: new FingerprintStore(repo),
            io: ctx.guardIO,
            client,
          });
          const dropped = await dropSlot(client, slot);
          ctx.out(
            dropped
              ? `dropped replication slot "${slot}"\n`
              : `no replication slot "${slot}" on the target\n`,
          );
          // Left in place: another capture of the database (another target
          // name or repository) may use it, and without a superuser it could
          // not be made again. But it keeps a hazard, so say so.
          if ((await readPublication(client)) !== undefined) {
            const others = await otherCaptureSlots(client, slot);
            ctx.out(
              `note: the publication "${DEFAULT_PUBLICATION}" stays on the target${others.length > 0 ? ` (slots ${others.map((s) => `"${s}"`).join(', ')} of this database capture with it)` : ''}: while it exists, the server refuses UPDATE and DELETE on tables without a primary key or replica identity; once no capture of this database needs it, remove it: DROP PUBLICATION ${DEFAULT_PUBLICATION}\n`,
            );
          }
        } finally {
          await client.end().catch(() => {});
        }
        process.exitCode = ExitCode.ok;
        return;
      }
      const flushIntervalMs = duration('--flush-interval', opts.flushInterval);
      const heartbeatMs = duration('--heartbeat', opts.heartbeat);
      const progress = new Progress(ctx.io.stderr, true);
      let totals = { transactions: 0, changes: 0, segments: 0 };
      let newest: string | undefined;
      const result = await capture({
        target,
        repo,
        signal: ctx.interruptSignal(),
        flushIntervalMs,
        heartbeatMs,
        newLog: opts.newLog,
        onWarning: (m) => ctx.err(`flashback: warning: ${m}\n`),
        onStart: (s) => {
          // One write: whoever reads the start line reads its notes with it.
          const lines = [
            `capture ${target.name}: ${s.created ? 'created' : 'using'} slot "${s.slot}"; ${s.log > 1 ? `log ${s.log}` : 'the log'} starts at ${s.logStart}, resuming from ${s.resumeFrom}`,
          ];
          if (s.previousEnd !== undefined) {
            lines.push(
              `flashback: note: log ${s.log - 1} of "${target.name}" ends at ${s.previousEnd}: changes committed between it and ${s.logStart} are in no log; log ${s.log - 1} stays readable for the moments it covers`,
            );
          }
          if (s.created) lines.push(`flashback: note: ${newLogAdvice(target.name)}`);
          ctx.err(`${lines.join('\n')}\n`);
        },
        onSegment: (s) => {
          totals = {
            transactions: totals.transactions + s.transactions,
            changes: totals.changes + s.changes,
            segments: totals.segments + 1,
          };
          newest = s.newestAt ?? newest;
          progress.update(
            () =>
              `capture ${target.name}: ${totals.transactions.toLocaleString('en-US')} transactions, ${totals.changes.toLocaleString('en-US')} changes in ${totals.segments} segments; stored up to ${s.committed}${newest === undefined ? '' : `, recovery point ${((Date.now() - Date.parse(newest)) / 1000).toFixed(1)} s`}`,
          );
        },
      });
      progress.done();
      ctx.err(
        `capture ${target.name} stopped: ${result.transactions.toLocaleString('en-US')} transactions, ${result.changes.toLocaleString('en-US')} changes stored in ${result.segments} segments; the log is complete up to ${result.committed}\n`,
      );
      process.exitCode = ExitCode.ok;
    });
}

function duration(flag: string, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) {
    throw new UsageError(`${flag}: expected a duration such as 500ms, 1s or 5s, got "${text}"`);
  }
  return ms;
}
