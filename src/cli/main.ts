#!/usr/bin/env node
/**
 * The `flashback` command: builds the command tree and maps every error to
 * a documented exit code (README "Exit codes"). A user's mistake prints a
 * message and a hint, never a stack trace; `--debug` adds the stack.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { ExitCode, FlashbackError, OperationError, UsageError } from '../errors.js';
import { overlayMemoryBlocks } from '../history/arena.js';
import { serverRefusal } from '../pg/connect.js';
import { redact } from '../secrets.js';
import { VERSION } from '../version.js';
import { registerBackup } from './commands/backup.js';
import { registerCapture } from './commands/capture.js';
import { registerCheck } from './commands/check.js';
import { registerDoctor } from './commands/doctor.js';
import { registerHistory } from './commands/history.js';
import { registerImpact } from './commands/impact.js';
import { registerInit } from './commands/init.js';
import { registerPrune } from './commands/prune.js';
import { registerRestore } from './commands/restore.js';
import { registerServe } from './commands/serve.js';
import { registerSnapshots } from './commands/snapshots.js';
import { registerStatus } from './commands/status.js';
import { registerTargets } from './commands/targets.js';
import { registerUndo } from './commands/undo.js';
import { registerUnlock } from './commands/unlock.js';
import { registerVerify } from './commands/verify.js';
import { CliContext, type CliIO, type GlobalOptions, requestInterrupt } from './context.js';

/** Builds the command tree; `context` is created per invocation from the parsed global options. */
export function buildProgram(io: CliIO): Command {
  const program = new Command('flashback');
  program
    .description('Undo for a production PostgreSQL database.')
    .version(VERSION, '-V, --version')
    .option(
      '-c, --config <path>',
      'configuration file (default: FLASHBACK_CONFIG, else ./flashback.yaml)',
    )
    .option(
      '-r, --repo <location>',
      "repository location (default: FLASHBACK_REPO, else the config file's)",
    )
    .option('--debug', 'show stack traces and internal detail on errors')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, write) => write(`flashback: ${s.replace(/^error: /, 'error: ')}`),
    });
  const context = (cmd: Command): CliContext =>
    new CliContext(cmd.optsWithGlobals<GlobalOptions>(), io);
  registerInit(program, context);
  registerTargets(program, context);
  registerDoctor(program, context);
  registerBackup(program, context);
  registerCapture(program, context);
  registerHistory(program, context);
  registerImpact(program, context);
  registerSnapshots(program, context);
  registerRestore(program, context);
  registerPrune(program, context);
  registerUndo(program, context);
  registerUnlock(program, context);
  registerCheck(program, context);
  registerVerify(program, context);
  registerStatus(program, context);
  registerServe(program, context);
  for (const sub of program.commands) sub.exitOverride();
  return program;
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: readonly string[], io: CliIO): Promise<number> {
  const program = buildProgram(io);
  process.exitCode = undefined;
  try {
    checkEnvironment(io.env);
    await program.parseAsync([...argv], { from: 'user' });
    return Number(process.exitCode ?? ExitCode.ok);
  } catch (err) {
    const debug = argv.includes('--debug');
    const json = argv.includes('--json');
    return reportError(err, io, debug, json);
  }
}

/** Settings read from the environment deep inside a command: a bad one is refused before it runs. */
function checkEnvironment(env: NodeJS.ProcessEnv): void {
  const memory = env.FLASHBACK_OVERLAY_MEMORY;
  if (memory !== undefined && overlayMemoryBlocks(memory) === undefined) {
    throw new UsageError(
      `FLASHBACK_OVERLAY_MEMORY: expected a size of at least 16MB, such as 512MB or 2GB, got "${memory}"`,
      { hint: 'unset it for the default (256MB per reading thread)' },
    );
  }
}

/** Prints an error the way users should see it; returns its exit code. */
export function reportError(err: unknown, io: CliIO, debug: boolean, json: boolean): number {
  // With --json, every failure is also one JSON object on stdout, so a
  // script reading it never gets empty output.
  const printJson = (code: string, message: string, exitCode: number, hint?: string) => {
    if (!json) return;
    io.stdout.write(
      redact(`${JSON.stringify({ error: { code, message, hint, exitCode } }, null, 2)}\n`),
    );
  };
  if (err instanceof CommanderError) {
    // Commander has printed its message already (or help/version, which are not errors).
    if (
      err.code === 'commander.helpDisplayed' ||
      err.code === 'commander.version' ||
      err.code === 'commander.help'
    )
      return ExitCode.ok;
    printJson(
      'usage',
      err.message.replace(/^error: /, ''),
      ExitCode.usage,
      'run with --help for usage',
    );
    return ExitCode.usage;
  }
  // (A server's refusal, or a file this user may not read or write, says
  // what to fix: not a bug in Flashback.)
  if (!(err instanceof FlashbackError)) err = serverRefusal(err) ?? fileRefusal(err) ?? err;
  if (err instanceof FlashbackError) {
    printJson(err.code, err.message, err.exitCode, err.hint);
    let text = `flashback: error: ${err.message}\n`;
    if (err.hint !== undefined) text += `hint: ${err.hint}\n`;
    if (debug) text += `${err.stack ?? ''}\n${causeChain(err)}`;
    io.stderr.write(redact(text));
    return err.exitCode;
  }
  const e = err instanceof Error ? err : new Error(String(err));
  printJson(
    'internal',
    e.message,
    ExitCode.internal,
    'a bug in Flashback: run again with --debug and report it',
  );
  let text = `flashback: internal error: ${e.message}\nThis is a bug in Flashback. Please report it with the output of the same command run with --debug.\n`;
  if (debug) text += `${e.stack ?? ''}\n${causeChain(e)}`;
  io.stderr.write(redact(text));
  return ExitCode.internal;
}

/** A file or directory this user may not read or write (EACCES, EPERM), as a failure naming it. */
function fileRefusal(err: unknown): FlashbackError | undefined {
  const e = err as NodeJS.ErrnoException;
  if (!(err instanceof Error) || (e.code !== 'EACCES' && e.code !== 'EPERM')) return undefined;
  return new OperationError('permission-denied', `${e.message}`, {
    hint: `the user Flashback runs as may not ${e.syscall ?? 'use'} ${e.path ?? 'that file'}: check its owner and mode (a file written by another user, say root with umask 077, is the usual cause)`,
    cause: err,
  });
}

function causeChain(err: Error): string {
  let out = '';
  let cause = err.cause;
  while (cause !== undefined) {
    out += `caused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}\n`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return out;
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/** Runs the CLI as this process: real streams, signal handling, exit code. */
export function runAsProcess(): void {
  const io: CliIO = {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) process.exit(ExitCode.interrupted);
    interrupted = true;
    process.stderr.write(`\nflashback: interrupted by ${signal}\n`);
    if (!requestInterrupt()) process.exit(ExitCode.interrupted);
    // The command stops by itself (nothing committed, temporary files removed)
    // and exits 130 through the error handler; a second signal exits at once.
    process.stderr.write(
      'flashback: stopping: finishing writes in flight (again to exit at once)\n',
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed terminal or a dropped SSH session: a restore in flight must
  // still roll back and drop the database it created, as on SIGTERM. Not for
  // the long-running commands: they keep running, with or without nohup
  // (Node resets the signal's disposition nohup set to "ignore" as it
  // starts, so without a handler SIGHUP killed them silently, exit 129).
  const args = process.argv.slice(2);
  // After a hangup, the terminal's output fails (EIO): for serve and capture
  // that is not a reason to stop (their logs are for a file or a collector).
  let hungUp = false;
  if (!args.includes('serve') && !args.includes('capture')) process.on('SIGHUP', onSignal);
  else {
    process.on('SIGHUP', () => {
      hungUp = true;
      try {
        process.stderr.write(
          'flashback: SIGHUP ignored: still running (stop with SIGTERM or Ctrl-C)\n',
        );
      } catch {} // (the terminal that hung up may be gone)
    });
  }
  // `flashback list | head`: the reader is gone once it has its lines. Node
  // ignores SIGPIPE, so the next write fails with EPIPE, and without a
  // listener that is an uncaught error: a stack trace, and a restore killed
  // before it could drop the half-made database it created. Stop as on
  // SIGTERM (nothing committed, temporary files and databases removed), and
  // exit 141, the status a program killed by SIGPIPE has.
  let outputClosed = false;
  let settled = false;
  const onOutputError = (err: NodeJS.ErrnoException): void => {
    if (outputClosed) return; // writes after the first failure fail too
    if (hungUp && err.code === 'EIO') return; // (see SIGHUP above: keeps running)
    outputClosed = true;
    if (err.code !== 'EPIPE') {
      try {
        process.stderr.write(`flashback: cannot write the output: ${err.message}\n`);
      } catch {}
    }
    // Once the command is done, only its status is left to say so.
    if (settled) process.exitCode = ExitCode.outputClosed;
    else if (!requestInterrupt()) process.exit(ExitCode.outputClosed);
  };
  process.stdout.on('error', onOutputError);
  process.stderr.on('error', onOutputError);
  const exitCode = (code: number): number => (outputClosed ? ExitCode.outputClosed : code);
  // A rejection nobody handled is a bug: report it as one (exit 70), not as a raw crash.
  process.on('unhandledRejection', (err: unknown) => {
    process.exitCode = reportError(err, io, process.argv.includes('--debug'), false);
    process.exit(process.exitCode);
  });
  // Node exits when nothing is left to wait for, even with the command's
  // promise unsettled; it would do so with status 0. A command that stops
  // that way has not done what it says: a bug, reported as one.
  process.on('beforeExit', () => {
    if (settled) return;
    process.stderr.write(
      'flashback: internal error: the command stopped before it finished (nothing was left to wait for); what it reported so far is all it did\n',
    );
    process.exit(ExitCode.internal);
  });
  main(process.argv.slice(2), io).then(
    (code) => {
      settled = true;
      process.exitCode = exitCode(code);
    },
    (err: unknown) => {
      settled = true;
      process.exitCode = exitCode(reportError(err, io, process.argv.includes('--debug'), false));
    },
  );
}

if (isEntryPoint()) runAsProcess();
