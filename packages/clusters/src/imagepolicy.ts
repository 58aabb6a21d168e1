// Which images a cluster may run: optionally only the platform registry's (and the release's own), as an admission policy in the cluster.
import { AdmissionregistrationV1Api } from '@kubernetes/client-node';
import { PreconditionError } from '@anodyne/common';
import { kubeCall, kubeConfigOf, type ClusterEndpoint } from './kube.js';
import type { RegistryTrust } from './cluster.js';

export const IMAGE_POLICY = 'anodyne-registry-images-only';
/** The release's preloaded images (pause, CoreDNS, metrics-server, busybox) are always allowed. */
export const RELEASE_IMAGE_PREFIX = 'anodyne.local/';

export interface ImagePolicyView {
  /** True: workloads may run only images of the platform registry (and the release's own). */
  registry_only: boolean;
  /** The registry's address (null when the platform runs none). */
  registry: string | null;
}

/** The pod spec of every kind that carries one, as CEL sees the object. */
const POD_SPEC =
  "object.kind == 'Pod' ? object.spec : object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec";

/**
 * A ValidatingAdmissionPolicy (GA since Kubernetes 1.30; no webhook to run) refusing pods and the
 * workloads that make them when an image is from elsewhere, naming the image.
 */
export function imagePolicyObjects(registry: string): { policy: object; binding: object } {
  const allowed = [`${registry}/`, RELEASE_IMAGE_PREFIX];
  const images = [
    'variables.spec.containers.map(c, c.image)',
    '(has(variables.spec.initContainers) ? variables.spec.initContainers.map(c, c.image) : [])',
    '(has(variables.spec.ephemeralContainers) ? variables.spec.ephemeralContainers.map(c, c.image) : [])',
  ].join(' + ');
  return {
    policy: {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: IMAGE_POLICY, labels: { 'app.kubernetes.io/managed-by': 'anodyne' } },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: {
          resourceRules: [
            { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'], resources: ['pods'] },
            {
              apiGroups: ['apps'],
              apiVersions: ['v1'],
              operations: ['CREATE', 'UPDATE'],
              resources: ['deployments', 'replicasets', 'statefulsets', 'daemonsets'],
            },
            { apiGroups: ['batch'], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'], resources: ['jobs', 'cronjobs'] },
          ],
        },
        variables: [
          { name: 'spec', expression: POD_SPEC },
          { name: 'outside', expression: `(${images}).filter(i, ${allowed.map((p) => `!i.startsWith('${p}')`).join(' && ')})` },
        ],
        validations: [
          {
            expression: 'size(variables.outside) == 0',
            messageExpression: `'image ' + variables.outside[0] + ' is not from the platform registry ${registry}: this cluster runs only its images'`,
            reason: 'Forbidden',
          },
        ],
      },
    },
    binding: {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name: IMAGE_POLICY, labels: { 'app.kubernetes.io/managed-by': 'anodyne' } },
      spec: { policyName: IMAGE_POLICY, validationActions: ['Deny'] },
    },
  };
}

export interface ImagePolicyOptions {
  registry?: RegistryTrust;
  endpoint: (cluster: string) => Promise<ClusterEndpoint>;
  admission?: (e: ClusterEndpoint) => AdmissionregistrationV1Api;
}

/** Reads and sets a cluster's image policy, in the cluster itself (its policy object is the state). */
export class ClusterImagePolicy {
  constructor(private readonly o: ImagePolicyOptions) {}

  private async api(cluster: string): Promise<AdmissionregistrationV1Api> {
    const e = await this.o.endpoint(cluster);
    return this.o.admission ? this.o.admission(e) : kubeConfigOf(e).makeApiClient(AdmissionregistrationV1Api);
  }

  async get(cluster: string): Promise<ImagePolicyView> {
    const api = await this.api(cluster);
    const found = await kubeCall('reading the image policy', () => api.readValidatingAdmissionPolicyBinding({ name: IMAGE_POLICY }), [404]);
    return { registry_only: found !== undefined, registry: this.o.registry?.address ?? null };
  }

  async set(cluster: string, registryOnly: boolean): Promise<ImagePolicyView> {
    const api = await this.api(cluster);
    if (registryOnly) {
      if (!this.o.registry)
        throw new PreconditionError('ANODYNE_E_CONFIG_INVALID', 'this platform runs no image registry (registry.enabled is false)');
      const { policy, binding } = imagePolicyObjects(this.o.registry.address);
      // Replaced whole: a changed registry address is taken at once.
      await kubeCall('removing the old image policy', () => api.deleteValidatingAdmissionPolicyBinding({ name: IMAGE_POLICY }), [404]);
      await kubeCall('removing the old image policy', () => api.deleteValidatingAdmissionPolicy({ name: IMAGE_POLICY }), [404]);
      await kubeCall('creating the image policy', () => api.createValidatingAdmissionPolicy({ body: policy }));
      await kubeCall('binding the image policy', () => api.createValidatingAdmissionPolicyBinding({ body: binding }));
    } else {
      await kubeCall('removing the image policy', () => api.deleteValidatingAdmissionPolicyBinding({ name: IMAGE_POLICY }), [404]);
      await kubeCall('removing the image policy', () => api.deleteValidatingAdmissionPolicy({ name: IMAGE_POLICY }), [404]);
    }
    return this.get(cluster);
  }
}
