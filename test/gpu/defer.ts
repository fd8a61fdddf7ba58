// Imported before uvu: makes suites queue instead of auto-running, so that main.ts decides
// when they run (after checking for an adapter) and knows when they are done.
const g = globalThis as { UVU_DEFER?: number; UVU_QUEUE?: unknown[][] };
g.UVU_DEFER = 1;
g.UVU_QUEUE = [[null]];
