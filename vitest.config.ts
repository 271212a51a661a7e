import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/harness/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: more workers only contend with the PostgreSQL servers.
    maxWorkers: 2,
    reporters: process.env.CI ? ['default', './test/harness/summary-reporter.ts'] : ['default'],
  },
});
