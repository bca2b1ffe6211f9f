/** Shape facts about convolutions that the training-kernel overrides of several backends share. */
import * as tf from '@tensorflow/tfjs';

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

/** A convolution for the start-up check of its gradient kernels. */
export interface ConvCheck {
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: number | [number, number];
  pad: 'valid' | 'same' | tf.backend_util.ExplicitPadding;
}

/** The shapes and attributes of a convolution's filter and input gradients, as start-up check cases. */
export function convGradientChecks(
  c: ConvCheck,
  depthwise: boolean,
): { filter: { inputs: Record<string, { shape: number[] }>; attrs: Record<string, unknown> }; input: { inputs: Record<string, { shape: number[] }>; attrs: Record<string, unknown> } } {
  const dy = convOutShape(c, depthwise);
  const common = depthwise ? { strides: c.strides, pad: c.pad, dilations: 1 } : { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' };
  return {
    filter: { inputs: { x: { shape: c.x }, dy: { shape: dy } }, attrs: { ...common, filterShape: c.filter } },
    input: { inputs: { dy: { shape: dy }, filter: { shape: c.filter } }, attrs: { ...common, inputShape: c.x } },
  };
}

function convOutShape(c: ConvCheck, depthwise: boolean): number[] {
  return tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad, undefined, depthwise).outShape;
}
