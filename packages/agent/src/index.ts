// The agent package's door: the Agent with its vitals, and the Supervisor with the bundle types the director renders.
export { Agent, vitals, type AgentOptions, type AgentState, type AgentTls, type Vitals } from './agent.js';
export {
  Supervisor,
  type AgentBundle,
  type BundleJob,
  type BundleProcess,
  type Probe,
  type ProcessState,
  type ProcessStatus,
  type ScriptName,
  type SupervisorOptions,
} from './supervisor.js';
