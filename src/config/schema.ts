/**
 * The configuration file's schema (flashback.yaml), validated with zod.
 * Keys are snake_case as written in YAML; `docs/CONFIG.md` describes each.
 */
import { z } from 'zod';

/** Target names: lower-case words, so they can never be mistaken for a URL or a flag. */
export const TARGET_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

const targetSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, { error: 'expected a postgres:// or postgresql:// URL' })
      .optional(),
    host: z.string().min(1).optional(),
    port: z
      .number({ error: 'expected a port number' })
      .int()
      .min(1, { error: 'expected a port from 1 to 65535' })
      .max(65535, { error: 'expected a port from 1 to 65535' })
      .optional(),
    database: z.string().min(1).optional(),
    user: z.string().min(1).optional(),
    password_env: z
      .string()
      .regex(ENV_NAME, {
        error: 'expected the name of an environment variable, e.g. PROD_PGPASSWORD',
      })
      .optional(),
    sslmode: z.enum(SSL_MODES).optional(),
    protected: z.boolean({ error: 'expected true or false' }).default(true),
    description: z.string().optional(),
  })
  .superRefine((t, ctx) => {
    if (t.url !== undefined) {
      for (const k of ['host', 'port', 'database', 'user'] as const) {
        if (t[k] !== undefined) {
          ctx.addIssue({
            code: 'custom',
            path: [k],
            message: `give either url or ${k}, not both`,
          });
        }
      }
    } else if (t.database === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: 'a target needs either url or database (with host, port, user as needed)',
      });
    }
  });

/** The whole configuration file. */
export const configSchema = z.strictObject({
  version: z.literal(1, { error: 'expected 1 (the only configuration version so far)' }).optional(),
  repository: z.string().min(1, { error: 'expected a directory path' }).optional(),
  targets: z
    .record(
      z.string().regex(TARGET_NAME, {
        error: 'target names are lower-case letters, digits, "-" and "_", starting with a letter',
      }),
      targetSchema,
    )
    .default({}),
});

/** A target as written in the configuration file. */
export type TargetConfig = z.output<typeof targetSchema>;
/** The validated configuration file. */
export type FlashbackConfig = z.output<typeof configSchema>;
