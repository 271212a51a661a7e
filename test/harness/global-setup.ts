/**
 * Starts one server per PostgreSQL major version for the whole test run and
 * stops them at the end. Servers left behind by a crashed earlier run are
 * reaped first (by their owner PID and postmaster.pid).
 */
import type { TestProject } from 'vitest/node';
import { EmbeddedServer, reapOrphanedServers } from '../../src/pg/embedded.js';
import { TEST_BASE_DIR, type TestServer, testMajors } from './servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgServers: TestServer[];
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await reapOrphanedServers(TEST_BASE_DIR);
  const servers = await Promise.all(
    testMajors().map((major) =>
      EmbeddedServer.start({
        major,
        baseDir: TEST_BASE_DIR,
        // Throwaway data: durability is not under test here, speed is welcome.
        settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' },
      }),
    ),
  );
  project.provide(
    'pgServers',
    servers.map((s) => ({
      major: s.major,
      host: s.host,
      port: s.port,
      user: s.user,
      password: s.password,
    })),
  );
  return async () => {
    await Promise.all(servers.map((s) => s.stop()));
  };
}
