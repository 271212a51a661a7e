/**
 * Starting a worker thread from a module beside the caller. Built (dist/),
 * the module is its compiled `.js` file. Run from TypeScript sources under
 * tsx (`npm run bench`, `npx tsx src/cli/bin.ts`), only the `.ts` file
 * exists and a worker does not inherit tsx's loader: it is started through
 * tsx's API instead, so the benchmarks measure the same threads the CLI
 * uses. Elsewhere (vitest) there is no worker and callers work inline.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** Whether a worker can be started for `jsUrl` (see startThread). */
export function threadAvailable(jsUrl: URL): boolean {
  return existsSync(fileURLToPath(jsUrl)) || tsSource(jsUrl) !== undefined;
}

/** A worker running the module at `jsUrl` (or its TypeScript source under tsx). */
export function startThread(jsUrl: URL): Worker {
  if (existsSync(fileURLToPath(jsUrl))) return new Worker(jsUrl);
  const ts = tsSource(jsUrl);
  if (ts === undefined) throw new Error(`no worker module at ${jsUrl.href}`);
  const href = JSON.stringify(ts.href);
  return new Worker(`import('tsx/esm/api').then(({ tsImport }) => tsImport(${href}, ${href}))`, {
    eval: true,
  });
}

/** The `.ts` source of a module, when this process runs under tsx and the file exists. */
function tsSource(jsUrl: URL): URL | undefined {
  if (!process.execArgv.some((a) => a.includes('tsx'))) return undefined;
  const ts = new URL(jsUrl.href.replace(/\.js$/, '.ts'));
  return existsSync(fileURLToPath(ts)) ? ts : undefined;
}
