/**
 * `COPY ... TO STDOUT` as a readable stream of COPY text, without a Buffer
 * per row.
 *
 * The server sends each row as its own CopyData message (type `d`, a 4-byte
 * length, the row). Parsing those into one object per row is what made a
 * backup's main thread allocation-bound (docs/BENCHMARKS.md). Here each
 * buffer received from the socket is compacted in place: message headers are
 * squeezed out with copyWithin, and one view of the rows it carried is pushed
 * downstream. Nothing is allocated per row.
 *
 * Integration with node-postgres: this is a "submittable" query. On submit it
 * takes the socket's data listener over from the client's protocol parser and
 * sends the query; when the COPY is over (CommandComplete, or an
 * ErrorResponse), it hands the rest of the bytes, from that message on, back
 * to the client's parser, which then calls handleCommandComplete,
 * handleError and handleReadyForQuery on this object as for any query.
 */
import { Readable } from 'node:stream';
import { qualify, quoteIdent } from './schema/quote.js';

/** The parts of node-postgres's connection this uses. */
interface Connection {
  readonly stream: NodeJS.EventEmitter & { pause(): unknown; resume(): unknown };
  query(text: string): void;
}

type DataListener = (chunk: Buffer) => void;

// Message types that may arrive while a COPY runs and carry nothing for us.
const COPY_DATA = 0x64; // d
const PASS_THROUGH = new Set([
  0x48 /* H CopyOutResponse */, 0x63 /* c CopyDone */, 0x4e /* N Notice */,
  0x53 /* S ParameterStatus */, 0x41 /* A Notification */,
]);

/** A COPY TO STDOUT query; pass it to `client.query()` and read the COPY text from it. */
export class CopyOut extends Readable {
  private connection: Connection | undefined;
  private pgListener: DataListener | undefined;
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  /** Payload bytes left in the current message. */
  private remaining = 0;
  private code = 0;
  private attached = false;
  private paused = false;
  private readonly onData: DataListener = (chunk) => this.receive(chunk);

  constructor(readonly text: string) {
    super();
  }

  /** Called by node-postgres when the query is sent. */
  submit(connection: Connection): void {
    this.connection = connection;
    const listeners = connection.stream.listeners('data') as DataListener[];
    if (listeners.length !== 1)
      throw new Error(`expected one data listener on the connection, found ${listeners.length}`);
    this.pgListener = listeners[0];
    connection.stream.removeListener('data', this.pgListener!);
    connection.stream.on('data', this.onData);
    this.attached = true;
    connection.query(this.text);
  }

  private receive(buf: Buffer): void {
    let out = 0;
    let i = 0;
    while (i < buf.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, buf.length - i);
        if (this.code === COPY_DATA) {
          if (out !== i) buf.copyWithin(out, i, i + n);
          out += n;
        }
        i += n;
        this.remaining -= n;
        continue;
      }
      let code: number;
      if (this.headerFill === 0 && buf.length - i >= 5) {
        // The common case, read in place: a copy call per row cost a backup
        // 0.13 s per 300 MB.
        code = buf[i]!;
        if (code === COPY_DATA) {
          this.code = code;
          this.remaining = buf.readInt32BE(i + 1) - 4;
          i += 5;
          continue;
        }
        buf.copy(this.header, 0, i, i + 5);
        i += 5;
      } else {
        // A header split across socket reads: gathered in this.header.
        const take = Math.min(5 - this.headerFill, buf.length - i);
        buf.copy(this.header, this.headerFill, i, i + take);
        this.headerFill += take;
        i += take;
        if (this.headerFill < 5) break;
        this.headerFill = 0;
        code = this.header[0]!;
      }
      if (code === COPY_DATA || PASS_THROUGH.has(code)) {
        this.code = code;
        this.remaining = this.header.readInt32BE(1) - 4;
        continue;
      }
      // CommandComplete, ErrorResponse or anything else: the COPY is over.
      // Give the client's parser this message (its header included) and the rest.
      const rest = Buffer.concat([Buffer.from(this.header), buf.subarray(i)]);
      if (out > 0) this.push(buf.subarray(0, out));
      if (code === 0x43 /* C */) this.push(null);
      this.detach(rest);
      return;
    }
    if (out > 0 && !this.push(buf.subarray(0, out)) && this.attached) {
      // Downstream is full: stop reading the socket until _read is called.
      this.paused = true;
      this.connection?.stream.pause();
    }
  }

  private detach(rest: Buffer): void {
    if (!this.attached || this.connection === undefined || this.pgListener === undefined) return;
    this.attached = false;
    const stream = this.connection.stream;
    stream.removeListener('data', this.onData);
    stream.on('data', this.pgListener);
    if (rest.length > 0) this.pgListener(rest);
    if (this.paused) {
      this.paused = false;
      stream.resume();
    }
  }

  override _read(): void {
    if (this.paused && this.attached) {
      this.paused = false;
      this.connection?.stream.resume();
    }
  }

  /** node-postgres: the COPY ended with an error (also after a partial stream). */
  handleError(err: Error): void {
    this.destroy(err);
  }

  /** node-postgres: CommandComplete (the stream already ended). */
  handleCommandComplete(): void {}

  /** node-postgres: the connection is ready for the next query. */
  handleReadyForQuery(): void {}
}

/**
 * The COPY statement a snapshot reads a table with: the given columns, in key
 * order (physical order without a key). Backup and verify must use the same
 * statement, or a restored table would not re-cut into the same chunks.
 */
export function tableCopySql(t: {
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly string[];
  readonly key: readonly string[];
}): string {
  const order = t.key.length > 0 ? ` ORDER BY ${t.key.map(quoteIdent).join(', ')}` : '';
  return `COPY (SELECT ${t.columns.map(quoteIdent).join(', ')} FROM ONLY ${qualify(t.schema, t.name)}${order}) TO STDOUT`;
}
