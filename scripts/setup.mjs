#!/usr/bin/env node
// Makes a fresh clone runnable: installs npm packages when node_modules is
// missing or older than package-lock.json, then builds dist/. Used by
// `npm run demo` and `npm test`, so each works as the first command on a new machine.
import { execSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';

function run(command) {
  try {
    execSync(command, { stdio: 'inherit' });
  } catch (err) {
    console.error(`setup: \`${command}\` failed (exit ${err.status ?? '?'})`);
    process.exit(err.status ?? 1);
  }
}

const installed = 'node_modules/.package-lock.json';
const stale =
  !existsSync(installed) || statSync(installed).mtimeMs < statSync('package-lock.json').mtimeMs;
if (stale) {
  // Not `npm ci`: npm (npm/cli#4828) writes lock files without other
  // platforms' optional packages and then `npm ci` refuses them as out of sync.
  // `npm install` installs the lock file's versions all the same.
  console.error('setup: installing npm packages…');
  run('npm install --no-audit --no-fund');
}
run('npx tsc -p tsconfig.json');
