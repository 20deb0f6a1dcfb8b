/**
 * Jest for the mini-program: component tests run in jsdom with
 * miniprogram-simulate; SDK/live tests opt into the node environment with a
 * docblock. Live tests start their own chatd (tests/support/chatd-server.js).
 */
module.exports = {
  rootDir: __dirname,
  testEnvironment: 'jsdom',
  // ws's browser build throws; load its node build inside jsdom too
  testEnvironmentOptions: { customExportConditions: ['node', 'node-addons'] },
  testMatch: ['<rootDir>/tests/**/*.test.js'],
  setupFilesAfterEnv: ['<rootDir>/tests/support/fail-on-console-error.js'],
  testTimeout: 30000,
  maxWorkers: 1
}
