// onnxruntime-node 1.16.3 (pinned: see package.json) names dist/index.d.ts as its types but does
// not ship it; its API is onnxruntime-common's, which it re-exports and which ships its types.
declare module 'onnxruntime-node' {
  export * from 'onnxruntime-common';
}
