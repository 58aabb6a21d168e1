// The director package's public door: manifests, rendering, planning, rollout, tasks, the Director and its health monitor.
export {
  parseManifest,
  parseWatchTime,
  resolveMaxInFlight,
  groupUpdatePolicy,
  manifestPath,
  ManifestSchema,
  type Manifest,
  type InstanceGroup,
  type UpdatePolicy,
  type Variable,
  type WatchRange,
} from './manifest.js';
export {
  renderTemplate,
  renderInstance,
  resolveJobs,
  bundleHash,
  type JobDefinition,
  type JobCatalog,
  type ProcessTemplate,
  type ReadinessProbe,
  type RenderedJob,
  type RenderedProcess,
  type InstanceBundle,
  type InstanceSpec,
  type RenderContext,
} from './jobs.js';
export { plan, type DesiredInstance, type ActualInstance, type PlannedChange, type PlanAction } from './planner.js';
export { Updater, type InstanceDriver, type EventSink, type TaskEventInput, type GroupPlan, type UpdaterOptions } from './updater.js';
export { TaskStore, type Task, type TaskEvent, type TaskState, type TaskWatch } from './tasks.js';
export { Replicas, type ReplicasOptions, type ReplicaView, type LeaderView } from './replicas.js';
export { Director, type DirectorOptions, type InstanceView, type AvailabilityProbe, type AvailabilityReport } from './director.js';
export type { InstanceHooks, HookInstance } from './driver.js';
export { renderVariables, type VariableSource } from './phases.js';
export {
  TlsAgentClient,
  InstanceAgent,
  type ScriptResult,
  agentTlsIssuer,
  type CertificateSource,
  type AgentClient,
  type AgentAddress,
  type AgentTlsIssuer,
  type TlsMaterial,
  type AgentStateView,
  type AgentVitals,
} from './agents.js';
export {
  HealthMonitor,
  type HealthMonitorOptions,
  type HealthReport,
  type InstanceHealth,
  type ResurrectionPolicy,
  type ResurrectionEvent,
} from './health.js';
export {
  CloudCheck,
  checkChoices,
  FINDING_TYPES,
  RESOLUTIONS,
  RESOLUTIONS_OF,
  type CloudCheckOptions,
  type CloudCheckReport,
  type CloudFinding,
  type CloudAction,
  type CloudChoices,
  type FindingType,
  type Resolution,
} from './cloudcheck.js';
