#!/usr/bin/env node
// The agent's entry point inside a VM. Configuration comes from the environment the
// provider passes at VM creation: identity, listen address, director URL and TLS material.
import { createLogger, systemClock } from '@anodyne/common';
import { Agent } from './agent.js';

function need(name: string): string {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`anodyne-agent: ${name} is not set\n`);
    process.exit(2);
  }
  return v;
}

const logger = createLogger({ name: 'agent' });
const [host, port] = need('ANODYNE_AGENT_LISTEN').split(':');
const agent = new Agent({
  agentId: need('ANODYNE_AGENT_ID'),
  root: process.env['ANODYNE_AGENT_ROOT'] ?? '/var/lib/anodyne/agent',
  listen: { host: host ?? '0.0.0.0', port: Number(port ?? 6868) },
  tls: { cert: need('ANODYNE_AGENT_CERT'), key: need('ANODYNE_AGENT_KEY'), ca: need('ANODYNE_AGENT_CA') },
  logger,
  clock: systemClock,
});
const { port: bound } = await agent.listen();
logger.info({ port: bound }, 'agent listening');
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    void agent.close().finally(() => process.exit(0));
  });
}
