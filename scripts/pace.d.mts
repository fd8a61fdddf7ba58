// Types of scripts/pace.mjs (plain JavaScript, so that the runners need no TypeScript).
export declare function measurePace(): number;
export declare function pace(): number;
export declare function scaled(ms: number): number;
export interface Watch {
  reset(): void;
  stop(): void;
}
export declare function patience(ms: number, late: (waited: number) => void): Watch;
export declare function lateAfter(ms: number): { promise: Promise<'late'>; cancel(): void };
