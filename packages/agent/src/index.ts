// The agent package's door: the protocol types the director renders and reads. The agent is the Go program
// under go/ (built by `make build` into dist/anodyne-agent and by release/build.sh into every release).
export type {
  AgentBundle,
  AgentState,
  AgentTls,
  BundleJob,
  BundleProcess,
  Probe,
  ProcessState,
  ProcessStatus,
  ScriptName,
  Vitals,
} from './protocol.js';
