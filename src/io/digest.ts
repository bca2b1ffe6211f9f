import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** A file's digest (hex), read as a stream so large files never sit in memory whole. */
export async function fileDigest(file: string, algorithm = 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
