/**
 * Pixel preprocessing as one affine map per channel, stored in finetune.json so prediction always
 * repeats what training did:  out[c] = (rgb[c] - mean[c]) * scale,  then channels reordered.
 *
 * - MobileNetV2 (Keras 'tf' mode):    mean 127.5, scale 1/127.5, RGB  → [-1, 1]
 * - VGG16 (Keras 'caffe' mode):       mean [123.68, 116.779, 103.939], scale 1, BGR
 * - `--preprocess dataset-mean`:      mean = the training set's per-channel mean, the backbone's scale and order
 */
export interface Preprocessing {
  /** Per-channel mean in RGB order, subtracted before scaling. */
  mean: [number, number, number];
  scale: number;
  /** Channel order the backbone expects. */
  channelOrder: 'rgb' | 'bgr';
  /** Where the numbers came from, for people reading finetune.json. */
  name: 'mobilenet' | 'caffe' | 'dataset-mean';
}

export const MOBILENET_PREPROCESSING: Preprocessing = {
  name: 'mobilenet',
  mean: [127.5, 127.5, 127.5],
  scale: 1 / 127.5,
  channelOrder: 'rgb',
};

/** ImageNet channel means in RGB order (Keras lists them as BGR: [103.939, 116.779, 123.68]). */
export const CAFFE_PREPROCESSING: Preprocessing = {
  name: 'caffe',
  mean: [123.68, 116.779, 103.939],
  scale: 1,
  channelOrder: 'bgr',
};

/** The same preprocessing with the mean replaced by a dataset's own per-channel mean (RGB). */
export function withDatasetMean(base: Preprocessing, mean: [number, number, number]): Preprocessing {
  return { ...base, name: 'dataset-mean', mean };
}

/**
 * Writes one preprocessed HWC image into `out` at `offset` (float32, the backbone's channel order).
 * Plain loops: this runs once per image per epoch and is far cheaper than the convolutions after it.
 */
export function preprocessInto(
  pixels: Uint8Array,
  spec: Preprocessing,
  out: Float32Array,
  offset = 0,
): void {
  const [m0, m1, m2] = spec.mean;
  const s = spec.scale;
  const n = pixels.length;
  if (spec.channelOrder === 'rgb') {
    for (let i = 0; i < n; i += 3) {
      out[offset + i] = (pixels[i]! - m0) * s;
      out[offset + i + 1] = (pixels[i + 1]! - m1) * s;
      out[offset + i + 2] = (pixels[i + 2]! - m2) * s;
    }
  } else {
    for (let i = 0; i < n; i += 3) {
      out[offset + i] = (pixels[i + 2]! - m2) * s;
      out[offset + i + 1] = (pixels[i + 1]! - m1) * s;
      out[offset + i + 2] = (pixels[i]! - m0) * s;
    }
  }
}

/** Per-channel mean (RGB) of a set of HWC uint8 images: the `dataset-mean` recipe of the VGG paper. */
export function channelMean(images: Iterable<Uint8Array>): [number, number, number] {
  const sum = [0, 0, 0];
  let count = 0;
  for (const px of images) {
    for (let i = 0; i < px.length; i += 3) {
      sum[0]! += px[i]!;
      sum[1]! += px[i + 1]!;
      sum[2]! += px[i + 2]!;
    }
    count += px.length / 3;
  }
  if (count === 0) return [0, 0, 0];
  return [sum[0]! / count, sum[1]! / count, sum[2]! / count];
}
