// Lint rules that keep the package boundaries and async code honest.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

// Another package is reached only through its door (`@anodyne/x` or a declared subpath export).
const DOORS = [
  {
    group: ['@anodyne/*/src', '@anodyne/*/src/*', '@anodyne/*/dist/*'],
    message: "Import another package through its door '@anodyne/<name>', never its src/ or dist/.",
  },
  {
    group: ['../../*/src/*', '../../../*/src/*', '../../../../*/src/*'],
    message: "Import another package through its door '@anodyne/<name>', never by relative path.",
  },
];
// Only the composition root (packages/platform) knows every package; nothing imports it but tests and benchmarks.
const ROOT_ONLY = {
  group: ['@anodyne/platform', '@anodyne/platform/*'],
  message: 'Only tests and benchmarks import the composition root (@anodyne/platform).',
};
// The CLI (and later the console) talk to the platform over HTTPS only.
const EDGE_ONLY = {
  group: ['@anodyne/*', '!@anodyne/client'],
  message: 'The CLI and the console reach the platform over HTTPS: they import no Anodyne package but @anodyne/client.',
};
// Every source file starts with a one-line `//` comment saying what it is for (after the shebang, if any).
const anodyne = {
  rules: {
    'file-header': {
      meta: {
        type: 'suggestion',
        docs: { description: 'Require a leading one-line // comment that says what the file is for.' },
        schema: [],
        messages: { missing: 'every source file starts with a one-line // comment saying what it is for' },
      },
      create(context) {
        return {
          Program() {
            const { sourceCode } = context;
            const line = sourceCode.lines[0]?.startsWith('#!') ? 2 : 1;
            const header = sourceCode.getAllComments().find((c) => c.loc.start.line === line);
            if (header?.type === 'Line' && header.loc.start.column === 0 && header.value.trim() !== '') return;
            context.report({
              loc: { start: { line, column: 0 }, end: { line, column: (sourceCode.lines[line - 1] ?? '').length } },
              messageId: 'missing',
            });
          },
        };
      },
    },
  },
};

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'release/**', '**/*.d.ts', 'eslint.config.mjs'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['packages/*/src/**/*.{ts,tsx}', 'bench/**/*.ts', 'test/**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX, anodyne },
    settings: {
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: ['packages/*/tsconfig.json'], noWarnOnMultipleProjects: true })],
      'import-x/extensions': ['.ts', '.tsx', '.js'],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // Another package is reached only through its door (`@anodyne/x` or a declared subpath export).
      'no-restricted-imports': ['error', { patterns: DOORS }],
      'anodyne/file-header': 'error',
    },
  },
  {
    files: ['packages/*/src/**/*.{ts,tsx}'],
    ignores: ['packages/platform/**', '**/*.test.ts', '**/testing/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [...DOORS, ROOT_ONLY] }] },
  },
  {
    // The edges reach the platform over HTTPS only: the CLI and the web console.
    files: ['packages/cli/src/**/*.ts', 'packages/console/src/**/*.{ts,tsx}'],
    ignores: ['**/*.test.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [...DOORS, EDGE_ONLY] }] },
  },
  { files: ['**/*.mjs', '**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    files: ['**/*.test.ts', '**/testing/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
);
