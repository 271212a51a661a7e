/**
 * A process-wide registry of secret strings (passwords) so that no message,
 * error or log line ever prints one. Secrets are registered where they are
 * resolved (config/targets.ts); every line the CLI writes passes `redact`.
 */

const secrets = new Set<string>();

/** Registers a secret so `redact` masks it. Empty strings are ignored. */
export function registerSecret(secret: string | undefined): void {
  if (secret !== undefined && secret.length > 0) secrets.add(secret);
}

/** Replaces every registered secret, and any `user:password@` in a URL, with `********`. */
export function redact(text: string): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1********@');
  for (const s of secrets) out = out.split(s).join('********');
  return out;
}
