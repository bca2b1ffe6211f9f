/**
 * VGG16 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
 * ICLR 2015, configuration D), built as keras/applications/vgg16.py builds it, with its layer names.
 */
import * as tf from '@tensorflow/tfjs';
import { CAFFE_PREPROCESSING } from './preprocess.js';
import type { BackboneOptions, BackboneSpec, ImagenetWeightsFile } from './types.js';

export interface Vgg16Options {
  /** Square input size in pixels, ≥ 32 (five 2x2 poolings). Default 224. */
  imageSize?: number;
  /** Model name; default `vgg16` as in Keras. */
  name?: string;
}

/** Configuration D of the paper: 3x3 convolutions per block, each block ending in a 2x2 max pool. */
export const VGG16_BLOCKS: readonly { filters: number; convs: number }[] = [
  { filters: 64, convs: 2 },
  { filters: 128, convs: 2 },
  { filters: 256, convs: 3 },
  { filters: 512, convs: 3 },
  { filters: 512, convs: 3 },
];

/** Keras's no-top file, with the md5 that keras/applications/vgg16.py passes to get_file. */
export const VGG16_IMAGENET_WEIGHTS: ImagenetWeightsFile = {
  fileName: 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
  url: 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5',
  checksum: { algorithm: 'md5', hex: '6d6bbae143d832006294945121d1f1fc' },
};

/**
 * Builds the VGG16 convolutional base (Keras `include_top=False, pooling=None`): input
 * [batch, size, size, 3] in caffe preprocessing (BGR, mean-subtracted), output `block5_pool`
 * [batch, floor(size/32), floor(size/32), 512]. Weights are random.
 */
export function vgg16(options: Vgg16Options = {}): tf.LayersModel {
  const size = options.imageSize ?? 224;
  if (!Number.isInteger(size) || size < 32) throw new RangeError(`VGG16 image size must be an integer ≥ 32, got ${size}`);

  const input = tf.input({ shape: [size, size, 3], name: 'input_1' });
  let x: tf.SymbolicTensor = input;
  VGG16_BLOCKS.forEach(({ filters, convs }, b) => {
    for (let c = 1; c <= convs; c++) {
      x = tf.layers
        .conv2d({
          filters,
          kernelSize: 3,
          padding: 'same',
          activation: 'relu',
          kernelInitializer: 'glorotUniform',
          name: `block${b + 1}_conv${c}`,
        })
        .apply(x) as tf.SymbolicTensor;
    }
    x = tf.layers.maxPooling2d({ poolSize: 2, strides: 2, name: `block${b + 1}_pool` }).apply(x) as tf.SymbolicTensor;
  });
  return tf.model({ inputs: input, outputs: x, name: options.name ?? 'vgg16' });
}

/** The five conv blocks, each its convolutions then its pool. */
export function vgg16Blocks(): string[][] {
  return VGG16_BLOCKS.map(({ convs }, b) => [
    ...Array.from({ length: convs }, (_, c) => `block${b + 1}_conv${c + 1}`),
    `block${b + 1}_pool`,
  ]);
}

export const vgg16Spec: BackboneSpec = {
  name: 'vgg16',
  description: 'VGG16 (Simonyan & Zisserman 2015): large and slow, strong features',
  defaultImageSize: 224,
  minImageSize: 32,
  preprocessing: CAFFE_PREPROCESSING,
  build: (o: BackboneOptions) => vgg16({ imageSize: o.imageSize }),
  blocks: () => vgg16Blocks(),
  // The weights do not depend on the input size (no dense layers in the no-top base).
  imagenetWeights: () => VGG16_IMAGENET_WEIGHTS,
};
