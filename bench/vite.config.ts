/**
 * vite-node configuration for the benchmark (`npm run bench`, and the processes it starts).
 *
 * Packages like @tensorflow/tfjs publish an ES-module build under "module" in a package that is not
 * "type": "module", which vite-node cannot hand to Node as it is: it transforms the whole of it
 * instead, about 11 s at every start. Resolving "main" first gives the CommonJS builds Node itself
 * loads (the same ones `finetune` runs with), which vite-node leaves to Node: well under a second.
 */
export default {
  ssr: { resolve: { mainFields: ['main', 'module'] } },
};
