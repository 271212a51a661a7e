/** The guard against real servers: identity banner, confirmation, fingerprints. */
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { type ResolvedTarget, resolveTarget } from '../../src/config/targets.js';
import { ExitCode, GuardRefusedError, InterruptedError } from '../../src/errors.js';
import { FingerprintStore } from '../../src/guard/fingerprints.js';
import { type GuardIO, guard } from '../../src/guard/guard.js';
import { Repository } from '../../src/repo/repository.js';
import { LocalStorage } from '../../src/storage/local.js';
import { freshDatabase, type TestServer, tempDir, testServers, url } from '../harness/pg.js';

/** Guard IO with a fake terminal (or none) and captured output. */
function io(opts: { tty: boolean; typed?: string }): GuardIO & { text: () => string } {
  const input = Object.assign(new PassThrough(), { isTTY: opts.tty });
  if (opts.typed !== undefined) input.end(`${opts.typed}\n`);
  else if (opts.tty) input.end();
  let out = '';
  const output = new PassThrough();
  output.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { input, output, text: () => out };
}

async function refusal(p: Promise<unknown>): Promise<GuardRefusedError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GuardRefusedError);
  return err as GuardRefusedError;
}

describe.each(testServers().map((s) => [s.major, s] as const))(
  'guard on PostgreSQL %i',
  (_major, server: TestServer) => {
    let db: string;
    let otherDb: string;
    let store: FingerprintStore;
    let cleanup: () => Promise<void>;
    const env = { TEST_PW: server.password };

    const targets = (yaml: string): ((name: string) => ResolvedTarget) => {
      const config = parseConfig(yaml, 'test');
      return (name) => resolveTarget(name, config, env);
    };
    let t: (name: string) => ResolvedTarget;

    beforeAll(async () => {
      db = await freshDatabase(server, 'guard');
      otherDb = await freshDatabase(server, 'guard_other');
      const tmp = await tempDir();
      cleanup = tmp.cleanup;
      store = new FingerprintStore(await Repository.init(new LocalStorage(tmp.dir)));
      const common = `host: ${server.host}\n    port: ${server.port}\n    user: ${server.user}\n    password_env: TEST_PW`;
      t = targets(`targets:
  prod:
    database: ${db}
    ${common}
  scratch:
    database: ${otherDb}
    protected: false
    ${common}
`);
    });
    afterAll(async () => cleanup());

    it('refuses a protected target without confirmation when there is no terminal', async () => {
      const out = io({ tty: false });
      const err = await refusal(
        guard({ target: t('prod'), action: 'restore everything', fingerprints: store, io: out }),
      );
      expect(err.reason).toBe('not-confirmed');
      expect(err.exitCode).toBe(ExitCode.refused);
      expect(err.hint).toContain('--confirm prod');
      // The banner came first: who the target is and what was about to happen.
      expect(out.text()).toContain('target    prod  (PROTECTED)');
      expect(out.text()).toContain(`PostgreSQL ${server.major}.`);
      expect(out.text()).toContain(`database "${db}"`);
      expect(out.text()).toContain('action    restore everything');
    });

    it('refuses a wrong confirmation name, from the flag or typed at the prompt', async () => {
      const flag = await refusal(
        guard({
          target: t('prod'),
          action: 'x',
          confirm: 'staging',
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(flag.reason).toBe('wrong-confirmation');
      expect(flag.message).toContain(
        'confirmation "staging" does not match the target name "prod"',
      );
      const typed = await refusal(
        guard({
          target: t('prod'),
          action: 'x',
          fingerprints: store,
          io: io({ tty: true, typed: 'prod ' + 'x' }),
        }),
      );
      expect(typed.reason).toBe('wrong-confirmation');
      const closed = await refusal(
        guard({ target: t('prod'), action: 'x', fingerprints: store, io: io({ tty: true }) }),
      );
      expect(closed.reason).toBe('not-confirmed');
    });

    it('accepts the right name, from the flag or typed at the prompt', async () => {
      const viaFlag = await guard({
        target: t('prod'),
        action: 'x',
        confirm: 'prod',
        fingerprints: store,
        io: io({ tty: false }),
      });
      expect(viaFlag.confirmedBy).toBe('flag');
      const out = io({ tty: true, typed: 'prod' });
      const viaPrompt = await guard({
        target: t('prod'),
        action: 'x',
        fingerprints: store,
        io: out,
      });
      expect(viaPrompt.confirmedBy).toBe('prompt');
      expect(out.text()).toContain('Type the target name "prod" to continue');
      expect(viaPrompt.server.identity.database).toBe(db);
    });

    it('ends a prompt interrupted by Ctrl-C as interrupted (exit 130), not as a refusal', async () => {
      const input = Object.assign(new PassThrough(), { isTTY: true }); // stays open: nobody types
      let out = '';
      const output = new PassThrough();
      output.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const ctrlC = new AbortController();
      const asked = guard({
        target: t('prod'),
        action: 'x',
        fingerprints: store,
        io: { input, output, signal: ctrlC.signal },
      }).catch((e: unknown) => e);
      while (!out.includes('Type the target name')) await new Promise((r) => setTimeout(r, 20));
      ctrlC.abort();
      const err = await asked;
      expect(err).toBeInstanceOf(InterruptedError);
      expect(err).toMatchObject({ exitCode: ExitCode.interrupted });
      expect((err as Error).message).toContain('nothing was written');
    });

    it('lets an unprotected target pass without confirmation', async () => {
      const ok = await guard({
        target: t('scratch'),
        action: 'x',
        fingerprints: store,
        io: io({ tty: false }),
      });
      expect(ok.confirmedBy).toBe('unprotected');
      expect(ok.identity.status === 'new' || ok.identity.status === 'match').toBe(true);
      // ...but a wrong --confirm is refused even there: the operator thinks they are elsewhere.
      const err = await refusal(
        guard({
          target: t('scratch'),
          action: 'x',
          confirm: 'prod',
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(err.reason).toBe('wrong-confirmation');
    });

    it('asks a URL target for its database name', async () => {
      const loose = await freshDatabase(server, 'guard_url');
      const target = resolveTarget(url(server, loose), parseConfig('{}', 'x'), {});
      const wrong = await refusal(
        guard({
          target,
          action: 'x',
          confirm: 'scratch',
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(wrong.message).toContain(`does not match the database name "${loose}"`);
      const ok = await guard({
        target,
        action: 'x',
        confirm: loose,
        fingerprints: store,
        io: io({ tty: false }),
      });
      expect(ok.identity.status).toBe('one-off');
      expect(ok.confirmedBy).toBe('flag');
    });

    it('refuses a target whose fingerprint changed, even when confirmed and unprotected', async () => {
      // "scratch" was recorded on otherDb; now the config points it at another database.
      const moved = targets(`targets:
  scratch:
    host: ${server.host}
    port: ${server.port}
    user: ${server.user}
    password_env: TEST_PW
    database: postgres
    protected: false
`)('scratch');
      const err = await refusal(
        guard({
          target: moved,
          action: 'x',
          confirm: 'scratch',
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(err.reason).toBe('fingerprint-changed');
      expect(err.message).toContain(`database was ${otherDb}, now postgres`);
      expect(err.message).not.toContain('same database as');
      expect(err.hint).toContain('flashback targets accept scratch');
    });

    it('refuses a target that is secretly the same database as another (a staging URL pointing at production)', async () => {
      const both = targets(`targets:
  staging:
    url: postgres://${server.user}@${server.host}:${server.port}/${db}
    password_env: TEST_PW
    protected: false
`);
      const err = await refusal(
        guard({
          target: both('staging'),
          action: 'load snapshot',
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(err.reason).toBe('fingerprint-collision');
      expect(err.message).toContain('target "staging" is the same database as target "prod"');
      // A one-off URL to that database is refused too, naming the protected target.
      const oneOff = resolveTarget(url(server, db), parseConfig('{}', 'x'), {});
      const err2 = await refusal(
        guard({
          target: oneOff,
          action: 'x',
          confirm: db,
          fingerprints: store,
          io: io({ tty: false }),
        }),
      );
      expect(err2.reason).toBe('fingerprint-collision');
      expect(err2.hint).toContain('name it as target prod');
    });
  },
);
