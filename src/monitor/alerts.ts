/**
 * Alerts: what changed in the backups' health, sent to webhooks.
 *
 * The payload is Slack-compatible (`text`, with Slack's mrkdwn), so a Slack,
 * Mattermost, Rocket.Chat or Discord (`/slack` URL) incoming webhook shows it
 * as it is; a `flashback` object carries the same facts as data for anything
 * else. Each alert is retried with exponential backoff; one that still fails
 * is reported to the caller (logged), never thrown into the scheduler.
 */
import type { Finding, Severity } from './status.js';

/** One alert. */
export interface Alert {
  /** `finding`: something is wrong; `recovered`: a target is healthy again. */
  readonly event: 'finding' | 'recovered';
  readonly severity: Severity;
  readonly target: string;
  readonly kind: Finding['kind'] | 'recovered';
  readonly message: string;
  readonly snapshot?: string | undefined;
  readonly at: string;
}

/** A webhook as configured, with its URL resolved. */
export interface Webhook {
  readonly name: string;
  readonly url: string;
}

/** Delivery settings. */
export interface DeliveryOptions {
  readonly attempts: number;
  /** First retry delay (ms), doubled per attempt. */
  readonly backoffMs: number;
  readonly timeoutMs: number;
}

/** What happened to one delivery. */
export interface DeliveryResult {
  readonly webhook: string;
  readonly ok: boolean;
  readonly attempts: number;
  readonly error?: string | undefined;
}

const ICON: Record<Severity, string> = {
  ok: ':white_check_mark:',
  warning: ':warning:',
  critical: ':rotating_light:',
};

/** The JSON body sent for an alert. */
export function alertPayload(alert: Alert): Record<string, unknown> {
  const head =
    alert.event === 'recovered'
      ? `${ICON.ok} *Flashback: ${alert.target} recovered*`
      : `${ICON[alert.severity]} *Flashback ${alert.severity.toUpperCase()}: ${alert.target}*`;
  return {
    text: `${head}\n${alert.message}`,
    flashback: { ...alert },
  };
}

/** Sends alerts to every webhook. */
export class AlertSender {
  constructor(
    private readonly webhooks: readonly Webhook[],
    private readonly options: DeliveryOptions,
    private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void> = delay,
  ) {}

  get configured(): boolean {
    return this.webhooks.length > 0;
  }

  /** Delivers to every webhook (in parallel); resolves with each outcome. */
  send(alert: Alert, signal?: AbortSignal): Promise<DeliveryResult[]> {
    const body = JSON.stringify(alertPayload(alert));
    return Promise.all(this.webhooks.map((w) => this.deliver(w, body, signal)));
  }

  private async deliver(w: Webhook, body: string, signal?: AbortSignal): Promise<DeliveryResult> {
    let error = '';
    let attempt = 0;
    while (attempt < this.options.attempts) {
      // (Stopping: not sent. A listener added to a signal already aborted never fires.)
      if (signal?.aborted === true) {
        error = error || 'not sent: stopping';
        break;
      }
      attempt++;
      // Each attempt is bounded by its own timer, which holds its controller:
      // AbortSignal.any([AbortSignal.timeout(…), …]) on Node 20 can be
      // collected before it fires, and a webhook that never answered then
      // hung the scheduler for good.
      const ac = new AbortController();
      const timer = setTimeout(
        () => ac.abort(new Error(`no answer within ${this.options.timeoutMs} ms`)),
        this.options.timeoutMs,
      );
      const onAbort = (): void => ac.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        const res = await fetch(w.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: ac.signal,
        });
        // Drain the body so the connection is reused or closed (within the timeout too).
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return { webhook: w.name, ok: true, attempts: attempt };
        error = `HTTP ${res.status} ${res.statusText}`;
        // A 4xx other than 408/429 will not get better by retrying.
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          return { webhook: w.name, ok: false, attempts: attempt, error };
        }
      } catch (err) {
        error =
          ac.signal.aborted && !signal?.aborted
            ? String((ac.signal.reason as Error).message)
            : (err as Error).message;
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      }
      // (Stopping: the sleep ends at once, and the loop's top stops.)
      if (attempt < this.options.attempts) {
        await this.sleep(this.options.backoffMs * 2 ** (attempt - 1), signal).catch(() => {});
      }
    }
    return { webhook: w.name, ok: false, attempts: attempt, error };
  }
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new Error('aborted'));
      return;
    }
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(new Error('aborted'));
      },
      { once: true },
    );
  });
}

/**
 * Turns successive status evaluations into alerts: a finding not seen in the
 * previous evaluation (or now more severe) is alerted once; a target whose
 * findings all cleared is alerted once as recovered. Findings are keyed so
 * that a growing age is the same finding, while every new failed backup run
 * (its message names its time) is a new one: every failure is alerted.
 */
export class AlertTracker {
  private previous = new Map<string, Severity>();
  private unhealthy = new Set<string>();

  /** Alerts for this evaluation's findings, given all targets evaluated. */
  update(
    targets: ReadonlyArray<{ target: string; severity: Severity; findings: readonly Finding[] }>,
    at: string,
  ): Alert[] {
    const alerts: Alert[] = [];
    const current = new Map<string, Severity>();
    for (const t of targets) {
      for (const f of t.findings) {
        const key = findingKey(f);
        current.set(key, f.severity);
        const before = this.previous.get(key);
        if (before === undefined || (before === 'warning' && f.severity === 'critical')) {
          alerts.push({
            event: 'finding',
            severity: f.severity,
            target: f.target,
            kind: f.kind,
            message: f.message,
            ...(f.snapshot === undefined ? {} : { snapshot: f.snapshot }),
            at,
          });
        }
      }
      if (t.severity !== 'ok') this.unhealthy.add(t.target);
      else if (this.unhealthy.delete(t.target)) {
        alerts.push({
          event: 'recovered',
          severity: 'ok',
          target: t.target,
          kind: 'recovered',
          message: `every check of "${t.target}" passes again`,
          at,
        });
      }
    }
    this.previous = current;
    return alerts;
  }

  /**
   * An alert that no webhook took: forgotten as sent, so the next
   * evaluation alerts it again while it still holds (a finding still
   * present, a target still healthy). Otherwise the receiver never heard of
   * the failure, and later got "recovered" for it.
   */
  undelivered(alert: Alert): void {
    if (alert.event === 'recovered') this.unhealthy.add(alert.target);
    else this.previous.delete(findingKey(alert));
  }
}

/**
 * What makes a finding the same one from one evaluation to the next. For
 * failures (a backup, a verification that could not run, a missed run) it
 * is the message without its times and counts: the same error again, each
 * schedule period through an outage, is one alert (it paged at every
 * attempt); another error is a new one; the finding gone (a success) and
 * back alerts again.
 */
function findingKey(
  f: Pick<Finding, 'target' | 'snapshot' | 'message'> & { readonly kind: string },
): string {
  const perCause =
    f.kind === 'backup-failed' || f.kind === 'verify-error' || f.kind === 'missed-run';
  const cause = perCause
    ? f.message
        .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, 'T')
        .replace(/ \(\d+ failed attempt\(s\) since [^)]*\)$/, '')
    : '';
  return [f.target, f.kind, f.snapshot ?? '', cause].join('\u0000');
}
