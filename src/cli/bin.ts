#!/usr/bin/env node
/**
 * The `flashback` executable. Loading the whole CLI takes about half a
 * second; a Ctrl-C in that time must still exit 130 with a message, not
 * kill the process by the default signal action. So the first thing this
 * does is handle the signals, then it loads the CLI, which takes them over.
 */
const early = (signal: NodeJS.Signals): void => {
  process.stderr.write(`\nflashback: interrupted by ${signal}\n`);
  process.exit(130);
};
process.on('SIGINT', early);
process.on('SIGTERM', early);

const { runAsProcess } = await import('./main.js');
process.off('SIGINT', early);
process.off('SIGTERM', early);
runAsProcess();
