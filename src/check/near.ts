/**
 * Near-duplicates across splits: the same photo resized, re-encoded, lightly cropped or brightened,
 * once in train and once in valid or test. Three signals must agree:
 *
 * - the crop-tolerant pHash distance (phash.ts): how many of 63 bits differ between the two
 *   images' whole-picture hashes, or between one's and the other's 90 % crops, whichever is least
 *   — cheap, so it runs on every cross-split pair and finds the candidates;
 * - the aligned colour-thumbnail correlation (verify.ts), for the candidates only;
 * - the cosine similarity of the backbone's pooled features (features.ts), a guard.
 *
 * Calibration (bench/check-calibration.ts, MobileNetV2 α=0.35 ImageNet weights): 700 photos (100
 * of each class of hymenoptera_data and flowers_kaggle_128, byte copies left out), each edited four
 * ways — resized to half and saved at JPEG quality 60; 10 % cut off, centred; 10 % cut off the left
 * and top; +20 % brightness — gives 2,800 pairs to catch; every two distinct originals of the same
 * dataset (144,650 pairs) must not be flagged.
 *
 * - pHash: the edits differ by at most 10 bits (resize ≤ 8, crops ≤ 10, brightness ≤ 10; the
 *   whole-picture hash alone moves 20–32 bits on a corner crop), distinct photos by 26 at the
 *   median, but a few come within 10 bits: pictures with the same layout of light and dark.
 * - cosine alone does not separate: edits go down to 0.53–0.64 (brightness on small flower
 *   photos), distinct photos of the same class up to 0.87 (flowers at 160 px).
 * - pHash ≤ 10 and cosine ≥ 0.5–0.85 (the first rule tried) flagged none of the 144,650 pairs but
 *   15 pairs in the whole of flowers_kaggle_128 (4,317 images, 3 M cross-split pairs), 10 of them
 *   different photos (a pale flower centred on a dark background; a white rose and a yellow one).
 * - The thumbnail correlation of those 10: 0.72–0.91; of the edits: 0.94–0.99 at the 1st
 *   percentile (lowest 0.60: brightness that saturates); of the calibration's distinct pairs within
 *   14 bits: at most 0.80.
 * - This rule (pHash ≤ 10, correlation ≥ 0.93, cosine ≥ 0.5): 2,792 of 2,800 edits caught at
 *   128 px (missed: 5 centred crops at correlation 0.91–0.93, 3 saturating brightness edits),
 *   2,797 at 224 px (3 brightness edits missed), and of the distinct pairs only one flagged at
 *   either size, which is a real near-duplicate in flowers_kaggle_128 (rose/1775233884… and
 *   rose/2093263381…: the same photo cropped differently; 2 bits, cosine 0.97, correlation 0.997).
 * - Not caught: crops far from the 90 % squares (5 % off one side only moves up to 14 bits and
 *   misaligns the thumbnails), mirrored copies.
 */
import type { PerceptualHash } from './phash.js';
import { cropTolerantDistance, popcount } from './phash.js';

/** Pairs further apart than this many pHash bits are not looked at further. */
export const MAX_HASH_DISTANCE = 10;
/** Least aligned thumbnail correlation (verify.ts) of a near-duplicate. */
export const MIN_CORRELATION = 0.93;
/** Least feature cosine of a near-duplicate: a guard against pictures alike only in light and colour. */
export const MIN_COSINE = 0.5;

/** The three signals of one pair of images. */
export interface PairEvidence {
  /** Crop-tolerant pHash distance, 0 … 63. */
  distance: number;
  /** Cosine similarity of the pooled features. */
  cosine: number;
  /** Aligned colour-thumbnail correlation. */
  correlation: number;
}

/** True when a pair's evidence makes it a near-duplicate. */
export function isNearDuplicate(e: PairEvidence): boolean {
  return e.distance <= MAX_HASH_DISTANCE && e.correlation >= MIN_CORRELATION && e.cosine >= MIN_COSINE;
}

/** What near-duplicate search needs per image. */
export interface NearItem {
  split: string;
  /** Crop-tolerant hashes (cropHashes). */
  hashes: PerceptualHash[];
}

export interface NearPair extends PairEvidence {
  /** Indices into the items. a < b. */
  a: number;
  b: number;
}

/**
 * Every near-duplicate pair of images in different splits. The hash finds the candidates (a few
 * per thousand pairs); `cosine(a, b)` and `correlation(a, b)` are asked for those only. `skip(a,
 * b)` leaves out pairs already known (byte-identical ones). Pairs come sorted by a, then b.
 */
export function crossSplitNearDuplicates(
  items: readonly NearItem[],
  signals: { cosine: (a: number, b: number) => number; correlation: (a: number, b: number) => number },
  skip: (a: number, b: number) => boolean = () => false,
): NearPair[] {
  // Millions of pairs (4,317 images: 9 M): hashes packed in one typed array, splits as numbers.
  const per = items.reduce((m, it) => Math.max(m, it.hashes.length), 0);
  const words = new Uint32Array(items.length * per * 2);
  items.forEach((it, i) => it.hashes.forEach((h, k) => words.set(h, (i * per + k) * 2)));
  const splitNames = [...new Set(items.map((it) => it.split))];
  const split = Int32Array.from(items, (it) => splitNames.indexOf(it.split));
  const bits = (i: number, ki: number, j: number, kj: number) => {
    const p = (i * per + ki) * 2;
    const q = (j * per + kj) * 2;
    return popcount((words[p]! ^ words[q]!) >>> 0) + popcount((words[p + 1]! ^ words[q + 1]!) >>> 0);
  };
  const pairs: NearPair[] = [];
  for (let a = 0; a < items.length; a++) {
    for (let b = a + 1; b < items.length; b++) {
      if (split[a] === split[b]) continue;
      let distance = bits(a, 0, b, 0);
      for (let k = 1; k < per && distance > MAX_HASH_DISTANCE; k++) distance = Math.min(distance, bits(a, k, b, 0), bits(a, 0, b, k));
      if (distance > MAX_HASH_DISTANCE || skip(a, b)) continue;
      // The least distance, for the report (the loop above stops once a pair is a candidate).
      distance = cropTolerantDistance(items[a]!.hashes, items[b]!.hashes);
      const evidence = { distance, cosine: signals.cosine(a, b), correlation: signals.correlation(a, b) };
      if (isNearDuplicate(evidence)) pairs.push({ a, b, ...evidence });
    }
  }
  return pairs;
}
