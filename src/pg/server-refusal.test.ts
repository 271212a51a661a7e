import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../errors.js';
import { serverRefusal } from './connect.js';

/** A server error as node-postgres gives it. */
function serverError(code: string, message: string): pg.DatabaseError {
  const e = new pg.DatabaseError(message, message.length, 'error');
  e.code = code;
  return e;
}

describe("a server's refusal", () => {
  it('is a failure with what to do when it is about the environment', () => {
    const denied = serverRefusal(serverError('42501', 'permission denied for schema priv'));
    expect(denied).toMatchObject({ code: 'server.refused', exitCode: ExitCode.failed });
    expect(denied?.message).toBe(
      'the server refused: permission denied for schema priv (SQLSTATE 42501)',
    );
    expect(denied?.hint).toContain('grant the role Flashback connects as that privilege');
    expect(
      serverRefusal(serverError('57014', 'canceling statement due to statement timeout'))?.hint,
    ).toContain('statement_timeout');
    expect(serverRefusal(serverError('53100', 'could not extend file'))?.hint).toContain(
      'disk space',
    );
  });

  it('stays a bug (undefined: exit 70) when what Flashback sent was wrong', () => {
    expect(
      serverRefusal(serverError('08P01', 'insufficient data left in message')),
    ).toBeUndefined();
    expect(serverRefusal(serverError('42601', 'syntax error at or near "SELEC"'))).toBeUndefined();
    expect(serverRefusal(new Error('not a server error'))).toBeUndefined();
  });
});
