import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ExitCode, TargetUnreachableError } from '../errors.js';
import { registerSecret } from '../secrets.js';
import type { CliIO } from './context.js';
import { main, reportError } from './main.js';

function capture(): CliIO & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return {
    stdout,
    stderr,
    stdin: new PassThrough(),
    env: {},
    cwd: '/',
    out: () => out,
    err: () => err,
  };
}

describe('top-level error handler', () => {
  it('reports a bug as an internal error (exit 70), with the stack only under --debug', () => {
    const io = capture();
    expect(reportError(new TypeError('x is undefined'), io, false, false)).toBe(ExitCode.internal);
    expect(io.err()).toContain('flashback: internal error: x is undefined');
    expect(io.err()).toContain('This is a bug in Flashback');
    expect(io.err()).not.toContain('    at ');
    const dbg = capture();
    reportError(new TypeError('x is undefined'), dbg, true, false);
    expect(dbg.err()).toContain('    at ');
  });

  it('reports a file this user may not read as a failure naming it (exit 1), not as a bug', () => {
    const io = capture();
    // As node:fs throws it (the tests run as root, which no mode refuses).
    const denied = Object.assign(
      new Error("EACCES: permission denied, open '/r/snapshots/x.json'"),
      { code: 'EACCES', errno: -13, syscall: 'open', path: '/r/snapshots/x.json' },
    );
    expect(reportError(denied, io, false, false)).toBe(ExitCode.failed);
    expect(io.err()).toContain('flashback: error: EACCES: permission denied');
    expect(io.err()).toContain('may not open /r/snapshots/x.json: check its owner and mode');
    expect(io.err()).not.toContain('This is a bug');
  });

  it('prints a typed error with its hint and exit code, as JSON too, never with a secret', () => {
    registerSecret('pw-in-message');
    const io = capture();
    const e = new TargetUnreachableError('prod', 'cannot connect: pw-in-message rejected', {
      hint: 'check it',
    });
    expect(reportError(e, io, false, true)).toBe(ExitCode.unreachable);
    expect(io.err()).toBe('flashback: error: cannot connect: ******** rejected\nhint: check it\n');
    expect(JSON.parse(io.out())).toEqual({
      error: {
        code: 'target.unreachable',
        message: 'cannot connect: ******** rejected',
        hint: 'check it',
        exitCode: 5,
      },
    });
  });
});

describe('settings from the environment', () => {
  it('refuses a FLASHBACK_OVERLAY_MEMORY that is not a size of at least 16MB, before the command runs', async () => {
    for (const bad of ['lots', '512', '1MB']) {
      const io = { ...capture(), env: { FLASHBACK_OVERLAY_MEMORY: bad } };
      expect(await main(['list', '--repo', '/nonexistent'], io)).toBe(ExitCode.usage);
      expect(io.err()).toContain(`FLASHBACK_OVERLAY_MEMORY: expected a size of at least 16MB`);
      expect(io.err()).toContain(`got "${bad}"`);
    }
    // A good one: the command runs (and fails for its own reason, the missing repository).
    const io = { ...capture(), env: { FLASHBACK_OVERLAY_MEMORY: '1GB' } };
    expect(await main(['list', '--repo', '/nonexistent'], io)).toBe(ExitCode.repository);
  });
});
