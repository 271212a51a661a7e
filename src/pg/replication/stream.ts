/**
 * A logical replication stream from a slot: START_REPLICATION on a
 * replication connection, pgoutput messages decoded as they arrive, handed
 * out one by one through an async iterator.
 *
 * Contracts that capture relies on:
 * - Nothing is acknowledged unless `acknowledge()` is called. The slot's
 *   confirmed_flush_lsn moves only to what was acknowledged: every Standby
 *   Status Update (on acknowledge, in reply to keepalives, and periodically)
 *   reports it as the *flush* position (0/0, "none", before the first).
 *   The *write* position reports what has been received and *apply* is left
 *   unset, as pg_recvlogical does; neither moves a logical slot.
 * - A server shutdown (smart or fast) waits for the stream: the walsender
 *   exits only once the flush position (the write position while nothing
 *   was ever acknowledged) equals what it has sent, asking for replies
 *   meanwhile. A consumer that has stored everything acknowledges the last
 *   keepalive's `walEnd` (see KeepaliveEvent) and the server goes down; a
 *   consumer that stalls holds the shutdown up until it closes the stream
 *   (or pg_terminate_backend ends the walsender). Nothing is lost either way.
 * - Bounded memory: when more than `highWaterMark` bytes of decoded
 *   messages wait for the consumer, the socket stops being read, TCP fills
 *   up, and the walsender blocks. A transaction of any size streams through
 *   a fixed amount of memory (plus the largest single row).
 * - Errors (the walsender terminated, the server shutting down, the
 *   connection lost, a missing or busy slot) surface as a ReplicationError
 *   carrying the server's message, after every message received before it.
 *
 * Integration with node-postgres: START_REPLICATION is sent as a
 * "submittable" query (as src/pg/copy-out.ts does for COPY). The client's
 * own protocol parser splits the byte stream into messages and hands each
 * CopyData payload to `handleCopyData` as a view of its buffer; it is
 * decoded to strings right there and never kept, so no per-message copy is
 * made. (copy-out.ts takes the socket's data listener over to avoid an
 * object per row; here every message becomes an object anyway, so the
 * client's parser costs nothing extra and handles ErrorResponse,
 * CommandComplete and ReadyForQuery for us.)
 */
import pg from 'pg';
import type { ConnectionParams } from '../../config/targets.js';
import { type FlashbackErrorOptions, OperationError } from '../../errors.js';
import { connectParams, type PgClient } from '../connect.js';
import { quoteIdent, quoteLiteral } from '../schema/quote.js';
import { Lsn, PgoutputDecoder, type PgoutputMessage, pgTimestampNow } from './pgoutput.js';

/** Where to stream from: a target's name (for messages) and connection. */
export interface ReplicationTarget {
  readonly name: string;
  readonly connection: ConnectionParams;
}

/** The publication Flashback streams by default. */
export const DEFAULT_PUBLICATION = 'flashback';

/** A replication failure; `serverCode` is the SQLSTATE when the server reported it. */
export class ReplicationError extends OperationError {
  readonly serverCode: string | undefined;

  constructor(
    code: string,
    message: string,
    options: FlashbackErrorOptions & { readonly serverCode?: string | undefined } = {},
  ) {
    super(code, message, options);
    this.serverCode = options.serverCode;
  }
}

const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

/** Throws unless `name` is a valid replication slot name (lower-case letters, digits, underscores; at most 63). */
export function checkSlotName(name: string): void {
  if (!SLOT_NAME.test(name)) {
    throw new ReplicationError('replication.slot-name', `invalid replication slot name "${name}"`, {
      hint: 'use 1 to 63 lower-case letters, digits and underscores',
    });
  }
}

/** A decoded pgoutput message and where it sits in the WAL. */
export interface DataEvent {
  readonly kind: 'data';
  /**
   * XLogData's WAL start. For pgoutput this is the change's own LSN; for a
   * Begin, the transaction's first change's LSN; for a Commit, the end of
   * the commit record (the Commit's `endLsn`); for a Relation or Type
   * message 0/0 (they describe tables, they are not at a WAL position).
   */
  readonly walStart: Lsn;
  /** XLogData's WAL end (the server sends the same value as walStart for logical streams). */
  readonly walEnd: Lsn;
  /** When the server sent it: microseconds since 2000-01-01 UTC. */
  readonly serverTime: bigint;
  readonly message: PgoutputMessage;
}

/**
 * A primary keepalive: the server has decoded and sent everything up to
 * `walEnd`. Once every transaction received before it is stored, acknowledging
 * `walEnd` lets the slot release WAL through idle periods (or periods of
 * changes to other databases or unpublished tables). Replies that the server
 * requests are sent by the stream itself.
 */
export interface KeepaliveEvent {
  readonly kind: 'keepalive';
  readonly walEnd: Lsn;
  readonly serverTime: bigint;
  readonly replyRequested: boolean;
}

/**
 * A pgoutput message as the server sent it, undecoded (option `raw`): for
 * consumers that store messages rather than read them.
 */
export interface RawDataEvent {
  readonly kind: 'raw';
  /** The message (a copy: the consumer may keep it). */
  readonly data: Buffer;
  /**
   * The furthest WAL position this message vouches for: XLogData's WAL start
   * and end, and for a Commit its end LSN. Acknowledging up to a Commit's end
   * LSN is allowed once that Commit was read.
   */
  readonly position: bigint;
}

/** What the stream yields, in WAL order. */
export type ReplicationEvent = DataEvent | RawDataEvent | KeepaliveEvent;

/** Options for `startReplication`. */
export interface ReplicationOptions {
  /** The slot to stream from (it must exist, and be a pgoutput slot of this database). */
  readonly slot: string;
  /**
   * Where to start; the server starts at the later of this and the slot's
   * confirmed_flush_lsn. Default 0/0: from the slot's confirmed position.
   */
  readonly startLsn?: Lsn | string | undefined;
  /** Publications to stream; default `["flashback"]`. */
  readonly publications?: readonly string[] | undefined;
  /** pgoutput protocol version; default 1. Streaming needs 2. */
  readonly protoVersion?: 1 | 2 | undefined;
  /**
   * Stream large in-progress transactions (protocol 2): their changes arrive
   * in Stream Start/Stop blocks before they commit or abort. Default false:
   * every transaction arrives whole, at its commit, in commit order.
   */
  readonly streaming?: boolean | undefined;
  /**
   * Deliver each pgoutput message undecoded, as a RawDataEvent, instead of a
   * DataEvent. Protocol 1 without streaming only. Default false.
   */
  readonly raw?: boolean | undefined;
  /** Bytes of received messages buffered for the consumer before reading pauses; default 1 MiB. */
  readonly highWaterMark?: number | undefined;
  /**
   * Seconds between unsolicited status updates (which repeat the last
   * acknowledged position). They keep the walsender from timing the
   * connection out (wal_sender_timeout, default 60 s) while reading is
   * paused for a slow consumer. Default 10.
   */
  readonly statusIntervalSeconds?: number | undefined;
  /** Seconds `close()` waits for the server to end the stream before dropping the connection; default 10. */
  readonly closeTimeoutSeconds?: number | undefined;
  /** Names the target in error messages; default "the server". */
  readonly label?: string | undefined;
}

/** Counters for progress reports and tests. */
export interface ReplicationStats {
  /** pgoutput messages decoded. */
  readonly messages: number;
  /** CopyData bytes received (messages and keepalives). */
  readonly bytes: number;
  /** Times reading paused because the consumer fell behind. */
  readonly pauses: number;
}

/**
 * A running replication stream. One consumer: iterate it, or call `read()`.
 * Breaking out of a `for await` loop closes the stream.
 */
export interface ReplicationStream extends AsyncIterable<ReplicationEvent> {
  /**
   * The next event, or undefined once the stream was closed. Rejects with a
   * ReplicationError when the stream failed (after every event received
   * before the failure was read).
   */
  read(): Promise<ReplicationEvent | undefined>;
  /**
   * Every event already received, at once, without waiting (an empty array
   * when none is queued, also after a failure: `read()` reports that). For
   * consumers under load, where a promise per event costs more than the
   * event. Not while a `read()` is pending.
   */
  readQueued(): ReplicationEvent[];
  /**
   * Stops reading from the server for `ms` milliseconds: what it sends
   * meanwhile waits in the socket and is then read in large blocks (far
   * fewer reads and wake-ups than one per message). For consumers that take
   * events in batches (`readQueued`).
   */
  accumulate(ms: number): Promise<void>;
  /**
   * Tells the server that every change up to `lsn` is safely stored, so the
   * slot may move past it: sends a Standby Status Update with flush = `lsn`
   * (write = what was received, apply unset). For a whole transaction acknowledge its Commit's
   * `endLsn`. Positions at or before the last acknowledged one are ignored;
   * one beyond the last position read throws (it would skip unread changes).
   * Returns false when the stream is no longer running: nothing was sent,
   * and the next session starts from the last acknowledgement the server got.
   */
  acknowledge(lsn: Lsn | string): boolean;
  /** The last acknowledged position (0/0 before any). */
  readonly acknowledged: Lsn;
  readonly stats: ReplicationStats;
  /**
   * Ends the stream: sends CopyDone, discards what is still in flight, waits
   * for the server to finish (at most `closeTimeoutSeconds`), and closes the
   * connection. Events not yet read are dropped (they were not acknowledged,
   * so the next session receives them again). Safe to call more than once.
   */
  close(): Promise<void>;
}

/** Connects to `target` with a replication connection and starts streaming. */
export async function openReplicationStream(
  target: ReplicationTarget,
  options: ReplicationOptions,
): Promise<ReplicationStream> {
  checkSlotName(options.slot);
  const client = await connectParams(target.name, target.connection, {
    replication: true,
    applicationName: 'flashback capture',
  });
  return startReplication(client, { label: `target "${target.name}"`, ...options });
}

/**
 * Starts streaming on `client`, a connected replication connection
 * (`replication: true`); resolves once the server has switched to
 * CopyBoth. From then on the stream owns the client and ends it in
 * `close()` or on failure; on a failed start the client is ended too.
 */
export async function startReplication(
  client: PgClient,
  options: ReplicationOptions,
): Promise<ReplicationStream> {
  checkSlotName(options.slot);
  const stream = new Stream(client, options);
  await stream.start();
  return stream;
}

/** The START_REPLICATION command for `options`. */
export function startReplicationCommand(options: ReplicationOptions): string {
  checkSlotName(options.slot);
  const start = Lsn.from(options.startLsn ?? Lsn.ZERO);
  const proto = options.protoVersion ?? 1;
  if (options.streaming === true && proto < 2) {
    throw new RangeError('streaming in-progress transactions needs protoVersion 2');
  }
  const pubs = (options.publications ?? [DEFAULT_PUBLICATION]).map(quoteIdent).join(',');
  const opts = [
    `proto_version '${proto}'`,
    `publication_names ${quoteLiteral(pubs)}`,
    "messages 'true'",
    ...(options.streaming === true ? ["streaming 'on'"] : []),
  ];
  return `START_REPLICATION SLOT ${options.slot} LOGICAL ${start.text} (${opts.join(', ')})`;
}

/** The parts of node-postgres's connection this uses. */
interface Connection {
  readonly stream: {
    pause(): unknown;
    resume(): unknown;
    destroy(): unknown;
  };
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  once(event: 'replicationStart', listener: () => void): unknown;
  removeListener(event: 'replicationStart', listener: () => void): unknown;
}

/** What the submittable reports to. */
interface Sink {
  submitted(connection: Connection): void;
  copyData(chunk: Buffer): void;
  error(err: unknown): void;
  commandComplete(): void;
  readyForQuery(): void;
}

/** START_REPLICATION as a node-postgres submittable; forwards what the client's parser sees. */
class StartReplicationQuery {
  constructor(
    readonly text: string,
    private readonly sink: Sink,
  ) {}

  /** node-postgres: the query's turn has come. */
  submit(connection: Connection): void {
    this.sink.submitted(connection);
    connection.query(this.text);
  }

  /** node-postgres: a CopyData message; `chunk` is a view of the parser's buffer, valid only now. */
  handleCopyData(msg: { readonly chunk: Buffer }): void {
    this.sink.copyData(msg.chunk);
  }

  /** node-postgres: an ErrorResponse, or the connection ended while the query ran. */
  handleError(err: Error): void {
    this.sink.error(err);
  }

  /** node-postgres: CommandComplete: the server ended the stream. */
  handleCommandComplete(): void {
    this.sink.commandComplete();
  }

  /** node-postgres: ReadyForQuery after the stream ended. */
  handleReadyForQuery(): void {
    this.sink.readyForQuery();
  }
}

const XLOG_DATA = 0x77; // w
const KEEPALIVE = 0x6b; // k
/** Bytes charged per buffered event on top of its wire size: the decoded objects. */
const EVENT_OVERHEAD = 64;

type State = 'starting' | 'streaming' | 'closing' | 'done';

interface Waiter<T> {
  resolve(value: T): void;
  reject(err: unknown): void;
}

class Stream implements ReplicationStream, Sink {
  private state: State = 'starting';
  private connection: Connection | undefined;
  private readonly decoder = new PgoutputDecoder();
  private readonly slot: string;
  private readonly label: string;
  private readonly highWater: number;
  private readonly lowWater: number;
  // A FIFO as an array with a moving head: shift() on a long array is O(n).
  private events: Array<ReplicationEvent | undefined> = [];
  private costs: number[] = [];
  private head = 0;
  private queuedBytes = 0;
  private paused = false;
  private reader: Waiter<ReplicationEvent | undefined> | undefined;
  private failure: ReplicationError | undefined;
  private startWaiter: Waiter<void> | undefined;
  private endWaiter: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ack = Lsn.ZERO;
  /** The furthest position received from the server: the status updates' write position. */
  private received: bigint;
  /** The furthest position handed to the consumer: acknowledgements may not pass it. */
  private delivered: bigint;
  private readonly counters = { messages: 0, bytes: 0, pauses: 0 };

  constructor(
    private readonly client: PgClient,
    private readonly options: ReplicationOptions,
  ) {
    this.slot = options.slot;
    this.label = options.label ?? 'the server';
    this.highWater = options.highWaterMark ?? 1024 * 1024;
    this.lowWater = Math.floor(this.highWater / 4);
    this.delivered = Lsn.from(options.startLsn ?? Lsn.ZERO).value;
    this.received = this.delivered;
    if (options.raw === true && options.streaming === true) {
      throw new RangeError(
        'raw messages cannot be combined with streaming (Stream blocks need decoding)',
      );
    }
  }

  get acknowledged(): Lsn {
    return this.ack;
  }

  get stats(): ReplicationStats {
    return { ...this.counters };
  }

  start(): Promise<void> {
    const text = startReplicationCommand(this.options);
    return new Promise((resolve, reject) => {
      this.startWaiter = { resolve, reject };
      this.client.query(new StartReplicationQuery(text, this));
    });
  }

  // --- Sink: called by the submittable -------------------------------------

  submitted(connection: Connection): void {
    this.connection = connection;
    connection.once('replicationStart', this.onReplicationStart);
  }

  private readonly onReplicationStart = (): void => {
    if (this.state !== 'starting') return;
    this.state = 'streaming';
    const seconds = this.options.statusIntervalSeconds ?? 10;
    this.timer = setInterval(() => this.sendStatus(), seconds * 1000);
    this.timer.unref();
    const w = this.startWaiter;
    this.startWaiter = undefined;
    w?.resolve();
  };

  copyData(chunk: Buffer): void {
    if (this.state !== 'streaming' && this.state !== 'closing') return;
    this.counters.bytes += chunk.length;
    const kind = chunk[0];
    if (kind === KEEPALIVE && chunk.length >= 18) {
      const walEnd = chunk.readBigUInt64BE(1);
      if (walEnd > this.received) this.received = walEnd;
      const replyRequested = chunk[17] !== 0;
      if (replyRequested) this.sendStatus();
      if (this.state === 'streaming') {
        this.enqueue(
          {
            kind: 'keepalive',
            walEnd: new Lsn(walEnd),
            serverTime: chunk.readBigInt64BE(9),
            replyRequested,
          },
          EVENT_OVERHEAD,
        );
      }
      return;
    }
    if (kind !== XLOG_DATA || chunk.length < 25) {
      this.fail(
        new ReplicationError(
          'replication.protocol',
          `replication from slot "${this.slot}" on ${this.label}: unexpected CopyData message 0x${(kind ?? 0).toString(16)} of ${chunk.length} bytes`,
          {
            hint: 'a protocol mismatch between Flashback and the server; report it with the server version',
          },
        ),
      );
      return;
    }
    // While closing, the rest of what the server already sent is discarded.
    if (this.state !== 'streaming') return;
    if (this.options.raw === true) {
      this.copyRaw(chunk);
      return;
    }
    let message: PgoutputMessage;
    try {
      message = this.decoder.decode(chunk.subarray(25));
    } catch (err) {
      this.fail(this.classify(err));
      return;
    }
    this.counters.messages++;
    const walStart = new Lsn(chunk.readBigUInt64BE(1));
    const walEndValue = chunk.readBigUInt64BE(9);
    if (walEndValue > this.received) this.received = walEndValue;
    this.enqueue(
      {
        kind: 'data',
        walStart,
        walEnd: walEndValue === walStart.value ? walStart : new Lsn(walEndValue),
        serverTime: chunk.readBigInt64BE(17),
        message,
      },
      chunk.length + EVENT_OVERHEAD,
    );
  }

  /** XLogData in raw mode: the message is copied, not decoded (see RawDataEvent). */
  private copyRaw(chunk: Buffer): void {
    this.counters.messages++;
    // A copy: `chunk` is a view of the parser's buffer, which it reuses.
    const data = Buffer.from(chunk.subarray(25));
    const walEnd = chunk.readBigUInt64BE(9);
    if (walEnd > this.received) this.received = walEnd;
    let position = chunk.readBigUInt64BE(1);
    if (walEnd > position) position = walEnd;
    // A Commit's end LSN (flags 1 byte, commit LSN 8, end LSN 8) is what a consumer acknowledges.
    if (data[0] === 0x43 && data.length >= 18) {
      const end = data.readBigUInt64BE(10);
      if (end > position) position = end;
    }
    this.enqueue({ kind: 'raw', position, data }, chunk.length + EVENT_OVERHEAD);
  }

  error(err: unknown): void {
    const e = this.classify(err);
    if (this.state === 'starting') {
      this.state = 'done';
      this.connection?.removeListener('replicationStart', this.onReplicationStart);
      const w = this.startWaiter;
      this.startWaiter = undefined;
      void this.endClient().then(() => w?.reject(e));
      return;
    }
    if (this.state === 'closing') {
      this.endWaiter?.();
      return;
    }
    this.fail(e);
  }

  commandComplete(): void {
    if (this.state !== 'streaming') return;
    // Unasked: a walsender that finishes during a server shutdown says "COPY 0" and exits.
    this.fail(
      new ReplicationError(
        'replication.ended',
        `replication from slot "${this.slot}" on ${this.label} stopped: the server ended the stream (is it shutting down?)`,
        {
          hint: 'reconnect once the server is up: the stream resumes after the last acknowledged position',
        },
      ),
    );
  }

  readyForQuery(): void {
    if (this.state === 'closing') this.endWaiter?.();
  }

  // --- the consumer's side --------------------------------------------------

  read(): Promise<ReplicationEvent | undefined> {
    if (this.head < this.events.length) return Promise.resolve(this.dequeue());
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.state !== 'streaming') return Promise.resolve(undefined);
    if (this.reader !== undefined) {
      return Promise.reject(
        new Error('ReplicationStream.read() called while another read is pending'),
      );
    }
    return new Promise((resolve, reject) => {
      this.reader = { resolve, reject };
    });
  }

  readQueued(): ReplicationEvent[] {
    if (this.reader !== undefined) {
      throw new Error('ReplicationStream.readQueued() called while a read is pending');
    }
    if (this.head >= this.events.length) return [];
    const out = this.events.slice(this.head) as ReplicationEvent[];
    this.events = [];
    this.costs = [];
    this.head = 0;
    this.queuedBytes = 0;
    if (this.paused && this.state === 'streaming') {
      this.paused = false;
      this.connection?.stream.resume();
    }
    for (const e of out) this.noteDelivered(e);
    return out;
  }

  [Symbol.asyncIterator](): AsyncIterator<ReplicationEvent> {
    return {
      next: async () => {
        const value = await this.read();
        return value === undefined ? { done: true, value: undefined } : { done: false, value };
      },
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  acknowledge(lsn: Lsn | string): boolean {
    const l = Lsn.from(lsn);
    if (l.value > this.delivered) {
      throw new RangeError(
        `cannot acknowledge ${l.text}: it is beyond the last position read (${new Lsn(this.delivered).text})`,
      );
    }
    if (l.value > this.ack.value) this.ack = l;
    return this.sendStatus();
  }

  async accumulate(ms: number): Promise<void> {
    const held = this.state === 'streaming' && !this.paused && this.connection !== undefined;
    if (held) {
      this.paused = true;
      this.connection!.stream.pause();
    }
    await new Promise((resolve) => setTimeout(resolve, ms));
    // Resumed here unless the queue filled meanwhile (then dequeuing resumes it).
    if (held && this.paused && this.state === 'streaming' && this.queuedBytes <= this.lowWater) {
      this.paused = false;
      this.connection?.stream.resume();
      // The socket restarts reading on a later tick and reads in the event
      // loop's poll phase; setImmediate runs just after it, so what collected
      // meanwhile is queued when this returns (a caller that paused again at
      // once would otherwise never let it in).
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  // --- internals ------------------------------------------------------------

  private enqueue(event: ReplicationEvent, cost: number): void {
    if (this.reader !== undefined) {
      const r = this.reader;
      this.reader = undefined;
      this.noteDelivered(event);
      r.resolve(event);
      return;
    }
    this.events.push(event);
    this.costs.push(cost);
    this.queuedBytes += cost;
    if (!this.paused && this.queuedBytes >= this.highWater && this.connection !== undefined) {
      // The consumer is behind: stop reading until it catches up (see dequeue).
      this.paused = true;
      this.counters.pauses++;
      this.connection.stream.pause();
    }
  }

  private dequeue(): ReplicationEvent {
    const event = this.events[this.head]!;
    this.queuedBytes -= this.costs[this.head]!;
    this.events[this.head] = undefined;
    this.head++;
    if (this.head === this.events.length) {
      this.events = [];
      this.costs = [];
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= this.events.length) {
      this.events = this.events.slice(this.head);
      this.costs = this.costs.slice(this.head);
      this.head = 0;
    }
    if (this.paused && this.queuedBytes <= this.lowWater && this.state === 'streaming') {
      this.paused = false;
      this.connection?.stream.resume();
    }
    this.noteDelivered(event);
    return event;
  }

  private noteDelivered(event: ReplicationEvent): void {
    if (event.kind === 'raw') {
      if (event.position > this.delivered) this.delivered = event.position;
      return;
    }
    let v = event.walEnd.value;
    if (event.kind === 'data') {
      if (event.walStart.value > v) v = event.walStart.value;
      const m = event.message;
      if ((m.tag === 'commit' || m.tag === 'stream-commit') && m.endLsn.value > v)
        v = m.endLsn.value;
    }
    if (v > this.delivered) this.delivered = v;
  }

  /** Sends a Standby Status Update with the acknowledged position; false when not streaming. */
  private sendStatus(): boolean {
    // After our CopyDone the protocol allows no more CopyData from us.
    if (this.state !== 'streaming' || this.connection === undefined) return false;
    const b = Buffer.allocUnsafe(34);
    b[0] = 0x72; // r
    // See the module comment for why write is "received" and apply is unset.
    let write = this.ack.value;
    if (this.received > write) write = this.received;
    b.writeBigUInt64BE(write, 1); // write
    b.writeBigUInt64BE(this.ack.value, 9); // flush: the only one that moves confirmed_flush_lsn
    b.writeBigUInt64BE(0n, 17); // apply: InvalidXLogRecPtr
    b.writeBigInt64BE(pgTimestampNow(), 25);
    b[33] = 0; // no reply requested
    this.connection.sendCopyFromChunk(b);
    return true;
  }

  private fail(err: ReplicationError): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.failure = err;
    this.stopTimer();
    this.endWaiter?.(); // a close() in progress need not wait any longer
    const r = this.reader;
    this.reader = undefined;
    r?.reject(err);
    void this.endClient();
  }

  private async shutdown(): Promise<void> {
    this.stopTimer();
    // Nobody will read these: drop them, and read on so the server's answer gets through.
    this.events = [];
    this.costs = [];
    this.head = 0;
    this.queuedBytes = 0;
    const r = this.reader;
    this.reader = undefined;
    r?.resolve(undefined);
    if (this.state === 'streaming' && this.connection !== undefined) {
      this.state = 'closing';
      if (this.paused) {
        this.paused = false;
        this.connection.stream.resume();
      }
      const ended = new Promise<boolean>((resolve) => {
        this.endWaiter = () => resolve(true);
        const t = setTimeout(() => resolve(false), (this.options.closeTimeoutSeconds ?? 10) * 1000);
        t.unref();
      });
      this.connection.endCopyFrom();
      // The server may still be sending (the rest of a large transaction) before it
      // reads our CopyDone; past the timeout the connection is simply dropped.
      if (!(await ended)) this.connection.stream.destroy();
    }
    this.state = 'done';
    await this.endClient();
  }

  private async endClient(): Promise<void> {
    if (this.paused) {
      // A paused socket never reads the server's EOF, and end() would wait for it.
      this.paused = false;
      this.connection?.stream.resume();
    }
    await this.client.end().catch(() => {});
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private classify(err: unknown): ReplicationError {
    if (err instanceof ReplicationError) return err;
    const what = `replication from slot "${this.slot}" on ${this.label}`;
    if (err instanceof OperationError) {
      // A pgoutput decoding error.
      return new ReplicationError(err.code, `${what}: ${err.message}`, {
        hint: err.hint,
        cause: err,
      });
    }
    if (err instanceof pg.DatabaseError) {
      const serverCode = err.code;
      const msg = `${what} failed: ${err.message}`;
      const opts = (hint: string) => ({ hint, cause: err, serverCode });
      switch (serverCode) {
        case '57P01': // admin_shutdown: pg_terminate_backend, or a fast/smart shutdown
        case '57P02': // crash_shutdown
        case '57P03': // cannot_connect_now
          return new ReplicationError(
            'replication.terminated',
            msg,
            opts(
              'the walsender was stopped (pg_terminate_backend, or a server shutdown or restart); reconnect: the stream resumes after the last acknowledged position',
            ),
          );
        case '55006': // object_in_use
          return new ReplicationError(
            'replication.slot-in-use',
            msg,
            opts(
              'another process is streaming from this slot; stop it first (see `active_pid` in pg_replication_slots)',
            ),
          );
        case '42704': // undefined_object: the slot or the publication
          return new ReplicationError(
            'replication.not-found',
            msg,
            opts('create the replication slot and the publication first (docs/CAPTURE.md)'),
          );
        case '42501': // insufficient_privilege
          return new ReplicationError(
            'replication.privilege',
            msg,
            opts('the role needs the REPLICATION attribute (docs/CAPTURE.md, "Privileges")'),
          );
        default:
          return new ReplicationError(
            'replication.failed',
            msg,
            opts('check the server log; `flashback doctor` checks wal_level, slots and privileges'),
          );
      }
    }
    const message = err instanceof Error ? err.message : String(err);
    return new ReplicationError('replication.connection-lost', `${what} failed: ${message}`, {
      hint: 'the connection to the server was lost; reconnect: the stream resumes after the last acknowledged position',
      cause: err,
    });
  }
}
