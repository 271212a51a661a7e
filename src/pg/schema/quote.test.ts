import { describe, expect, it } from 'vitest';
import { qualify, quoteIdent, quoteLiteral } from './quote.js';

describe('quoteIdent', () => {
  it('leaves plain lower-case names bare', () => {
    expect(quoteIdent('accounts')).toBe('accounts');
    expect(quoteIdent('_private1')).toBe('_private1');
  });

  it('quotes mixed case, spaces, leading digits and $ anywhere', () => {
    expect(quoteIdent('Accounts')).toBe('"Accounts"');
    expect(quoteIdent('order items')).toBe('"order items"');
    expect(quoteIdent('1st')).toBe('"1st"');
    expect(quoteIdent('$x')).toBe('"$x"');
    expect(quoteIdent('a$b')).toBe('"a$b"');
    expect(quoteIdent('')).toBe('""');
  });

  it('doubles embedded double quotes', () => {
    expect(quoteIdent('say "hi"')).toBe('"say ""hi"""');
    expect(quoteIdent('"')).toBe('""""');
  });

  it('quotes reserved and column-name keywords but not unreserved ones', () => {
    for (const w of ['select', 'order', 'user', 'table', 'int', 'json', 'merge_action']) {
      expect(quoteIdent(w)).toBe(`"${w}"`);
    }
    for (const w of ['name', 'text', 'data', 'key', 'value', 'comment', 'index']) {
      expect(quoteIdent(w)).toBe(w);
    }
  });

  it('quotes non-ASCII letters (the server folds only ASCII)', () => {
    expect(quoteIdent('café')).toBe('"café"');
    expect(quoteIdent('🙂')).toBe('"🙂"');
  });
});

describe('qualify', () => {
  it('quotes each part separately', () => {
    expect(qualify('public', 't')).toBe('public.t');
    expect(qualify('My Schema', 'a.b')).toBe('"My Schema"."a.b"');
  });
});

describe('quoteLiteral', () => {
  it('doubles single quotes', () => {
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(quoteLiteral('')).toBe("''");
  });

  it('uses the E form when there is a backslash', () => {
    expect(quoteLiteral('a\\b')).toBe("E'a\\\\b'");
    expect(quoteLiteral("\\'")).toBe("E'\\\\'''");
  });

  it('keeps newlines and unicode as they are', () => {
    expect(quoteLiteral('line1\nline2 ✓')).toBe("'line1\nline2 ✓'");
  });
});
