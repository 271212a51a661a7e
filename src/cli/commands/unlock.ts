/** `flashback unlock`: remove stale repository locks. */
import os from 'node:os';
import type { Command } from 'commander';
import { ExitCode } from '../../errors.js';
import { listLocks, removeLocks, STALE_AFTER_MS } from '../../repo/lock.js';
import type { CliContext } from '../context.js';

export function registerUnlock(program: Command, context: (cmd: Command) => CliContext): void {
  program
    .command('unlock')
    .description('remove stale repository locks (of processes that are gone)')
    .option(
      '--all',
      'remove every lock, also of running processes (only when you know they are gone)',
    )
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      `
Exit 0 when no lock is left, 7 when a lock of a running process (or one on
another host, not yet stale) was kept.`,
    )
    .action(async (opts: { all?: boolean }, self: Command) => {
      const ctx = context(self);
      const repo = await ctx.repository();
      const removed = await removeLocks(repo.storage, { all: opts.all === true });
      const remaining = await listLocks(repo.storage);
      if (ctx.json) ctx.printJson({ removed, remaining });
      else {
        for (const l of removed)
          ctx.out(
            `removed lock of "${l.command}" (pid ${l.pid} on ${l.hostname}, since ${l.created})${l.staleReason === undefined ? '' : `: ${l.staleReason}`}\n`,
          );
        for (const l of remaining)
          ctx.out(
            `kept lock of "${l.command}" (pid ${l.pid} on ${l.hostname}, since ${l.created}): ${l.hostname === os.hostname() ? 'its process is running' : `held on another host, refreshed ${l.refreshed} (stale once not refreshed for ${STALE_AFTER_MS / 60_000} min); \`flashback unlock --all\` if you know it is gone`}\n`,
          );
        if (removed.length === 0 && remaining.length === 0) ctx.out('no locks\n');
      }
      // A lock kept means the repository is still locked: a script's
      // `flashback unlock && flashback backup` must not go on as if it were not.
      process.exitCode = remaining.length === 0 ? ExitCode.ok : ExitCode.locked;
    });
}
