/**
 * Flashback's library API. Everything the CLI does is available here; the
 * CLI is a thin layer over these functions.
 */

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
export { type Finding, runChecks, type Severity } from './doctor/checks.js';
export { type DoctorReport, diagnose } from './doctor/doctor.js';
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
export { type FingerprintRecord, FingerprintStore } from './guard/fingerprints.js';
export {
  confirm,
  type GuardApproval,
  type GuardIO,
  type GuardRequest,
  guard,
} from './guard/guard.js';
export { checkIdentity, type IdentityCheck } from './guard/identity.js';
export { connect, connectParams, describeConnection, type PgClient } from './pg/connect.js';
export {
  availableMajors,
  EmbeddedServer,
  type EmbeddedServerOptions,
  reapOrphanedServers,
} from './pg/embedded.js';
export {
  readIdentity,
  readServerInfo,
  type ServerIdentity,
  type ServerInfo,
} from './pg/server-info.js';
export { REPOSITORY_FORMAT_VERSION, Repository } from './repo/repository.js';
export { createSampleDatabase, type SampleOptions } from './sample/saas.js';
export { LocalStorage } from './storage/local.js';
export { MemoryStorage } from './storage/memory.js';
export { openStorage } from './storage/open.js';
export type { ByteRange, ObjectInfo, Storage } from './storage/storage.js';
export { VERSION } from './version.js';
