// The web console's files under /console: the page, its script and styles, read once at start; nothing from elsewhere may load.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { NotFoundError } from '@anodyne/common';
import { schemas as S } from '@anodyne/client';
import { doc, type Api } from './kit.js';

export interface ConsoleRoutesOptions {
  /** The console's built files (index.html, app.js, app.css); absent or unbuilt: /console says so. */
  dir?: string;
}

const FILES = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' } as const;
const HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // The page is small and changes with each build: always revalidated.
  'cache-control': 'no-cache',
} as const;

function load(dir: string | undefined): Map<string, string> | undefined {
  if (!dir) return undefined;
  try {
    return new Map(['index.html', ...Object.keys(FILES)].map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
  } catch {
    return undefined;
  }
}

export function consoleRoutes(app: Api, o: ConsoleRoutesOptions): void {
  const files = load(o.dir);
  const missing = () =>
    new NotFoundError(
      'ANODYNE_E_NOT_FOUND',
      'the web console is not built on this platform (make build builds it into packages/console/dist)',
    );
  const page = { description: 'the console', content: { 'text/html': { schema: Type.String() } } };
  app.get(
    '/console',
    { schema: { ...doc('The web console (redirects to /console/)', ['console'], false), response: { 308: Type.Null() } } },
    async (_req, reply) => reply.status(308).header('location', '/console/').send(null),
  );
  app.get(
    '/console/',
    {
      schema: {
        ...doc('The web console: a single-page app over this API', ['console'], false),
        response: { 200: page, '4xx': S.ErrorBody, '5xx': S.ErrorBody },
      },
    },
    async (_req, reply) => {
      if (!files) throw missing();
      return reply
        .headers(HEADERS)
        .type('text/html; charset=utf-8')
        .send(files.get('index.html') ?? '');
    },
  );
  app.get(
    '/console/:file',
    {
      schema: {
        ...doc("The web console's script and styles", ['console'], false),
        params: Type.Object({ file: Type.Union(Object.keys(FILES).map((f) => Type.Literal(f))) }),
        response: {
          200: {
            description: 'the file',
            content: { 'text/javascript': { schema: Type.String() }, 'text/css': { schema: Type.String() } },
          },
          '4xx': S.ErrorBody,
          '5xx': S.ErrorBody,
        },
      },
    },
    async (req, reply) => {
      if (!files) throw missing();
      const file = req.params.file as keyof typeof FILES;
      return reply
        .headers(HEADERS)
        .type(FILES[file])
        .send(files.get(file) ?? '');
    },
  );
}
