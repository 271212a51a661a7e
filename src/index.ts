/**
 * Flashback's library API. Everything the CLI does is available here; the
 * CLI is a thin layer over these functions.
 */

export { type BackupOptions, type BackupResult, backup } from './backup/backup.js';
export { backupFromLog } from './backup/from-log.js';
export { type CaptureOptions, type CaptureResult, capture } from './capture/capture.js';
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
  DamagedError,
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
export { rowHistory } from './history/history.js';
export {
  buildOverlay,
  type PointInTime,
  planPointInTime,
  pointInTimeSource,
} from './history/state.js';
export { type Alert, AlertSender, AlertTracker } from './monitor/alerts.js';
export { recordRun } from './monitor/record.js';
export {
  evaluateStatus,
  type Finding as StatusFinding,
  readStatus,
  type StatusReport,
  type TargetStatus,
} from './monitor/status.js';
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
export { type PruneOptions, type PruneResult, planPrune, prune } from './prune/prune.js';
export { ChangeLog, readTransactions } from './repo/changelog.js';
export { REPOSITORY_FORMAT_VERSION, Repository } from './repo/repository.js';
export { type NewRun, type RunKind, type RunRecord, RunStore } from './repo/runs.js';
export { type SnapshotManifest, SnapshotStore } from './repo/snapshots.js';
export { type RestoreOptions, type RestoreResult, restore } from './restore/restore.js';
export { createSampleDatabase, type SampleOptions } from './sample/saas.js';
export { type ServeOptions, serve } from './service/serve.js';
export { LocalStorage } from './storage/local.js';
export { MemoryStorage } from './storage/memory.js';
export { openStorage } from './storage/open.js';
export type { ByteRange, ObjectInfo, Storage } from './storage/storage.js';
export { impactReport } from './undo/impact.js';
export { type UndoOptions, type UndoReport, undo } from './undo/undo.js';
export { type CheckReport, checkRepository } from './verify/check.js';
export { selectSnapshots, verifyAll } from './verify/run.js';
export { embeddedScratch, type Scratch, targetScratch } from './verify/scratch.js';
export { type VerifyReport, verifySnapshot } from './verify/verify.js';
export { VERSION } from './version.js';
