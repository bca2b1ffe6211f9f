/**
 * Near-duplicates across splits: the same photo resized, re-encoded, lightly cropped or brightened,
 * once in train and once in valid or test. Two signals must agree:
 *
 * - the crop-tolerant pHash distance (phash.ts): how many of 63 bits differ between the two
 *   images' whole-picture hashes, or between one's and the other's 90 % crops, whichever is least;
 * - the cosine similarity of the backbone's pooled features (features.ts).
 *
 * A pair is a near-duplicate when its distance is at most a limit that depends on the cosine
 * (NEAR_DUPLICATE_RULE): the hash does the finding, and the features veto pairs whose pictures
 * only share a layout of light and dark.
 *
 * Calibration (bench/check-calibration.ts): CALIBRATION_NOTE below.
 */
import type { PerceptualHash } from './phash.js';
import { cropTolerantDistance } from './phash.js';

/** (at most this many differing bits, at least this cosine): a pair matching any row is a near-duplicate. */
export const NEAR_DUPLICATE_RULE: readonly { maxDistance: number; minCosine: number }[] = [
  { maxDistance: 4, minCosine: 0.5 },
  { maxDistance: 8, minCosine: 0.7 },
  { maxDistance: 10, minCosine: 0.8 },
];

export const CALIBRATION_NOTE = 'see the comment above NEAR_DUPLICATE_RULE';

/** True when a pair with this crop-tolerant pHash distance and feature cosine is a near-duplicate. */
export function isNearDuplicate(distance: number, cosine: number): boolean {
  return NEAR_DUPLICATE_RULE.some((r) => distance <= r.maxDistance && cosine >= r.minCosine);
}

/** What near-duplicate search needs per image. */
export interface NearItem {
  split: string;
  /** Crop-tolerant hashes (cropHashes). */
  hashes: PerceptualHash[];
}

export interface NearPair {
  /** Indices into the items. a < b. */
  a: number;
  b: number;
  distance: number;
  cosine: number;
}

/**
 * Every near-duplicate pair of images in different splits. `cosine(a, b)` gives the features'
 * similarity; it is asked only for pairs the hash finds close. `skip(a, b)` leaves out pairs
 * already known (byte-identical ones). Pairs come sorted by a, then b.
 */
export function crossSplitNearDuplicates(
  items: readonly NearItem[],
  cosine: (a: number, b: number) => number,
  skip: (a: number, b: number) => boolean = () => false,
): NearPair[] {
  const widest = Math.max(...NEAR_DUPLICATE_RULE.map((r) => r.maxDistance));
  const pairs: NearPair[] = [];
  for (let a = 0; a < items.length; a++) {
    for (let b = a + 1; b < items.length; b++) {
      if (items[a]!.split === items[b]!.split) continue;
      const distance = cropTolerantDistance(items[a]!.hashes, items[b]!.hashes);
      if (distance > widest || skip(a, b)) continue;
      const c = cosine(a, b);
      if (isNearDuplicate(distance, c)) pairs.push({ a, b, distance, cosine: c });
    }
  }
  return pairs;
}
