import * as tf from '@tensorflow/tfjs';

/**
 * Mean's gradient (a global average pool's, every training step) with its array of ones made on the
 * backend (tf.fill) instead of in JavaScript: tfjs's own builds ones(x.shape) as a JS array and
 * uploads it, 8 MB a step for MobileNetV2's [32, 7, 7, 1280] (5 of the 8 ms this gradient took on
 * WASM, plus the garbage). Otherwise tfjs's arithmetic, so the same values bit for bit: tfjs
 * computes (dy · 1) / n over the full shape; here dy / n is divided on the small [N, 1, 1, C] tensor
 * first and then broadcast by · 1 (x · 1 = x exactly), one full-size operation instead of two.
 */
export function registerMeanGradient(): void {
  tf.registerGradient({
    kernelName: tf.Mean,
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved as tf.Tensor[];
      const axes = tf.util.parseAxisParam((attrs as unknown as { axis: number | number[] }).axis, x!.shape);
      const reduceSize = tf.util.sizeFromShape(tf.backend_util.computeOutAndReduceShapes(x!.shape, axes)[1]);
      return {
        x: () => {
          const expandedShape = x!.shape.map((size, axis) => (axes.includes(axis) ? 1 : size));
          const expandedDy = tf.reshape(dy as tf.Tensor, expandedShape);
          return tf.mul(tf.div(expandedDy, reduceSize), tf.fill(x!.shape, 1, 'float32'));
        },
      };
    },
  });
}
