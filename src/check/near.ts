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
 * Calibration (bench/check-calibration.ts, MobileNetV2 α=0.35 ImageNet weights): 700 photos (100
 * of each class of hymenoptera_data and flowers_kaggle_128, byte copies left out), each edited four
 * ways — resized to half and saved at JPEG quality 60; 10 % cut off, centred; 10 % cut off the left
 * and top; +20 % brightness — gives 2,800 pairs to catch; every two distinct originals of the same
 * dataset (144,650 pairs) must not be flagged.
 *
 * - pHash alone: the edits differ by at most 10 bits (resize ≤ 8, crops ≤ 10, brightness ≤ 10;
 *   the whole-picture hash alone moves 20–32 bits on a corner crop), distinct photos by 26 bits
 *   at the median, but 4–5 distinct pairs come within 10 bits (similar compositions, e.g. a
 *   sunflower field against a single sunflower: 8–10 bits).
 * - cosine alone does not separate: edits go down to 0.53–0.64 (brightness on small flower
 *   photos), distinct photos of the same class up to 0.87 (flowers at 160 px).
 * - Together (this rule): at 128 px 2,797 of 2,800 edits caught (the 3 missed: +20 % brightness,
 *   10 bits, cosine 0.53–0.73), at 224 px 2,798 (2 brightness edits missed), and no distinct
 *   pair flagged at either size, except one that is a real near-duplicate in flowers_kaggle_128
 *   (rose/1775233884… and rose/2093263381…: the same photo cropped differently; 2 bits, cosine
 *   0.97). Distinct pairs within 6 bits: none; within 8 bits: one (cosine 0.69).
 */
import type { PerceptualHash } from './phash.js';
import { cropTolerantDistance } from './phash.js';

/** (at most this many differing bits, at least this cosine): a pair matching any row is a near-duplicate. */
export const NEAR_DUPLICATE_RULE: readonly { maxDistance: number; minCosine: number }[] = [
  { maxDistance: 6, minCosine: 0.5 },
  { maxDistance: 8, minCosine: 0.7 },
  { maxDistance: 10, minCosine: 0.85 },
];

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
