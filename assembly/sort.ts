// Stable counting sort of rows by LSH key: histogram, exclusive prefix sum, scatter.
// Linear in the row count; with r projections there are only 2^r distinct keys.

/**
 * perm[i] = local index of the i-th row in key order, ties in ascending index. Rows
 * 0..count-1 take keys[0..count); rows count..count+pads-1 are zero-row pads with key 0.
 * scratch holds numKeys i32.
 */
export function sortByKey(
  keys: usize, count: i32, pads: i32, numKeys: i32, perm: usize, scratch: usize,
): void {
  memory.fill(scratch, 0, (<usize>numKeys) << 2);
  for (let i = 0; i < count; i++) {
    const slot = scratch + ((<usize>load<i32>(keys + ((<usize>i) << 2))) << 2);
    store<i32>(slot, load<i32>(slot) + 1);
  }
  store<i32>(scratch, load<i32>(scratch) + pads);
  let running = 0;
  for (let key = 0; key < numKeys; key++) {
    const slot = scratch + ((<usize>key) << 2);
    const c = load<i32>(slot);
    store<i32>(slot, running);
    running += c;
  }
  for (let i = 0; i < count + pads; i++) {
    const key = i < count ? load<i32>(keys + ((<usize>i) << 2)) : 0;
    const slot = scratch + ((<usize>key) << 2);
    const at = load<i32>(slot);
    store<i32>(slot, at + 1);
    store<i32>(perm + ((<usize>at) << 2), i);
  }
}
