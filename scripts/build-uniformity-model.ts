import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Builds models/image-uniformity/model.onnx: a tiny fixed-weight CNN that scores how blank (near-uniform)
// an image is. Nothing is trained: the weights are chosen by hand, so the file is reproducible from
// this script byte for byte (a test checks the committed file against it).
//
// Why a hand-written protobuf encoder: npm has no ONNX *writer* we trust (onnxruntime only reads models;
// the protobuf packages would need the onnx.proto schema vendored and a code generator), and the graph
// is six nodes. The encoder below covers exactly the ONNX messages used (onnx.proto, IR version 7,
// opset 13), field numbers as in onnx/onnx.proto.
//
// The graph, for input x in [0, 1] (8-bit display image × 1/255), shape [N, 1, 64, 64]:
//   Conv (4 fixed 3×3 kernels: +∂x, −∂x, +∂y, −∂y, no padding so borders add no edges)
//   → Relu (the ± pair makes |∂x| and |∂y|) → GlobalAveragePool → Flatten → [N, 4]
//   → Gemm with weights −K and bias B → logit = B − K·(mean|∂x| + mean|∂y|) → Sigmoid → probability.
// A constant image has zero gradient, so logit = B (probability ≈ 0.99); at a mean absolute gradient
// of B/K per pixel (in units of the display range) the probability crosses 0.5.

/** logit at zero gradient: sigmoid(4.6) ≈ 0.990. */
export const BIAS = 4.6;
/** Mean |∂x| + |∂y| (fraction of the display range per pixel) at which the score crosses 0.5. */
export const GRADIENT_AT_HALF = 0.01;
export const SIZE = 64;

// ---- protobuf wire format -------------------------------------------------------------------------

class Writer {
  private parts: number[] = [];

  varint(value: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(value));
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      this.parts.push(byte);
    } while (v !== 0n);
    return this;
  }

  private key(field: number, wireType: number): this {
    return this.varint((field << 3) | wireType);
  }

  int(field: number, value: number): this {
    return this.key(field, 0).varint(value);
  }

  float(field: number, value: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.key(field, 5);
    this.parts.push(...b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.key(field, 2).varint(value.length);
    for (const byte of value) this.parts.push(byte);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, Buffer.from(value, 'utf8'));
  }

  message(field: number, build: (w: Writer) => void): this {
    const inner = new Writer();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

// ---- ONNX messages (field numbers from onnx.proto) -------------------------------------------------

const FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTR_INT = 2;
const ATTR_INTS = 7;

type Attribute = { name: string; int: number } | { name: string; ints: number[] };

function node(
  w: Writer,
  op: string,
  inputs: string[],
  outputs: string[],
  name: string,
  attrs: Attribute[] = [],
): void {
  w.message(1, (n) => {
    for (const i of inputs) n.string(1, i);
    for (const o of outputs) n.string(2, o);
    n.string(3, name);
    n.string(4, op);
    for (const a of attrs) {
      n.message(5, (at) => {
        at.string(1, a.name);
        if ('int' in a) at.int(3, a.int).int(20, ATTR_INT);
        else {
          for (const v of a.ints) at.int(8, v);
          at.int(20, ATTR_INTS);
        }
      });
    }
  });
}

function initializer(w: Writer, name: string, dims: number[], values: number[]): void {
  w.message(5, (t) => {
    for (const d of dims) t.int(1, d);
    t.int(2, FLOAT);
    t.string(8, name);
    const raw = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => raw.writeFloatLE(v, i * 4));
    t.bytes(9, raw);
  });
}

/** ValueInfoProto of a float tensor; a string dimension is symbolic (dim_param). */
function valueInfo(w: Writer, field: 11 | 12, name: string, dims: (number | string)[]): void {
  w.message(field, (v) => {
    v.string(1, name);
    v.message(2, (type) =>
      type.message(1, (tensor) => {
        tensor.int(1, FLOAT);
        tensor.message(2, (shape) => {
          for (const d of dims)
            shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        });
      }),
    );
  });
}

export function buildUniformityModel(): Uint8Array {
  // Kernels laid out [out=4, in=1, 3, 3]: forward differences along x and y, each with both signs.
  const dx = [0, 0, 0, 0, -1, 1, 0, 0, 0];
  const dy = [0, 0, 0, 0, -1, 0, 0, 1, 0];
  const kernels = [...dx, ...dx.map((v) => -v), ...dy, ...dy.map((v) => -v)];
  const k = BIAS / GRADIENT_AT_HALF;

  const model = new Writer();
  model.int(1, 7); // ir_version 7 (ONNX 1.8, opset 13)
  model.string(2, 'dicom-ai-gateway scripts/build-uniformity-model.ts');
  model.string(3, '1.0.0');
  model.string(4, 'org.dicom-ai-gateway');
  model.int(5, 1); // model_version
  model.string(6, 'Fixed-weight blank/near-uniform image detector. Not trained, not clinical.');
  model.message(7, (g) => {
    node(g, 'Conv', ['input', 'gradient_kernels'], ['gradients'], 'gradients', [
      { name: 'kernel_shape', ints: [3, 3] },
      { name: 'pads', ints: [0, 0, 0, 0] },
      { name: 'strides', ints: [1, 1] },
    ]);
    node(g, 'Relu', ['gradients'], ['gradient_magnitudes'], 'magnitudes');
    node(g, 'GlobalAveragePool', ['gradient_magnitudes'], ['activity'], 'activity');
    node(g, 'Flatten', ['activity'], ['activity_flat'], 'flatten', [{ name: 'axis', int: 1 }]);
    node(g, 'Gemm', ['activity_flat', 'head_weight', 'head_bias'], ['logit'], 'head');
    node(g, 'Sigmoid', ['logit'], ['probability'], 'probability');
    g.string(2, 'image_uniformity');
    initializer(g, 'gradient_kernels', [4, 1, 3, 3], kernels);
    initializer(g, 'head_weight', [4, 1], [-k, -k, -k, -k]);
    initializer(g, 'head_bias', [1], [BIAS]);
    valueInfo(g, 11, 'input', ['batch', 1, SIZE, SIZE]);
    valueInfo(g, 12, 'logit', ['batch', 1]);
    valueInfo(g, 12, 'probability', ['batch', 1]);
  });
  model.message(8, (o) => o.string(1, '').int(2, 13)); // opset_import: default domain, version 13
  return model.finish();
}

export const MODEL_PATH = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../models/image-uniformity/model.onnx',
);

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const bytes = buildUniformityModel();
  writeFileSync(MODEL_PATH, bytes);
  console.log(`wrote ${MODEL_PATH} (${bytes.length} bytes)`);
}
