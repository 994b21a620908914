import { defineConfig } from 'vitest/config'
import projects from './vitest.workspace.ts'

export default defineConfig({
  test: {
    projects,
    coverage: {
      provider: 'v8',
      include: ['packages/*/src/**/*.ts'],
      exclude: ['packages/*/src/**/main.ts'],
      reporter: ['text-summary'],
      thresholds: {
        'packages/core/src/**/*.ts': { lines: 80 },
      },
    },
  },
})
