// Imported before uvu (by test/suite.ts): makes suites queue instead of running on their
// own, so that the runners (test/run.ts, test/gpu/main.ts) decide when they run and know
// when they are done. Group 0 has no file name; test/run.ts adds one group per file.
const g = globalThis as { UVU_DEFER?: number; UVU_QUEUE?: unknown[][] };
g.UVU_DEFER = 1;
g.UVU_QUEUE = [[null]];
