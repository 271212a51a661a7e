/**
 * Flashback's library API. Everything the CLI does is available here; the
 * CLI is a thin layer over these functions.
 */
export {
  ConfigError,
  type ConfigProblem,
  ExitCode,
  type ExitCodeValue,
  FlashbackError,
  GuardRefusedError,
  InterruptedError,
  OperationError,
  type RefusalReason,
  RepositoryError,
  TargetUnreachableError,
  UsageError,
} from './errors.js';
export { type ConfigLocation, type LoadedConfig, loadConfig, parseConfig } from './config/load.js';
export type { FlashbackConfig, TargetConfig } from './config/schema.js';
export {
  type ConnectionParams,
  configuredTargets,
  environmentTarget,
  isTargetUrl,
  type ResolvedTarget,
  resolveTarget,
} from './config/targets.js';
export { connect, connectParams, describeConnection, type PgClient } from './pg/connect.js';
export { readIdentity, readServerInfo, type ServerIdentity, type ServerInfo } from './pg/server-info.js';
export {
  availableMajors,
  EmbeddedServer,
  type EmbeddedServerOptions,
  reapOrphanedServers,
} from './pg/embedded.js';
export { FingerprintStore, type FingerprintRecord } from './guard/fingerprints.js';
export { checkIdentity, type IdentityCheck } from './guard/identity.js';
export { confirm, type GuardApproval, type GuardIO, type GuardRequest, guard } from './guard/guard.js';
export { type DoctorReport, diagnose } from './doctor/doctor.js';
export { type Finding, runChecks, type Severity } from './doctor/checks.js';
export { Repository, REPOSITORY_FORMAT_VERSION } from './repo/repository.js';
export type { ByteRange, ObjectInfo, Storage } from './storage/storage.js';
export { LocalStorage } from './storage/local.js';
export { MemoryStorage } from './storage/memory.js';
export { openStorage } from './storage/open.js';
export { createSampleDatabase, type SampleOptions } from './sample/saas.js';
export { VERSION } from './version.js';
