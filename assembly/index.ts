// The wasm module's exports. Memory is managed from JavaScript: every pointer argument is
// a byte offset that the caller reserved above heapBase().
export { lshKeys } from './lsh';
export { sortByKey } from './sort';
export {
  attentionScratchBytes,
  tileCacheBytes,
  exactAttention,
  fewRowsAttention,
  fewRowsAttentionHalf,
  widenHalf,
  blockAttention,
  sampledAttention,
  mergeRows,
} from './attention';

/** First byte of linear memory free for the caller's buffers. */
export function heapBase(): usize {
  return __heap_base;
}
export {
  accurateColumns,
  accurateWindow,
  accurateBuckets,
  accurateSamples,
  bucketTags,
  remainderSums,
  remainderMerge,
  probeMass,
  probeScores,
} from './accurate';
