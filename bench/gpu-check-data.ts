/**
 * The data the device check takes along (bench/gpu-check-pack runs this): the hymenoptera set with
 * every JPEG re-encoded at 256 px on its shorter side (quality 90; 46 MB → a few MB, within what a
 * device run may carry; the fine-tune resizes to 160 px anyway), other files copied as they are, and
 * the Teachable Machine MobileNetV2 0.35 weights.
 *
 *   vite-node bench/gpu-check-data.ts <shared dir> <out dir>
 */
import { cpSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';

const [shared, out] = process.argv.slice(2);
if (!shared || !out) {
  console.error('usage: vite-node bench/gpu-check-data.ts <shared dir> <out dir>');
  process.exit(2);
}

async function copyResized(from: string, to: string): Promise<number> {
  mkdirSync(to, { recursive: true });
  let n = 0;
  for (const name of readdirSync(from)) {
    const src = path.join(from, name);
    const dst = path.join(to, name);
    if (statSync(src).isDirectory()) n += await copyResized(src, dst);
    else if (/\.jpe?g$/i.test(name)) {
      await sharp(src).rotate().resize(256, 256, { fit: 'outside', withoutEnlargement: true }).jpeg({ quality: 90 }).toFile(dst);
      n++;
    } else cpSync(src, dst);
  }
  return n;
}

const images = await copyResized(path.join(shared, 'datasets/hymenoptera_data'), path.join(out, 'hymenoptera_data'));
cpSync(path.join(shared, 'weights/teachable-machine-mobilenet_v2_0.35_224'), path.join(out, 'teachable-machine-mobilenet_v2_0.35_224'), { recursive: true });
console.error(`gpu-check-data: ${images} images re-encoded into ${out}`);
