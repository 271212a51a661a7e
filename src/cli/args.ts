/** Values users type on the command line that name things in the change log. */
import { UsageError } from '../errors.js';

/**
 * A transaction id as `txid_current()` or `flashback history` print it:
 * decimal digits only. (Number() took `0x20EB` and `8427.0` for 8427, and
 * an undo or restore of another transaction than the one meant is worse
 * than a refusal.)
 */
export function parseXidArg(text: string, flag: string): number {
  const xid = /^[1-9][0-9]*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(xid)) {
    throw new UsageError(
      `${flag}: expected a transaction id (decimal digits, as txid_current() prints it), got "${text}"`,
    );
  }
  return xid;
}
