/**
 * Progress for long work, on stderr: one line redrawn in place on a terminal,
 * a line every 10 seconds otherwise (so logs show the work is alive), and
 * nothing with --json.
 */
import { formatBytes } from '../util/format.js';

/** A progress line writer; `update` may be called often, it throttles itself. */
export class Progress {
  /** The first line appears only after one interval: short work prints no progress at all. */
  private last = Date.now();
  private drawn = false;
  private readonly started = Date.now();

  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly enabled: boolean,
  ) {}

  private get tty(): boolean {
    return this.stream.isTTY === true;
  }

  /** Redraws the line if enough time passed (250 ms on a terminal, 10 s otherwise). */
  update(render: () => string): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < (this.tty ? 250 : 10_000)) return;
    this.last = now;
    const line = render();
    if (this.tty) {
      this.stream.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else {
      this.stream.write(`${line}\n`);
    }
  }

  /** Clears the line before other output. */
  done(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }

  /** Seconds since this progress started. */
  get seconds(): number {
    return (Date.now() - this.started) / 1000;
  }
}

/** `12.3 MB/s` from bytes over seconds. */
export function rate(bytes: number, seconds: number): string {
  return `${formatBytes(seconds > 0 ? bytes / seconds : 0)}/s`;
}

/** `m:ss` for an ETA. */
export function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
