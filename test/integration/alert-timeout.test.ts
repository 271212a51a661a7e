/**
 * A webhook that accepts the connection and never answers: the delivery
 * gives up at its timeout even when the garbage collector runs meanwhile.
 * On Node 20 a signal from AbortSignal.any([AbortSignal.timeout(…), …])
 * could be collected before it fired, and `serve` then waited for good: no
 * job ran again. The built sender is run in a child process with the
 * collector exposed and called every 50 ms.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ALERTS = fileURLToPath(new URL('../../dist/monitor/alerts.js', import.meta.url));

describe('alert delivery timeout', () => {
  it('holds while the garbage collector runs', async () => {
    const server = createServer((req) => req.resume()).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    const script = `
      const { AlertSender } = await import(${JSON.stringify(ALERTS)});
      const gc = setInterval(() => globalThis.gc(), 50);
      const sender = new AlertSender([{ name: 'hang', url: 'http://127.0.0.1:${port}/' }],
        { attempts: 1, backoffMs: 10, timeoutMs: 500 });
      const [r] = await sender.send({ event: 'finding', severity: 'critical', target: 'prod',
        kind: 'backup-failed', message: 'x', at: 't' }, new AbortController().signal);
      clearInterval(gc);
      console.log(JSON.stringify(r));`;
    try {
      const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script]);
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const killer = setTimeout(() => child.kill('SIGKILL'), 8000);
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      clearTimeout(killer);
      expect(code, 'the delivery never gave up').toBe(0);
      expect(JSON.parse(out)).toMatchObject({ ok: false, error: 'no answer within 500 ms' });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
