// The platform's own calls to the registry (deletes), through its socket with a token the platform signs.
import { request } from 'node:http';
import type { RegistryUpstream } from './service.js';
import type { RegistryTokenSigner } from './tokens.js';

export function socketUpstream(socket: string, signer: RegistryTokenSigner): RegistryUpstream {
  return {
    deleteManifest: (repository, digest) =>
      new Promise((resolve, reject) => {
        const { token } = signer.sign('anodyne-platform', [{ type: 'repository', name: repository, actions: ['delete', '*'] }]);
        const req = request(
          {
            socketPath: socket,
            method: 'DELETE',
            path: `/v2/${repository}/manifests/${digest}`,
            headers: { authorization: `Bearer ${token}` },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      }),
  };
}
