/** Shape facts about convolutions that the training-kernel overrides of several backends share. */
import type * as tf from '@tensorflow/tfjs';

/** True when the convolution is a plain per-pixel matrix product (1×1, stride 1, no padding). */
export function isPointwise(info: tf.backend_util.Conv2DInfo): boolean {
  return (
    info.filterHeight === 1 &&
    info.filterWidth === 1 &&
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    info.padInfo.top === 0 &&
    info.padInfo.left === 0 &&
    info.outHeight === info.inHeight &&
    info.outWidth === info.inWidth
  );
}
