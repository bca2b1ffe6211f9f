import type * as tf from '@tensorflow/tfjs';
import type { Preprocessing } from './preprocess.js';

/** Options every backbone builder takes. */
export interface BackboneOptions {
  /** Square input size in pixels. */
  imageSize: number;
  /** Width multiplier (MobileNetV2 only; ignored by others). */
  alpha?: number;
  /** BatchNormalization moving-average momentum, for backbones that have BN (default: the published one). */
  batchNormMomentum?: number;
}

/** Where the official ImageNet no-top weights of a configuration live. */
export interface ImagenetWeightsFile {
  /** The file name Keras uses, so files from ~/.keras/models are found. */
  fileName: string;
  url: string;
  /** Hex digest to check the download against, when one is published. */
  checksum?: { algorithm: 'md5' | 'sha256'; hex: string };
  /** Something the user should know, e.g. that another size's file stands in for theirs. */
  note?: string;
}

/**
 * One entry of the backbone registry (timm-style): everything the rest of finetune needs to know
 * about an architecture. Adding a backbone means adding one file that exports one of these.
 */
export interface BackboneSpec {
  name: string;
  /** One line for --help and README. */
  description: string;
  defaultImageSize: number;
  /** Allowed --image-size values; undefined means any size ≥ minImageSize. */
  imageSizes?: readonly number[];
  minImageSize: number;
  /** Allowed --alpha values; undefined means the backbone has no width multiplier. */
  alphas?: readonly number[];
  defaultAlpha?: number;
  preprocessing: Preprocessing;
  /** Builds the convolutional base without the classifier top (Keras include_top=False, pooling=None). */
  build(options: BackboneOptions): tf.LayersModel;
  /**
   * The base's layers grouped into blocks, bottom to top. `--unfreeze N` makes the top N blocks trainable.
   * Every weighted layer belongs to exactly one block.
   */
  blocks(options: BackboneOptions): string[][];
  /** Official ImageNet weights for this configuration, or undefined when none are published. */
  imagenetWeights(options: BackboneOptions): ImagenetWeightsFile | undefined;
}
