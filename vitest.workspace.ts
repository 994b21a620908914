// The list of test projects. Vitest 4 removed `test.workspace`; the root
// vitest.config.ts imports this list as `test.projects`.
import { defineProject } from 'vitest/config'

const shared = {
  resolve: { conditions: ['kay-source'] },
  ssr: { resolve: { conditions: ['kay-source'] } },
}

export default [
  defineProject({
    ...shared,
    test: {
      name: 'core',
      root: './packages/core',
      include: ['test/**/*.test.ts'],
      testTimeout: 30_000,
      hookTimeout: 60_000,
    },
  }),
  defineProject({
    ...shared,
    test: {
      name: 'workers',
      root: './packages/workers',
      include: ['test/**/*.test.ts'],
      testTimeout: 60_000,
      hookTimeout: 60_000,
    },
  }),
  defineProject({
    ...shared,
    test: {
      name: 'cli',
      root: './packages/cli',
      include: ['test/**/*.test.ts'],
      testTimeout: 60_000,
      hookTimeout: 60_000,
    },
  }),
]
