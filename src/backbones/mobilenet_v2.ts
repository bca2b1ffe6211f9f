/**
 * MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018),
 * built layer for layer as keras/applications/mobilenet_v2.py builds it, with the same layer names,
 * so the official Keras weight files (and tfjs exports of them) load by name.
 */
import * as tf from '@tensorflow/tfjs';
import { MOBILENET_PREPROCESSING } from './preprocess.js';
import type { BackboneOptions, BackboneSpec, ImagenetWeightsFile } from './types.js';

export interface MobileNetV2Options {
  /** Width multiplier: scales every layer's channel count (Keras `alpha`). Default 1.0. */
  alpha?: number;
  /** Square input size in pixels, ≥ 32. Default 224. */
  imageSize?: number;
  /** Model name; default Keras's `mobilenetv2_{alpha:.2f}_{rows}`. */
  name?: string;
  /**
   * Momentum of the BatchNormalization moving averages. Keras's 0.999 suits long ImageNet runs;
   * training from random weights on a few hundred images needs a faster average (e.g. 0.9).
   */
  batchNormMomentum?: number;
}

/**
 * The bottleneck table of the paper (Table 2): each row is `n` inverted residual blocks with expansion
 * factor `t` and `c` output channels (before alpha); the first block of a row has stride `s`.
 */
export const INVERTED_RESIDUAL_SETTINGS: readonly { t: number; c: number; n: number; s: number }[] = [
  { t: 1, c: 16, n: 1, s: 1 },
  { t: 6, c: 24, n: 2, s: 2 },
  { t: 6, c: 32, n: 3, s: 2 },
  { t: 6, c: 64, n: 4, s: 2 },
  { t: 6, c: 96, n: 3, s: 1 },
  { t: 6, c: 160, n: 3, s: 2 },
  { t: 6, c: 320, n: 1, s: 1 },
];

/** Alphas with published ImageNet weights (Keras checks the same list). */
export const MOBILENET_V2_ALPHAS = [0.35, 0.5, 0.75, 1.0, 1.3, 1.4] as const;
/** Input sizes with published ImageNet weights. */
export const MOBILENET_V2_IMAGE_SIZES = [96, 128, 160, 192, 224] as const;

/** Keras's BatchNormalization settings for MobileNetV2. */
const BN_EPSILON = 1e-3;
const BN_MOMENTUM = 0.999;

function batchNorm(name: string, momentum: number): tf.layers.Layer {
  return tf.layers.batchNormalization({ axis: -1, epsilon: BN_EPSILON, momentum, name });
}
const BASE_WEIGHT_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/';

/**
 * Keras's `_make_divisible`: rounds `v` to the nearest multiple of `divisor` (at least `minValue`),
 * never dropping more than 10% below `v`. Integer steps mirror Python's `int(...) // ...`.
 */
export function makeDivisible(v: number, divisor: number, minValue = divisor): number {
  let rounded = Math.max(minValue, Math.floor(Math.trunc(v + divisor / 2) / divisor) * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

/**
 * Keras's `imagenet_utils.correct_pad` for one spatial axis: the (before, after) zero padding that makes a
 * stride-2 'valid' convolution behave like TensorFlow's 'same' (the extra pixel goes after).
 */
export function correctPad(size: number, kernelSize: number): [number, number] {
  const adjust = 1 - (size % 2);
  const correct = Math.floor(kernelSize / 2);
  return [correct - adjust, correct];
}

/** One inverted residual block, as `_inverted_res_block` derives it from its arguments. */
interface BlockPlan {
  id: number;
  /** Layer-name prefix: `expanded_conv_` for block 0 (no expansion layer), else `block_{id}_`. */
  prefix: string;
  expansion: number;
  stride: number;
  inChannels: number;
  outChannels: number;
  /** Identity shortcut: only when shape is preserved. */
  residual: boolean;
}

function firstBlockFilters(alpha: number): number {
  return makeDivisible(32 * alpha, 8);
}

/** No alpha on the last conv unless alpha > 1 (paper, §5.1; Keras does the same). */
function lastBlockFilters(alpha: number): number {
  return alpha > 1.0 ? makeDivisible(1280 * alpha, 8) : 1280;
}

/** The 17 blocks (ids 0–16) with their channel counts; shared by the builder and the block lists. */
function planBlocks(alpha: number): BlockPlan[] {
  const plans: BlockPlan[] = [];
  let inChannels = firstBlockFilters(alpha);
  for (const { t, c, n, s } of INVERTED_RESIDUAL_SETTINGS) {
    for (let i = 0; i < n; i++) {
      const id = plans.length;
      const stride = i === 0 ? s : 1;
      const outChannels = makeDivisible(Math.trunc(c * alpha), 8);
      plans.push({
        id,
        prefix: id === 0 ? 'expanded_conv_' : `block_${id}_`,
        expansion: t,
        stride,
        inChannels,
        outChannels,
        residual: inChannels === outChannels && stride === 1,
      });
      inChannels = outChannels;
    }
  }
  return plans;
}

/** Layer names of one block, in the order Keras creates them. */
function blockLayerNames(b: BlockPlan): string[] {
  const p = b.prefix;
  return [
    ...(b.id > 0 ? [`${p}expand`, `${p}expand_BN`, `${p}expand_relu`] : []),
    ...(b.stride === 2 ? [`${p}pad`] : []),
    `${p}depthwise`,
    `${p}depthwise_BN`,
    `${p}depthwise_relu`,
    `${p}project`,
    `${p}project_BN`,
    ...(b.residual ? [`${p}add`] : []),
  ];
}

function relu6(name: string): tf.layers.Layer {
  return tf.layers.reLU({ maxValue: 6, name });
}

function invertedResBlock(inputs: tf.SymbolicTensor, b: BlockPlan, momentum: number): tf.SymbolicTensor {
  const p = b.prefix;
  let x = inputs;
  if (b.id > 0) {
    // Expand with a pointwise 1x1 convolution.
    x = tf.layers
      .conv2d({
        filters: b.expansion * b.inChannels,
        kernelSize: 1,
        padding: 'same',
        useBias: false,
        kernelInitializer: 'glorotUniform',
        name: `${p}expand`,
      })
      .apply(x) as tf.SymbolicTensor;
    x = batchNorm(`${p}expand_BN`, momentum).apply(x) as tf.SymbolicTensor;
    x = relu6(`${p}expand_relu`).apply(x) as tf.SymbolicTensor;
  }
  if (b.stride === 2) {
    const [h, w] = [x.shape[1]!, x.shape[2]!];
    x = tf.layers
      .zeroPadding2d({ padding: [correctPad(h, 3), correctPad(w, 3)], name: `${p}pad` })
      .apply(x) as tf.SymbolicTensor;
  }
  x = tf.layers
    .depthwiseConv2d({
      kernelSize: 3,
      strides: b.stride,
      padding: b.stride === 1 ? 'same' : 'valid',
      useBias: false,
      depthwiseInitializer: 'glorotUniform',
      name: `${p}depthwise`,
    })
    .apply(x) as tf.SymbolicTensor;
  x = batchNorm(`${p}depthwise_BN`, momentum).apply(x) as tf.SymbolicTensor;
  x = relu6(`${p}depthwise_relu`).apply(x) as tf.SymbolicTensor;
  // Project with a pointwise 1x1 convolution: the linear bottleneck (no activation).
  x = tf.layers
    .conv2d({
      filters: b.outChannels,
      kernelSize: 1,
      padding: 'same',
      useBias: false,
      kernelInitializer: 'glorotUniform',
      name: `${p}project`,
    })
    .apply(x) as tf.SymbolicTensor;
  x = batchNorm(`${p}project_BN`, momentum).apply(x) as tf.SymbolicTensor;
  if (b.residual) x = tf.layers.add({ name: `${p}add` }).apply([inputs, x]) as tf.SymbolicTensor;
  return x;
}

/**
 * Builds the MobileNetV2 convolutional base (Keras `include_top=False, pooling=None`): input
 * [batch, size, size, 3] preprocessed to [-1, 1], output the `out_relu` feature map
 * [batch, ceil(size/32), ceil(size/32), 1280 (or more for alpha > 1)]. Weights are random.
 */
export function mobileNetV2(options: MobileNetV2Options = {}): tf.LayersModel {
  const alpha = options.alpha ?? 1.0;
  const size = options.imageSize ?? 224;
  const momentum = options.batchNormMomentum ?? BN_MOMENTUM;
  if (!(alpha > 0)) throw new RangeError(`MobileNetV2 alpha must be > 0, got ${alpha}`);
  if (!Number.isInteger(size) || size < 32) throw new RangeError(`MobileNetV2 image size must be an integer ≥ 32, got ${size}`);

  const input = tf.input({ shape: [size, size, 3], name: 'input_1' });
  // Keras ≥ 2.3 uses 'same' here; older versions used ZeroPadding2D(correct_pad) named Conv1_pad + 'valid'.
  // Both pad (0, 1) for even sizes and (1, 1) for odd ones, so the weights and outputs are identical.
  let x = tf.layers
    .conv2d({
      filters: firstBlockFilters(alpha),
      kernelSize: 3,
      strides: 2,
      padding: 'same',
      useBias: false,
      kernelInitializer: 'glorotUniform',
      name: 'Conv1',
    })
    .apply(input) as tf.SymbolicTensor;
  x = batchNorm('bn_Conv1', momentum).apply(x) as tf.SymbolicTensor;
  x = relu6('Conv1_relu').apply(x) as tf.SymbolicTensor;

  for (const block of planBlocks(alpha)) x = invertedResBlock(x, block, momentum);

  x = tf.layers
    .conv2d({
      filters: lastBlockFilters(alpha),
      kernelSize: 1,
      useBias: false,
      kernelInitializer: 'glorotUniform',
      name: 'Conv_1',
    })
    .apply(x) as tf.SymbolicTensor;
  x = batchNorm('Conv_1_bn', momentum).apply(x) as tf.SymbolicTensor;
  x = relu6('out_relu').apply(x) as tf.SymbolicTensor;

  return tf.model({ inputs: input, outputs: x, name: options.name ?? `mobilenetv2_${alpha.toFixed(2)}_${size}` });
}

/** Stem, `expanded_conv`, `block_1` … `block_16`, top: bottom to top, every layer in exactly one block. */
export function mobileNetV2Blocks(alpha = 1.0): string[][] {
  return [
    ['Conv1', 'bn_Conv1', 'Conv1_relu'],
    ...planBlocks(alpha).map(blockLayerNames),
    ['Conv_1', 'Conv_1_bn', 'out_relu'],
  ];
}

/** Python's `str(float(alpha))`, which Keras puts in weight file names: 1 → "1.0", 0.35 → "0.35". */
function pythonFloatString(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

/**
 * The official Keras no-top ImageNet file for (alpha, size), or undefined for an unpublished alpha.
 * Keras publishes files for sizes 96, 128, 160, 192 and 224 only; for any other size it loads the
 * 224 weights (they fit every size: a convolution's weights do not depend on the input size), and
 * so does this, with a note saying so. Keras passes no file hash for MobileNetV2: no checksum.
 */
export function mobileNetV2ImagenetWeights(alpha: number, imageSize: number): ImagenetWeightsFile | undefined {
  if (!(MOBILENET_V2_ALPHAS as readonly number[]).includes(alpha)) return undefined;
  const published = (MOBILENET_V2_IMAGE_SIZES as readonly number[]).includes(imageSize);
  const rows = published ? imageSize : 224;
  const fileName = `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${pythonFloatString(alpha)}_${rows}_no_top.h5`;
  const file: ImagenetWeightsFile = { fileName, url: BASE_WEIGHT_URL + fileName };
  if (!published) {
    file.note = `Keras publishes MobileNetV2 weights for sizes ${MOBILENET_V2_IMAGE_SIZES.join(', ')}; using the 224 ones for ${imageSize}, as Keras does`;
  }
  return file;
}

/**
 * The alpha whose MobileNetV2 has a `block_16_project` kernel with `outChannels` filters, if any:
 * lets a shape mismatch say which `--alpha` the file was saved with. Conv1 cannot tell 0.35 from 0.5.
 */
export function mobileNetV2AlphaForProjectChannels(outChannels: number): number | undefined {
  return MOBILENET_V2_ALPHAS.find((a) => makeDivisible(Math.trunc(320 * a), 8) === outChannels);
}

export const mobileNetV2Spec: BackboneSpec = {
  name: 'mobilenetv2',
  description: 'MobileNetV2 (Sandler et al. 2018): small and fast; alpha scales its width',
  defaultImageSize: 224,
  minImageSize: 32,
  alphas: MOBILENET_V2_ALPHAS,
  defaultAlpha: 1.0,
  preprocessing: MOBILENET_PREPROCESSING,
  build: (o: BackboneOptions) =>
    mobileNetV2({ alpha: o.alpha ?? 1.0, imageSize: o.imageSize, batchNormMomentum: o.batchNormMomentum }),
  blocks: (o: BackboneOptions) => mobileNetV2Blocks(o.alpha ?? 1.0),
  imagenetWeights: (o: BackboneOptions) => mobileNetV2ImagenetWeights(o.alpha ?? 1.0, o.imageSize),
};
