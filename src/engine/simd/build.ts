/** `npm run build:simd`: assembles kernels.wat into kernels.generated.ts. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GENERATED_FILE, assembleKernels, generatedSource } from './assemble.js';

writeFileSync(GENERATED_FILE, generatedSource(await assembleKernels()));
console.log(`wrote ${fileURLToPath(GENERATED_FILE)}`);
