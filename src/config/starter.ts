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
#    schedule:                  # for \`flashback serve\`; cron, in serve.timezone (UTC)
#      backup: "0 */6 * * *"
#      verify: "30 */6 * * *"
#      prune: "0 4 * * *"
#  scratch:
#    url: postgres://postgres@localhost:5432/scratch
#    protected: false           # writes go through without a typed confirmation

# Thresholds of \`flashback status\`, the metrics and the alerts (these are the defaults).
# freshness:
#   backup_warning: 25h
#   backup_critical: 49h
#   verified_warning: 25h
#   verified_critical: 26h

# Which snapshots \`flashback prune\` keeps; without a policy nothing is removed.
# retention:
#   keep_last: 7
#   keep_daily: 14
#   keep_weekly: 8
#   keep_monthly: 12

# Where \`flashback serve\` sends alerts (Slack-compatible JSON).
# alerts:
#   webhooks:
#     - url_env: SLACK_WEBHOOK_URL
`;
}
