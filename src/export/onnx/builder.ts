/**
 * Builds an ONNX graph node by node and encodes it with ONNX's own schema (the `onnx-proto`
 * package: onnx.proto compiled for protobufjs), so no protobuf bytes are written by hand.
 *
 * Weights stay Float32Arrays until `encode`: a later layer (a batch norm folded into the
 * convolution before it) may still rewrite them.
 */
import { endianness } from 'node:os';
import { createRequire } from 'node:module';
import type onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

/** ONNX's schema, loaded on first use (a CommonJS module, required synchronously): loading
 * protobufjs costs ~0.1 CPU s, which every start of the CLI paid for the export it may never run. */
let schema: typeof onnxProto.onnx | undefined;
function onnxSchema(): typeof onnxProto.onnx {
  schema ??= (createRequire(import.meta.url)('onnx-proto') as typeof onnxProto).onnx;
  return schema;
}

/** Opset 13: Softmax over one axis, Clip with tensor bounds, Pad with tensor pads; read by every runtime since 2021. */
export const OPSET = 13;
/** The IR version that goes with opset 13. */
export const IR_VERSION = 7;

export type AttributeValue = number | number[] | string | { float: number };

/** A float32 weight, kept mutable until the model is encoded. */
export interface FloatInitializer {
  name: string;
  dims: number[];
  data: Float32Array;
}

/** A graph input or output: its name, and its shape with `batch` (a string) for the free dimension. */
export interface TensorInfo {
  name: string;
  dims: (number | string)[];
}

export interface ModelDescription {
  graphName: string;
  producerVersion: string;
  docString: string;
  /** Free-form key/value pairs (onnx ModelProto.metadata_props), e.g. the class names. */
  metadata: Record<string, string>;
}

/** Little-endian bytes of a typed array, as TensorProto.raw_data wants them. */
function rawBytes(values: Float32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function attribute(name: string, value: AttributeValue): OnnxTypes.IAttributeProto {
  const T = onnxSchema().AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`attribute ${name}: ${value} is not an integer; pass { float: ${value} }`);
    return { name, type: T.INT, i: value };
  }
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  return { name, type: T.FLOAT, f: value.float };
}

function valueInfo(info: TensorInfo): OnnxTypes.IValueInfoProto {
  return {
    name: info.name,
    type: {
      tensorType: {
        elemType: onnxSchema().TensorProto.DataType.FLOAT,
        shape: { dim: info.dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

export class OnnxGraphBuilder {
  private readonly nodes: OnnxTypes.INodeProto[] = [];
  private readonly floats: FloatInitializer[] = [];
  private readonly int64s: { name: string; values: BigInt64Array }[] = [];
  private readonly used = new Set<string>();

  constructor() {
    // raw_data is little-endian by definition; typed arrays use the machine's order.
    if (endianness() !== 'LE') throw new Error('the ONNX export needs a little-endian machine');
  }

  /** A value name not used yet, from `base` (a layer name) made safe for every ONNX tool. */
  uniqueName(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9_.:/-]/g, '_') || 'value';
    let name = clean;
    for (let i = 1; this.used.has(name); i++) name = `${clean}_${i}`;
    this.used.add(name);
    return name;
  }

  /** Adds a float32 initializer and returns it (its data may still be changed before encoding). */
  addFloats(base: string, dims: number[], data: Float32Array): FloatInitializer {
    const size = dims.reduce((a, b) => a * b, 1);
    if (data.length !== size) throw new RangeError(`initializer ${base}: ${data.length} values for shape [${dims.join(', ')}]`);
    const init = { name: this.uniqueName(base), dims, data };
    this.floats.push(init);
    return init;
  }

  /** Adds an int64 initializer (shapes, pads) and returns its name. */
  addInt64s(base: string, values: number[]): string {
    const name = this.uniqueName(base);
    this.int64s.push({ name, values: BigInt64Array.from(values.map((v) => BigInt(v))) });
    return name;
  }

  /** Adds a node; returns its first output's name. Outputs are named from `outputBase` unless given. */
  node(opType: string, inputs: string[], outputBase: string, attributes: Record<string, AttributeValue> = {}, outputName?: string): string {
    const output = outputName ?? this.uniqueName(outputBase);
    if (outputName !== undefined) this.used.add(outputName);
    this.nodes.push({
      opType,
      name: this.uniqueName(`${outputBase}/${opType}`),
      input: inputs,
      output: [output],
      attribute: Object.entries(attributes).map(([k, v]) => attribute(k, v)),
    });
    return output;
  }

  /** The whole model as ONNX protobuf bytes. */
  encode(input: TensorInfo, output: TensorInfo, description: ModelDescription): Uint8Array {
    const onnx = onnxSchema();
    const DataType = onnx.TensorProto.DataType;
    const initializer: OnnxTypes.ITensorProto[] = [
      ...this.floats.map((f) => ({ name: f.name, dims: f.dims, dataType: DataType.FLOAT, rawData: rawBytes(f.data) })),
      ...this.int64s.map((t) => ({ name: t.name, dims: [t.values.length], dataType: DataType.INT64, rawData: rawBytes(t.values) })),
    ];
    const model: OnnxTypes.IModelProto = {
      irVersion: IR_VERSION,
      opsetImport: [{ domain: '', version: OPSET }],
      producerName: 'finetune',
      producerVersion: description.producerVersion,
      docString: description.docString,
      graph: {
        name: description.graphName,
        node: this.nodes,
        initializer,
        input: [valueInfo(input)],
        output: [valueInfo(output)],
      },
      metadataProps: Object.entries(description.metadata).map(([key, value]) => ({ key, value })),
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }
}

/** Decodes ONNX bytes (for tests and tools that inspect an export). */
export function decodeOnnxModel(bytes: Uint8Array): OnnxTypes.ModelProto {
  return onnxSchema().ModelProto.decode(bytes);
}
