/**
 * CopyOut's framing, byte by byte: the server's messages split at every
 * possible point across socket reads (headers included) give the same COPY
 * text. Real servers are in test/integration/copy-out.test.ts; they split
 * where the kernel happens to, so every split point is tried here.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { CopyOut } from './copy-out.js';

function message(code: string, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = code.charCodeAt(0);
  head.writeInt32BE(payload.length + 4, 1);
  return Buffer.concat([head, payload]);
}

const rows = ['1\tone\n', '2\ttwo, a longer row\n', '3\t\\N\n', '4\t\n'];
/** What follows the COPY: CommandComplete and ReadyForQuery, for the client's own parser. */
const tail = Buffer.concat([message('C', Buffer.from('COPY 4\0')), message('Z', Buffer.from('I'))]);
const stream = Buffer.concat([
  message('H', Buffer.from([0, 0, 2, 0, 0, 0, 0])),
  message('d', Buffer.from(rows[0]!)),
  message('N', Buffer.from('Snotice\0\0')),
  ...rows.slice(1).map((r) => message('d', Buffer.from(r))),
  message('c', Buffer.alloc(0)),
  tail,
]);

/** Feeds `bytes` to a CopyOut in reads of `cut(i)` bytes; returns its text and what the client's parser got back. */
async function run(bytes: Buffer, cut: (i: number) => number): Promise<[string, Buffer]> {
  const socket = Object.assign(new EventEmitter(), { pause() {}, resume() {} });
  const handedBack: Buffer[] = [];
  socket.on('data', (b: Buffer) => handedBack.push(Buffer.from(b)));
  const copy = new CopyOut('COPY t TO STDOUT');
  copy.submit({ stream: socket, query() {} });
  const text: Buffer[] = [];
  copy.on('data', (b: Buffer) => text.push(Buffer.from(b)));
  const ended = new Promise((r) => copy.on('end', r));
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.max(1, cut(i));
    // A fresh buffer per read, as a socket gives: CopyOut compacts it in place.
    socket.emit('data', Buffer.from(bytes.subarray(at, at + n)));
    at += n;
  }
  await ended;
  return [Buffer.concat(text).toString(), Buffer.concat(handedBack)];
}

describe('CopyOut framing', () => {
  it('gives the same rows however the reads split the messages', async () => {
    for (const size of [1, 2, 3, 4, 5, 6, 7, 9, 13, stream.length]) {
      const [text, back] = await run(stream, () => size);
      expect(text, `reads of ${size}`).toBe(rows.join(''));
      // From CommandComplete on, the bytes go back to the client's own parser.
      expect(back.equals(tail), `reads of ${size}`).toBe(true);
    }
  });

  it('gives the same rows with the stream cut in two at every point', async () => {
    for (let first = 1; first < stream.length; first++) {
      const [text] = await run(stream, (i) => (i === 0 ? first : stream.length));
      expect(text, `split at ${first}`).toBe(rows.join(''));
    }
  });
});
