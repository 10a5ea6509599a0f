import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileGreySample } from '../../../scripts/build-kernels.ts';
import { GREY_SAMPLE_WASM } from '../../../src/imaging/kernels/grey-sample.wasm.ts';

test('the committed WebAssembly kernel is what its AssemblyScript source compiles to', async () => {
  const compiled = Buffer.from(await compileGreySample());
  assert.ok(
    compiled.equals(Buffer.from(GREY_SAMPLE_WASM, 'base64')),
    'grey-sample.wasm.ts is stale: run npm run build:kernels',
  );
});
