// Test kit for the clusters suite: the control plane reaching webhooks and metrics-server in pods, and CPU autoscaling.
/**
 * Test kit for the clusters suite: checks that a cluster's control plane reaches what runs
 * inside it (ADR 0009) — admission webhooks, a CRD conversion webhook and the metrics-server
 * aggregated API served by pods — and that a CPU HorizontalPodAutoscaler scales a Deployment
 * up under load made inside the cluster and back down. Not part of the package's door.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec, type ExecResult } from '@anodyne/common';
import { caWithLeaves } from '@anodyne/common/testing';
import { locateRelease } from '@anodyne/release';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const WEBHOOK_IMAGE = 'anodyne.test/webhook:1';
const NS = 'hooks';
const HOOKED = 'hooked';

export interface ReachContext {
  /** Scratch directory of the suite (the image and certificates are made here once). */
  dir: string;
  /** kubectl against the cluster (the admin kubeconfig and its server). */
  kubectl: (...args: string[]) => Promise<ExecResult>;
  /** Diagnostics for the test report. */
  note: (message: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `probe` every `everyMs` until it returns a value, or gives up (after `tries` probes or
 * `withinMs`, whichever comes first: a probe may itself wait on a webhook's timeout) and
 * returns undefined.
 */
async function until<T>(
  probe: () => Promise<T | undefined>,
  tries: number,
  everyMs = 500,
  withinMs = tries * everyMs + 30_000,
): Promise<T | undefined> {
  const deadline = performance.now() + withinMs;
  for (let i = 0; i < tries && performance.now() < deadline; i++) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(everyMs);
  }
  return undefined;
}

const goEnv = { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local' };

/** Builds the webhook server (testdata/webhook, standard library only) and packs it as an OCI archive, once per directory. */
export async function webhookImage(dir: string): Promise<string> {
  const archive = join(dir, 'webhook-image.tar');
  if (existsSync(archive)) return archive;
  const rootfs = join(dir, 'webhook-rootfs');
  mkdirSync(rootfs, { recursive: true });
  await exec(['go', 'build', '-trimpath', '-o', join(rootfs, 'webhook'), '.'], {
    cwd: join(REPO, 'packages/clusters/testdata/webhook'),
    env: goEnv,
    timeoutMs: 300_000,
  });
  await exec(['go', 'build', '-trimpath', '-o', join(dir, 'ocipack'), './ocipack'], {
    cwd: join(REPO, 'release/images'),
    env: goEnv,
    timeoutMs: 300_000,
  });
  await exec([join(dir, 'ocipack'), '-name', WEBHOOK_IMAGE, '-rootfs', rootfs, '-entrypoint', '/webhook', '-out', archive]);
  return archive;
}

/** A CA and a serving certificate for the webhook's Service name, made with openssl, once per directory. */
export async function webhookCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const d = join(dir, 'webhook-tls');
  if (!existsSync(join(d, 'webhook.pem'))) {
    mkdirSync(d, { recursive: true });
    await caWithLeaves(d, [{ name: 'webhook', sans: [`DNS:webhook.${NS}.svc`, `DNS:webhook.${NS}.svc.cluster.local`] }]);
  }
  const read = (f: string) => readFileSync(join(d, f), 'utf8');
  return { ca: read('ca.pem'), cert: read('webhook.pem'), key: read('webhook.key') };
}

/** Imports the webhook image into each worker's containerd (nothing can be pulled here). */
export async function importImage(
  archive: string,
  workers: string[],
  execInVm: (vm: string, argv: string[], o: { input: Buffer; timeoutMs: number }) => Promise<unknown>,
): Promise<void> {
  const tar = readFileSync(archive);
  for (const vm of workers) await execInVm(vm, ['ctr', '-n', 'k8s.io', 'images', 'import', '-'], { input: tar, timeoutMs: 60_000 });
}

async function apply(ctx: ReachContext, dir: string, name: string, objects: unknown[]): Promise<void> {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
  await ctx.kubectl('apply', '-f', file);
}

/**
 * Deploys the webhook server (2 replicas) and registers a validating and a mutating webhook
 * for ConfigMaps in the `hooked` namespace, and a CRD whose v1 and v2 are converted by it;
 * notes how long after registration the first denial came.
 */
export async function installWebhooks(ctx: ReachContext): Promise<void> {
  const tls = await webhookCertificates(ctx.dir);
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const caBundle = b64(tls.ca);
  const service = (path: string) => ({ service: { namespace: NS, name: 'webhook', path, port: 443 }, caBundle });
  await apply(ctx, ctx.dir, 'webhook-server', [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: HOOKED, labels: { 'anodyne.test/webhooks': 'on' } } },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'webhook-tls', namespace: NS },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64(tls.cert), 'tls.key': b64(tls.key) },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'webhook', namespace: NS },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'webhook' } },
        template: {
          metadata: { labels: { app: 'webhook' } },
          spec: {
            affinity: {
              podAntiAffinity: {
                preferredDuringSchedulingIgnoredDuringExecution: [
                  {
                    weight: 100,
                    podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { app: 'webhook' } } },
                  },
                ],
              },
            },
            containers: [
              {
                name: 'webhook',
                image: WEBHOOK_IMAGE,
                imagePullPolicy: 'Never',
                args: ['-addr=:8443', '-cert=/tls/tls.crt', '-key=/tls/tls.key'],
                ports: [{ containerPort: 8443 }],
                readinessProbe: { httpGet: { path: '/healthz', port: 8443, scheme: 'HTTPS' }, periodSeconds: 1 },
                volumeMounts: [{ name: 'tls', mountPath: '/tls', readOnly: true }],
              },
            ],
            volumes: [{ name: 'tls', secret: { secretName: 'webhook-tls' } }],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'webhook', namespace: NS },
      spec: { selector: { app: 'webhook' }, ports: [{ port: 443, targetPort: 8443 }] },
    },
  ]);
  const rolled = await ctx.kubectl('-n', NS, 'rollout', 'status', 'deployment/webhook', '--timeout=90s').then(
    () => true,
    () => false,
  );
  if (!rolled) assert.fail(`the webhook server is not ready:\n${(await ctx.kubectl('-n', NS, 'describe', 'pods')).stdout.slice(-3000)}`);
  const rules = [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'], resources: ['configmaps'] }];
  const scope = {
    namespaceSelector: { matchLabels: { 'anodyne.test/webhooks': 'on' } },
    sideEffects: 'None',
    admissionReviewVersions: ['v1'],
    failurePolicy: 'Fail',
    timeoutSeconds: 5,
    rules,
  };
  const registered = performance.now();
  await apply(ctx, ctx.dir, 'webhook-configs', [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingWebhookConfiguration',
      metadata: { name: 'anodyne-test' },
      webhooks: [{ name: 'validate.anodyne.test', clientConfig: service('/validate'), ...scope }],
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'anodyne-test' },
      webhooks: [{ name: 'mutate.anodyne.test', clientConfig: service('/mutate'), reinvocationPolicy: 'Never', ...scope }],
    },
    {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: 'widgets.test.anodyne.io' },
      spec: {
        group: 'test.anodyne.io',
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: {
              openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } } },
            },
          },
          {
            name: 'v2',
            served: true,
            storage: false,
            schema: {
              openAPIV3Schema: {
                type: 'object',
                properties: {
                  spec: { type: 'object', properties: { dimensions: { type: 'object', properties: { width: { type: 'integer' } } } } },
                },
              },
            },
          },
        ],
        conversion: { strategy: 'Webhook', webhook: { conversionReviewVersions: ['v1'], clientConfig: service('/convert') } },
      },
    },
  ]);
  // The first denial: the API server has loaded the configuration and reached a webhook pod.
  const denied = await until(() => refusal(ctx.kubectl, `first-${Date.now()}`), 120, 500, 90_000);
  assert.match(
    denied ?? '',
    /anodyne test webhook: the data key "forbidden" is not allowed/,
    "a ConfigMap with a forbidden key is refused with the webhook's message",
  );
  ctx.note(`admission webhooks in effect ${(performance.now() - registered).toFixed(0)} ms after registration`);
  await ctx.kubectl('wait', '--for=condition=Established', 'crd/widgets.test.anodyne.io', '--timeout=30s');
}

/** Tries to create a ConfigMap with the forbidden key; resolves with the refusal, undefined if it was admitted. */
async function refusal(kubectl: ReachContext['kubectl'], name: string): Promise<string | undefined> {
  const r = await kubectl('-n', HOOKED, 'create', 'configmap', name, '--from-literal=forbidden=1').then(
    () => 'admitted',
    (e: { stderrTail?: string; message: string }) => e.stderrTail ?? e.message,
  );
  if (r === 'admitted') {
    await kubectl('-n', HOOKED, 'delete', 'configmap', name).catch(() => undefined);
    return undefined;
  }
  return /anodyne test webhook/.test(r) ? r : undefined;
}

/**
 * With the webhooks installed: a forbidden ConfigMap is refused with the webhook's message, an
 * allowed one carries the mutating webhook's label, and a Widget written as v1 reads back as v2
 * (and one written as v2 as v1). `kubectl` may point at one API server in particular.
 */
export async function checkWebhooks(ctx: ReachContext, tag: string): Promise<void> {
  const denied = await until(() => refusal(ctx.kubectl, `deny-${tag}`), 60);
  assert.match(
    denied ?? 'admitted',
    /anodyne test webhook: the data key "forbidden" is not allowed/,
    `${tag}: the validating webhook refuses`,
  );
  const label = await until(async () => {
    await ctx.kubectl('-n', HOOKED, 'create', 'configmap', `allowed-${tag}`, '--from-literal=k=v');
    return (
      await ctx.kubectl('-n', HOOKED, 'get', 'configmap', `allowed-${tag}`, '-o', 'jsonpath={.metadata.labels.anodyne\\.test/mutated}')
    ).stdout;
  }, 60);
  assert.equal(label, 'yes', `${tag}: the mutating webhook's patch is on the stored object`);
  const v1 = { apiVersion: 'test.anodyne.io/v1', kind: 'Widget', metadata: { name: `w1-${tag}`, namespace: HOOKED }, spec: { size: 3 } };
  const v2 = {
    apiVersion: 'test.anodyne.io/v2',
    kind: 'Widget',
    metadata: { name: `w2-${tag}`, namespace: HOOKED },
    spec: { dimensions: { width: 7 } },
  };
  await apply(ctx, ctx.dir, `widgets-${tag}`, [v1, v2]);
  const asV2 = await until(
    async () =>
      JSON.parse((await ctx.kubectl('-n', HOOKED, 'get', `widgets.v2.test.anodyne.io/w1-${tag}`, '-o', 'json')).stdout) as {
        apiVersion: string;
        spec: unknown;
      },
    60,
  );
  assert.deepEqual(
    [asV2?.apiVersion, asV2?.spec],
    ['test.anodyne.io/v2', { dimensions: { width: 3 } }],
    `${tag}: a Widget written as v1 reads as v2 through the conversion webhook`,
  );
  const asV1 = JSON.parse((await ctx.kubectl('-n', HOOKED, 'get', `widgets.v1.test.anodyne.io/w2-${tag}`, '-o', 'json')).stdout) as {
    apiVersion: string;
    spec: unknown;
  };
  assert.deepEqual(
    [asV1.apiVersion, asV1.spec],
    ['test.anodyne.io/v1', { size: 7 }],
    `${tag}: a Widget written as v2 is stored and read as v1`,
  );
}

/** `kubectl top nodes` and `kubectl top pods -A` show figures from metrics-server (the aggregated metrics API). */
export async function checkTop(ctx: ReachContext, workers: string[]): Promise<void> {
  const started = performance.now();
  // Polled: a single `kubectl wait` would be cut short by the caller's own request and exec timeouts.
  const available = await until(async () => {
    const out = (await ctx.kubectl('-n', 'kube-system', 'get', 'deployment/metrics-server', '-o', 'jsonpath={.status.availableReplicas}'))
      .stdout;
    return Number(out.trim()) > 0 ? true : undefined;
  }, 240);
  if (!available)
    assert.fail(
      `metrics-server is not available:\n${(await ctx.kubectl('-n', 'kube-system', 'describe', 'pods', '-l', 'k8s-app=metrics-server')).stdout.slice(-3000)}`,
    );
  const figures = /^\S+\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%/;
  const nodes = await until(async () => {
    const out = (await ctx.kubectl('top', 'nodes', '--no-headers')).stdout;
    return workers.every((w) => out.split('\n').some((l) => l.startsWith(`${w} `) && figures.test(l))) ? out : undefined;
  }, 180);
  assert.ok(nodes, `kubectl top nodes shows CPU and memory of ${workers.join(', ')}`);
  const pods = await until(async () => {
    const out = (await ctx.kubectl('top', 'pods', '-A', '--no-headers')).stdout;
    return /^kube-system\s+coredns-\S+\s+\d+m\s+\d+Mi/m.test(out) ? out : undefined;
  }, 120);
  assert.ok(pods, 'kubectl top pods -A shows the figures of running pods');
  ctx.note(`kubectl top answered ${(performance.now() - started).toFixed(0)} ms after the check began:\n${nodes}`);
}

/**
 * A Deployment of busybox httpd whose CGI script burns CPU, an HPA on 30 % CPU (1 to 3 replicas,
 * no stabilisation window), and a load pod calling it in a loop: the HPA scales to at least 2;
 * with the load pod gone it scales back to 1.
 */
export async function checkHpa(ctx: ReachContext, name: string): Promise<void> {
  const image = locateRelease().image('busybox').ref;
  const script = '#!/bin/sh\necho "Content-Type: text/plain"\necho\ni=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo burned\n';
  const setup = `mkdir -p /tmp/www/cgi-bin && printf '%s' "$BURN" > /tmp/www/cgi-bin/burn && chmod 755 /tmp/www/cgi-bin/burn && exec httpd -f -p 8080 -h /tmp/www`;
  await apply(ctx, ctx.dir, `hpa-${name}`, [
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name } },
          spec: {
            containers: [
              {
                name: 'burn',
                image,
                imagePullPolicy: 'Never',
                command: ['sh', '-c', setup],
                env: [{ name: 'BURN', value: script }],
                ports: [{ containerPort: 8080 }],
                resources: { requests: { cpu: '50m' }, limits: { cpu: '200m' } },
              },
            ],
          },
        },
      },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }] } },
    {
      apiVersion: 'autoscaling/v2',
      kind: 'HorizontalPodAutoscaler',
      metadata: { name },
      spec: {
        scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name },
        minReplicas: 1,
        maxReplicas: 3,
        metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 30 } } }],
        behavior: {
          scaleUp: { stabilizationWindowSeconds: 0 },
          scaleDown: { stabilizationWindowSeconds: 0, policies: [{ type: 'Percent', value: 100, periodSeconds: 15 }] },
        },
      },
    },
  ]);
  await ctx.kubectl('rollout', 'status', `deployment/${name}`, '--timeout=60s');
  const replicas = async () => Number((await ctx.kubectl('get', 'deployment', name, '-o', 'jsonpath={.spec.replicas}')).stdout);
  const hpaState = async () => (await ctx.kubectl('get', 'hpa', name, '--no-headers')).stdout.trim();
  // The HPA reads the metric before load starts (cpu: N%/30%), so the metrics path works end to end.
  const measured = await until(async () => (/\d+%\/30%/.test(await hpaState()) ? hpaState() : undefined), 120, 1000);
  assert.ok(measured, `the HPA reads CPU utilisation from the metrics API: ${await hpaState()}`);
  const loadStarted = performance.now();
  await ctx.kubectl(
    'run',
    `${name}-load`,
    `--image=${image}`,
    '--image-pull-policy=Never',
    '--restart=Never',
    '--',
    'sh',
    '-c',
    `while true; do wget -q -O /dev/null http://${name}/cgi-bin/burn & wget -q -O /dev/null http://${name}/cgi-bin/burn; wait; done`,
  );
  const up = await until(async () => ((await replicas()) >= 2 ? replicas() : undefined), 240, 1000);
  ctx.note(`HPA under load: ${await hpaState()} (${((performance.now() - loadStarted) / 1000).toFixed(0)} s after the load began)`);
  assert.ok(up !== undefined && up >= 2, `the HPA scales ${name} to at least 2 replicas under load: ${await hpaState()}`);
  await ctx.kubectl('delete', 'pod', `${name}-load`, '--grace-period=0', '--force', '--wait=false');
  const loadStopped = performance.now();
  const down = await until(async () => ((await replicas()) === 1 ? 1 : undefined), 240, 1000);
  ctx.note(`HPA after the load: ${await hpaState()} (${((performance.now() - loadStopped) / 1000).toFixed(0)} s after it stopped)`);
  assert.equal(down, 1, `the HPA scales ${name} back to 1 replica without load: ${await hpaState()}`);
}
