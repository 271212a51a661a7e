/** The commented starter configuration `flashback init` writes. */

/** Returns the starter flashback.yaml text with the given repository location. */
export function starterConfig(repository: string): string {
  return `# Flashback configuration. Reference: docs/CONFIG.md
version: 1

# Where backups, the change log and target fingerprints are kept.
# Overridden by --repo or FLASHBACK_REPO. Relative paths are relative to this file.
repository: ${JSON.stringify(repository)}

# Named databases. Wherever a target name is accepted, a postgres:// URL is too.
# Passwords are never written here: password_env names an environment variable.
targets: {}
#  prod:
#    host: db.internal          # or: url: postgres://app@db.internal:5432/shop
#    port: 5432
#    database: shop
#    user: flashback
#    password_env: PROD_PGPASSWORD
#    sslmode: require           # disable | prefer | require | verify-ca | verify-full
#    protected: true            # default: writes need --confirm prod or the name typed
#    description: production shop database
#  scratch:
#    url: postgres://postgres@localhost:5432/scratch
#    protected: false           # writes go through without a typed confirmation
`;
}
