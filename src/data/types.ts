/** A labelled image file found in the data folder. */
export interface LabelledFile {
  /** Absolute path. */
  path: string;
  /** Index into `DatasetLayout.classes`. */
  label: number;
}

/** A file that was found but not used, and why. Written to skipped.csv. */
export interface SkippedFile {
  path: string;
  /** 'train' | 'valid' | 'test' or '' when not known. */
  split: string;
  /** One line a person can act on, e.g. "cannot decode: Input buffer contains unsupported image format". */
  reason: string;
}

/** What layout discovery found in a data folder. */
export interface DatasetLayout {
  root: string;
  /** Sorted subfolder names of train/. */
  classes: string[];
  train: LabelledFile[];
  valid: LabelledFile[];
  /** Unlabelled images to predict (test/unknown/* or test/*), absolute paths, sorted. */
  test: string[];
  /**
   * Labelled test images: those in test/<class>/ folders named like a training class. Evaluated
   * once after training and reported apart; they never steer training (validation does).
   */
  testLabelled?: LabelledFile[];
  /**
   * Where the validation set came from: the folder's name as found ('valid', 'validation', 'val', any
   * case), 'split' (held out from train), or 'none' (no validation folder and a split of 0).
   */
  validSource: string;
  /** Files that are not images (by extension) or hidden, counted per reason. */
  ignored: { hidden: number; notImage: number };
  /** Image files skipped at discovery (e.g. unreadable). Decoding failures are added later. */
  skipped: SkippedFile[];
  /** Things worth telling the user that do not stop a run (e.g. "valid/rose has no images"). */
  warnings?: string[];
}

/** How an image is fitted to the backbone's square input. */
export type ResizeMode = 'stretch' | 'crop' | 'pad';

/** Every `--resize` value. */
export const RESIZE_MODES: readonly ResizeMode[] = ['stretch', 'crop', 'pad'];

/** A decoded image: `size × size × 3` RGB bytes, row-major (HWC), the size of the backbone input. */
export interface DecodedImage {
  path: string;
  pixels: Uint8Array;
}

/** Augmentation for training images: the levels of `augmentImage`, or RandAugment (src/data/randaugment.ts). */
export type AugmentLevel = 'none' | 'light' | 'strong' | 'randaugment';

/** Every `--augment` value. */
export const AUGMENT_LEVELS: readonly AugmentLevel[] = ['none', 'light', 'strong', 'randaugment'];
