import type { ImageSet } from './batches.js';
import { decodeAll, type DecodeOptions } from './decode.js';
import type { DatasetLayout, LabelledFile, SkippedFile } from './types.js';

/** The decoded splits of a dataset, and every file that could not be used. */
export interface ImageData {
  classes: string[];
  train: ImageSet;
  valid: ImageSet;
  /** Unlabelled images (labels all -1). */
  test: ImageSet;
  skipped: SkippedFile[];
}

/**
 * Decodes every image of a layout once, at the backbone's input size (decoding is the slow part of
 * reading images; keeping the resized bytes makes later epochs free of it). Files sharp cannot read
 * are dropped from their split and listed in `skipped` with the reason.
 */
export async function loadImageData(
  layout: DatasetLayout,
  options: DecodeOptions & { onProgress?: (done: number, total: number) => void },
): Promise<ImageData> {
  const splits: { name: string; files: LabelledFile[] }[] = [
    { name: 'train', files: layout.train },
    { name: 'valid', files: layout.valid },
    { name: 'test', files: layout.test.map((path) => ({ path, label: -1 })) },
  ];
  const all = splits.flatMap((s) => s.files);
  const { images, failures } = await decodeAll(
    all.map((f) => f.path),
    options,
  );
  const reasons = new Map(failures.map((f) => [f.path, f.reason]));
  const skipped: SkippedFile[] = [...layout.skipped];
  const sets: ImageSet[] = [];
  let offset = 0;
  for (const split of splits) {
    const set: ImageSet = { images: [], labels: new Int32Array(0), paths: [] };
    const labels: number[] = [];
    split.files.forEach((file, i) => {
      const pixels = images[offset + i];
      if (pixels === undefined) {
        skipped.push({ path: file.path, split: split.name, reason: reasons.get(file.path) ?? 'cannot decode' });
        return;
      }
      set.images.push(pixels);
      set.paths.push(file.path);
      labels.push(file.label);
    });
    set.labels = Int32Array.from(labels);
    offset += split.files.length;
    sets.push(set);
  }
  return { classes: layout.classes, train: sets[0]!, valid: sets[1]!, test: sets[2]!, skipped };
}
