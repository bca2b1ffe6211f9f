/**
 * What an image file's header says that training quietly papers over: tiny pictures (upscaled into
 * blur), colour modes decoding converts (CMYK, grayscale, 16-bit, transparency flattened onto
 * white) and EXIF orientation (the file's pixels lie on their side until rotated). Read with sharp's
 * `metadata()`, which parses headers only.
 */
import sharp from 'sharp';

/** Images smaller than this on a side carry too little detail for the backbone's input. */
export const TINY_SIDE = 32;

export type ImageIssueKind = 'tiny' | 'cmyk' | 'grayscale' | '16-bit' | 'alpha' | 'exif-rotated';

/** One noteworthy property of one file. */
export interface ImageIssue {
  kind: ImageIssueKind;
  /** Short, for people: e.g. "20×18 px", "EXIF orientation 6 (rotated 90°)". */
  detail: string;
}

/** What the header of one file says. */
export interface ImageHeader {
  format: string;
  width: number;
  height: number;
  issues: ImageIssue[];
}

const ORIENTATIONS: Record<number, string> = {
  2: 'mirrored',
  3: 'rotated 180°',
  4: 'mirrored vertically',
  5: 'mirrored and rotated 90°',
  6: 'rotated 90°',
  7: 'mirrored and rotated 270°',
  8: 'rotated 270°',
};

/** The issues sharp's metadata shows for one image. Pure: the tests feed it metadata objects. */
export function issuesFromMetadata(m: sharp.Metadata): ImageIssue[] {
  const issues: ImageIssue[] = [];
  const width = m.width ?? 0;
  const height = m.height ?? 0;
  if (width < TINY_SIDE || height < TINY_SIDE) issues.push({ kind: 'tiny', detail: `${width}×${height} px` });
  if (m.space === 'cmyk') issues.push({ kind: 'cmyk', detail: 'CMYK colour (converted to sRGB)' });
  else if (m.space === 'b-w' || m.space === 'grey16' || (m.channels !== undefined && m.channels <= 2 && !m.isPalette)) {
    issues.push({ kind: 'grayscale', detail: 'grayscale (becomes 3 equal channels)' });
  }
  if (m.depth === 'ushort' || m.space === 'rgb16' || m.space === 'grey16') issues.push({ kind: '16-bit', detail: '16 bits per channel (reduced to 8)' });
  if (m.hasAlpha) issues.push({ kind: 'alpha', detail: 'transparency (flattened onto white)' });
  const o = m.orientation ?? 1;
  if (o > 1 && o <= 8) issues.push({ kind: 'exif-rotated', detail: `EXIF orientation ${o} (${ORIENTATIONS[o]}; applied when decoding)` });
  return issues;
}

/** Reads one file's header; undefined when sharp cannot (the decoding step reports why). */
export async function readImageHeader(file: string): Promise<ImageHeader | undefined> {
  try {
    const m = await sharp(file).metadata();
    return { format: m.format ?? 'unknown', width: m.width ?? 0, height: m.height ?? 0, issues: issuesFromMetadata(m) };
  } catch {
    return undefined;
  }
}
