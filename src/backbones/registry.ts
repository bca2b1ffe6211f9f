/**
 * The backbones finetune knows, by their `--backbone` name. Adding one: write its file exporting a
 * BackboneSpec, and add one line below.
 */
import { UsageError } from '../errors.js';
import { mobileNetV2Spec } from './mobilenet_v2.js';
import type { BackboneOptions, BackboneSpec } from './types.js';
import { vgg16Spec } from './vgg16.js';

export const backbones: Record<string, BackboneSpec> = {
  [mobileNetV2Spec.name]: mobileNetV2Spec,
  [vgg16Spec.name]: vgg16Spec,
};

/** The spec registered under `name`; a UsageError listing the valid names otherwise. */
export function getBackbone(name: string): BackboneSpec {
  const spec = Object.hasOwn(backbones, name) ? backbones[name] : undefined;
  if (!spec) {
    throw new UsageError(`unknown backbone '${name}' (--backbone): choose one of ${Object.keys(backbones).join(', ')}`);
  }
  return spec;
}

/**
 * Fills in the defaults and checks `--alpha` / `--image-size` against what `spec` supports.
 * Backbones without a width multiplier get alpha 1 (and reject any other value).
 */
export function validateBackboneOptions(
  spec: BackboneSpec,
  options: { alpha?: number | undefined; imageSize?: number | undefined },
): Required<Pick<BackboneOptions, 'alpha' | 'imageSize'>> {
  const imageSize = options.imageSize ?? spec.defaultImageSize;
  if (!Number.isInteger(imageSize) || imageSize < spec.minImageSize) {
    throw new UsageError(`--image-size ${imageSize} is not valid for ${spec.name}: use a whole number ≥ ${spec.minImageSize}`);
  }
  if (spec.imageSizes && !spec.imageSizes.includes(imageSize)) {
    throw new UsageError(`--image-size ${imageSize} is not available for ${spec.name}: use one of ${spec.imageSizes.join(', ')}`);
  }

  if (!spec.alphas) {
    if (options.alpha !== undefined && options.alpha !== 1) {
      const withAlpha = Object.values(backbones).filter((b) => b.alphas).map((b) => b.name);
      throw new UsageError(`--alpha does not apply to ${spec.name} (it has no width multiplier); it is for ${withAlpha.join(', ')}`);
    }
    return { imageSize, alpha: 1 };
  }
  const alpha = options.alpha ?? spec.defaultAlpha ?? 1;
  if (!spec.alphas.includes(alpha)) {
    throw new UsageError(`--alpha ${alpha} is not available for ${spec.name}: use one of ${spec.alphas.join(', ')}`);
  }
  return { imageSize, alpha };
}
