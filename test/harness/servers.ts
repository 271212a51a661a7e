/**
 * Which PostgreSQL versions the integration tests run against, and the
 * shape of a shared test server handed from global setup to the tests.
 */
import os from 'node:os';
import path from 'node:path';
import { availableMajors } from '../../src/pg/embedded.js';

/** A running server, as tests see it (plain data: it crosses worker boundaries). */
export interface TestServer {
  readonly major: number;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
}

/** Where test servers live; separate from the product's default so tests never reap a demo's servers. */
export const TEST_BASE_DIR = path.join(os.tmpdir(), 'flashback-test-servers');

/**
 * Versions under test: FLASHBACK_TEST_PG (e.g. "15,17") or every installed
 * major. At least 15 and 17 must be installed: a missing one fails the run
 * rather than silently shrinking the matrix.
 */
export function testMajors(): number[] {
  const installed = availableMajors();
  const wanted =
    process.env.FLASHBACK_TEST_PG?.split(',').map((s) => Number(s.trim())) ?? installed;
  for (const m of [...wanted, ...(process.env.FLASHBACK_TEST_PG === undefined ? [15, 17] : [])]) {
    if (!installed.includes(m)) {
      throw new Error(
        `PostgreSQL ${m} is required by the tests but not installed (installed: ${installed.join(', ')})`,
      );
    }
  }
  return [...new Set(wanted)].sort((a, b) => a - b);
}
