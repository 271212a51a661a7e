import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.js';
import { parseConfig } from './load.js';
import { formatSize, parseSize } from './size.js';

describe('sizes', () => {
  it('parses units as powers of 1024, as PostgreSQL does', () => {
    expect(parseSize('512MB')).toBe(512 * 1024 * 1024);
    expect(parseSize('2GB')).toBe(2 * 1024 ** 3);
    expect(parseSize('1.5GB')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('64kB')).toBe(65_536);
    expect(parseSize('1TB')).toBe(1024 ** 4);
    expect(parseSize('100B')).toBe(100);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('8 MB')).toBe(8 * 1024 * 1024);
  });

  it('rejects what is not a size', () => {
    for (const bad of ['', '512', 'MB', '-1GB', '1 GB extra', '1PB', '1e3MB', '1,5GB']) {
      expect(parseSize(bad), bad).toBeUndefined();
    }
  });

  it('formats in IEC units', () => {
    expect(formatSize(100)).toBe('100 B');
    expect(formatSize(1024 ** 3)).toBe('1.00 GiB');
    expect(formatSize(812 * 1024 ** 2)).toBe('812 MiB');
    expect(formatSize(48.25 * 1024 ** 2)).toBe('48.3 MiB');
  });

  it('is how capture.max_retained_wal is written; a bad one is named with its line', () => {
    const c = parseConfig(
      'capture:\n  max_retained_wal: 2GB\ntargets:\n  prod:\n    database: app\n    capture: true\n',
      'f.yaml',
    );
    expect(c.capture.max_retained_wal).toBe(2 * 1024 ** 3);
    expect(c.targets.prod?.capture).toBe(true);
    expect(parseConfig('targets: {}\n', 'f.yaml').capture.max_retained_wal).toBe(1024 ** 3);
    let err: unknown;
    try {
      parseConfig(
        'capture:\n  max_retained_wal: lots\ntargets:\n  p:\n    database: a\n    capture: yes please\n',
        'f.yaml',
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as ConfigError).message;
    expect(message).toContain(
      'f.yaml:2:21: capture.max_retained_wal: expected a size such as 512MB, 2GB or 1.5GB, got "lots"',
    );
    expect(message).toContain('targets.p.capture: expected true or false');
  });
});
