import { describe, expect, it } from 'vitest';
import {
  CAFFE_PREPROCESSING,
  MOBILENET_PREPROCESSING,
  channelMean,
  preprocessInto,
  withDatasetMean,
} from '../src/backbones/preprocess.js';
import { getBackbone } from '../src/backbones/registry.js';

const pixel = new Uint8Array([255, 128, 0, 0, 64, 255]); // two RGB pixels

describe('preprocessing', () => {
  it('MobileNetV2 scales RGB to [-1, 1]', () => {
    const out = new Float32Array(6);
    preprocessInto(pixel, getBackbone('mobilenetv2').preprocessing, out);
    expect(Array.from(out)).toEqual([1, 128 / 127.5 - 1, -1, -1, 64 / 127.5 - 1, 1].map(Math.fround));
  });

  it('VGG16 swaps RGB to BGR and subtracts the ImageNet means', () => {
    const out = new Float32Array(6);
    preprocessInto(pixel, getBackbone('vgg16').preprocessing, out);
    const expected = [0 - 103.939, 128 - 116.779, 255 - 123.68, 255 - 103.939, 64 - 116.779, 0 - 123.68];
    expected.forEach((v, i) => expect(out[i]).toBeCloseTo(v, 4));
    expect(CAFFE_PREPROCESSING.channelOrder).toBe('bgr');
  });

  it('dataset-mean subtracts the training set mean in the backbone channel order', () => {
    const mean = channelMean([pixel, new Uint8Array([1, 2, 3])]);
    expect(mean).toEqual([(255 + 0 + 1) / 3, (128 + 64 + 2) / 3, (0 + 255 + 3) / 3]);
    const spec = withDatasetMean(CAFFE_PREPROCESSING, mean);
    const out = new Float32Array(3);
    preprocessInto(new Uint8Array([10, 20, 30]), spec, out);
    expect(out[0]).toBeCloseTo(30 - mean[2], 4); // B first
    expect(out[2]).toBeCloseTo(10 - mean[0], 4);
    const mobile = withDatasetMean(MOBILENET_PREPROCESSING, mean);
    preprocessInto(new Uint8Array([10, 20, 30]), mobile, out);
    expect(out[0]).toBeCloseTo((10 - mean[0]) / 127.5, 6);
  });
});
