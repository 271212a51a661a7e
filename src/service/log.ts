/**
 * The service's log: one JSON object per line (pino) for log shippers, or a
 * human line per event. Both carry the same fields; the human form puts the
 * message first and the fields after it as key=value.
 */
import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { redact } from '../secrets.js';

export type { Logger } from 'pino';

const LEVELS: Readonly<Record<number, string>> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

/** A logger writing to `out` in the given mode. Secrets are masked in both. */
export function createLogger(mode: 'json' | 'human', out: NodeJS.WritableStream): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const line = redact(chunk.toString('utf8'));
      out.write(mode === 'json' ? line : humanLine(line));
      done();
    },
  });
  return pino(
    {
      base: { service: 'flashback' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Errors as {type, message, code}: stacks only for bugs, at debug level.
      serializers: { err: pino.stdSerializers.err },
    },
    sink,
  );
}

function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, msg, service: _s, pid: _p, hostname: _h, err, ...rest } = o;
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
  const e =
    err !== undefined && typeof err === 'object' && err !== null
      ? ` error=${JSON.stringify((err as { message?: unknown }).message)}`
      : '';
  return `${String(time)} ${LEVELS[Number(level)] ?? String(level)} ${String(msg ?? '')}${fields === '' ? '' : ` ${fields}`}${e}\n`;
}
