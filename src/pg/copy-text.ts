/**
 * PostgreSQL's COPY text format, the form every row travels in: one line per
 * row, columns separated by tabs, NULL as `\N`, and backslash escapes for
 * backslash, tab, newline and carriage return (so a raw tab or newline byte
 * never occurs inside a field).
 */

const TAB = 0x09;
const BACKSLASH = 0x5c;

/** Byte offset of the end of the first `n` fields of a line (the n-th tab, or the line's end). */
export function endOfFields(line: Buffer, start: number, end: number, n: number): number {
  // A loop bounded by `end`, not indexOf: indexOf searches to the end of the
  // buffer, so when the line has no n-th tab (a one-column table) every line
  // of a chunk scanned the rest of the chunk: 0.66 s per 1 MB chunk.
  let tabs = 0;
  for (let i = start; i < end; i++) {
    if (line[i] === TAB && ++tabs === n) return i;
  }
  return end;
}

/**
 * The raw, still-escaped field `i` (from 0) of the line at [start, end),
 * without splitting the others out (a Buffer per field made reading one
 * column of every row of a table allocation-bound). Throws if the line has
 * fewer fields.
 */
export function fieldAt(line: Buffer, start: number, end: number, i: number): Buffer {
  let from = start;
  for (let n = 0; n < i; n++) {
    let j = from;
    while (j < end && line[j] !== TAB) j++;
    if (j >= end) throw new Error(`a COPY line has ${n + 1} field(s), not ${i + 1}`);
    from = j + 1;
  }
  let to = from;
  while (to < end && line[to] !== TAB) to++;
  return line.subarray(from, to);
}

/** Splits a line (without its newline) into raw, still-escaped fields. */
export function splitFields(line: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const tab = line.indexOf(TAB, pos);
    if (tab < 0) {
      out.push(line.subarray(pos));
      return out;
    }
    out.push(line.subarray(pos, tab));
    pos = tab + 1;
  }
}

/** Decodes one COPY text field to its value's text form, or null for `\N`. */
export function decodeField(field: Buffer): string | null {
  if (field.length === 2 && field[0] === BACKSLASH && field[1] === 0x4e) return null;
  if (field.indexOf(BACKSLASH) < 0) return field.toString('utf8');
  const out: number[] = [];
  for (let i = 0; i < field.length; i++) {
    const c = field[i]!;
    if (c !== BACKSLASH || i + 1 >= field.length) {
      out.push(c);
      continue;
    }
    const n = field[++i]!;
    switch (n) {
      case 0x62:
        out.push(0x08);
        break; // \b
      case 0x66:
        out.push(0x0c);
        break; // \f
      case 0x6e:
        out.push(0x0a);
        break; // \n
      case 0x72:
        out.push(0x0d);
        break; // \r
      case 0x74:
        out.push(0x09);
        break; // \t
      case 0x76:
        out.push(0x0b);
        break; // \v
      case 0x78: {
        // \xHH (one or two hex digits)
        let v = 0;
        let k = 0;
        while (k < 2 && i + 1 < field.length && isHex(field[i + 1]!)) {
          v = v * 16 + hex(field[++i]!);
          k++;
        }
        out.push(k === 0 ? 0x78 : v);
        break;
      }
      default:
        if (n >= 0x30 && n <= 0x37) {
          // \ooo (one to three octal digits)
          let v = n - 0x30;
          let k = 1;
          while (k < 3 && i + 1 < field.length && field[i + 1]! >= 0x30 && field[i + 1]! <= 0x37) {
            v = v * 8 + (field[++i]! - 0x30);
            k++;
          }
          out.push(v & 0xff);
        } else out.push(n); // \\ and any other escaped character stand for themselves
    }
  }
  return Buffer.from(out).toString('utf8');
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hex(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10;
}

/**
 * Encodes a value's text form as a COPY text field, as COPY TO writes it:
 * `\N` for null; backslash and the control characters backspace, form feed,
 * newline, carriage return, tab and vertical tab as backslash escapes; every
 * other character as it is. (So a value captured from the change log and the
 * same value read by a backup give identical bytes.)
 */
export function encodeField(value: string | null): string {
  if (value === null) return '\\N';
  if (!/[\\\b\f\n\r\t\v]/.test(value)) return value;
  return value.replace(/[\\\b\f\n\r\t\v]/g, (c) => ESCAPES[c]!);
}

const ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\v': '\\v',
};
