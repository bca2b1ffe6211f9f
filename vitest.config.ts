import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A temporary persistent cache per test file, never the user's.
    setupFiles: ['test/setup-cache.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // tfjs keeps one global engine per process: isolate test files in forks.
    pool: 'forks',
    poolOptions: { forks: { singleFork: false } },
  },
});
