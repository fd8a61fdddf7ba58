// The accurate mode's heavy columns, chosen from the probe's masses (HeavyTask in ops.ts):
// the `count` positions of mass[from..) with the largest mass, ties to the lower position,
// in ascending order. The WebAssembly backend runs this; shaders/heavy.wgsl is the same
// selection on the GPU, so that the masses never leave the device.

/**
 * The chosen positions, ascending. A threshold (the count-th largest mass, kept in a min-heap
 * of `count` values while the masses are read once), then the positions above it and, of
 * those at it, the lowest first.
 */
export function heaviest(mass: Float32Array, from: number, count: number): number[] {
  const n = mass.length - from;
  if (count <= 0 || n <= 0) return [];
  if (count >= n) return Array.from({ length: n }, (_, j) => from + j);
  // Masses are non-negative; anything else (NaN from inputs overwritten during a call)
  // counts as 0, as on the GPU, so that exactly `count` positions are always chosen.
  const at = (j: number) => (mass[j] > 0 ? mass[j] : 0);
  const heap = new Float32Array(count);
  let size = 0;
  for (let j = from; j < mass.length; j++) {
    const x = at(j);
    if (size < count) {
      // Sift up.
      let i = size++;
      while (i > 0 && heap[(i - 1) >> 1] > x) {
        heap[i] = heap[(i - 1) >> 1];
        i = (i - 1) >> 1;
      }
      heap[i] = x;
    } else if (x > heap[0]) {
      // Replace the smallest, sift down.
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && heap[child + 1] < heap[child]) child++;
        if (heap[child] >= x) break;
        heap[i] = heap[child];
        i = child;
      }
      heap[i] = x;
    }
  }
  const threshold = heap[0];
  let ties = count;
  for (let j = from; j < mass.length; j++) if (at(j) > threshold) ties--;
  const chosen: number[] = [];
  for (let j = from; j < mass.length; j++) {
    if (at(j) > threshold || (at(j) === threshold && ties-- > 0)) chosen.push(j);
  }
  return chosen;
}
