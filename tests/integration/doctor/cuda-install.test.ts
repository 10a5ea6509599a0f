import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { fakeCudaProvider, fakeElf, fakeOrtPackage } from '../../helpers/fake-elf.ts';

// scripts/install-cuda-provider.ts run as an administrator would, against a scratch onnxruntime-node
// folder. The provider libraries are look-alikes (ELF files with the right version string and
// dependencies), laid out as in the npm package com.github.asus4.onnxruntime.linux-x64-gpu; they are
// placed and version-checked, never loaded. Set CUDA_PROVIDER_PACKAGE to the real .tgz to also
// install the real provider into a copy of this project's onnxruntime-node.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SCRIPT = path.join(repoRoot, 'scripts/install-cuda-provider.ts');
const ASUS4_DIR = 'package/Plugins/Linux/x64';
const CUDA = 'libonnxruntime_providers_cuda.so';
const SHARED = 'libonnxruntime_providers_shared.so';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cuda-install-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function install(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', SCRIPT, ...args],
      { cwd: repoRoot, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

/** A package tree like the asus4 npm package, with look-alike libraries of `version`. */
async function asus4Tree(
  name: string,
  version: string,
): Promise<{ root: string; cuda: Buffer; shared: Buffer }> {
  const root = path.join(dir, name);
  const lib = path.join(root, ASUS4_DIR);
  await mkdir(lib, { recursive: true });
  const cuda = fakeCudaProvider(version);
  const shared = fakeElf({ needed: ['libc.so.6'] });
  await writeFile(path.join(lib, CUDA), cuda);
  await writeFile(path.join(lib, SHARED), shared);
  await writeFile(
    path.join(lib, 'libonnxruntime_providers_tensorrt.so'),
    fakeElf({ needed: ['libnvinfer.so.10'] }),
  );
  await writeFile(
    path.join(root, 'package', 'package.json'),
    '{"name":"com.github.asus4.onnxruntime.linux-x64-gpu"}',
  );
  return { root, cuda, shared };
}

function tgz(tree: string, file: string): string {
  execFileSync('tar', ['-czf', file, '-C', tree, 'package']);
  return file;
}

test('offline from an asus4-style .tgz: both libraries placed next to the core, byte for byte', async () => {
  const ort = path.join(dir, 'ort-a');
  const bin = await fakeOrtPackage(ort, '1.29.0');
  const { root, cuda, shared } = await asus4Tree('tree-a', '1.29.0');
  const pkg = tgz(root, path.join(dir, 'gpu-a.tgz'));

  const { code, output } = await install(['--from', pkg, '--ort-dir', ort]);
  assert.equal(code, 0, output);
  assert.match(output, /versions: onnxruntime-node 1\.29\.0, core library 1\.29\.0, CUDA provider 1\.29\.0/);
  assert.match(output, new RegExp(`placed ${bin}/${CUDA} \\(${cuda.length} bytes, sha256 [0-9a-f]{64}\\)`));
  assert.deepEqual(await readFile(path.join(bin, CUDA)), cuda);
  assert.deepEqual(await readFile(path.join(bin, SHARED)), shared);
  // Only the two libraries ORT needs for CUDA: no TensorRT provider, no leftovers.
  assert.deepEqual((await readdir(bin)).sort(), [CUDA, 'libonnxruntime.so.1', SHARED].sort());

  const removed = await install(['--remove', '--ort-dir', ort]);
  assert.equal(removed.code, 0, removed.output);
  assert.deepEqual(await readdir(bin), ['libonnxruntime.so.1']);
});

test('a provider of another ONNX Runtime release is refused, unless forced', async () => {
  const ort = path.join(dir, 'ort-b');
  const bin = await fakeOrtPackage(ort, '1.29.0');
  const { root } = await asus4Tree('tree-b', '1.30.0');
  const pkg = tgz(root, path.join(dir, 'gpu-b.tgz'));

  const refused = await install(['--from', pkg, '--ort-dir', ort]);
  assert.equal(refused.code, 1);
  assert.match(refused.output, /the CUDA provider is ONNX Runtime 1\.30\.0 but onnxruntime-node is 1\.29\.0/);
  assert.deepEqual(await readdir(bin), ['libonnxruntime.so.1'], 'nothing placed');

  const forced = await install(['--from', pkg, '--ort-dir', ort, '--force']);
  assert.equal(forced.code, 0, forced.output);
  assert.match(forced.output, /WARNING \(--force\): the CUDA provider is ONNX Runtime 1\.30\.0/);
  assert.equal((await readdir(bin)).length, 3);
});

test('offline from a folder with the CUDA provider zstd-compressed', async () => {
  const ort = path.join(dir, 'ort-c');
  const bin = await fakeOrtPackage(ort, '1.29.0');
  const { root, cuda } = await asus4Tree('tree-c', '1.29.0');
  const lib = path.join(root, ASUS4_DIR);
  execFileSync('zstd', ['-q', '--rm', path.join(lib, CUDA)]);
  const { code, output } = await install(['--from', root, '--ort-dir', ort]);
  assert.equal(code, 0, output);
  assert.match(output, /decompressing .*libonnxruntime_providers_cuda\.so\.zst/);
  assert.deepEqual(await readFile(path.join(bin, CUDA)), cuda);
});

test('offline from a NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux .nupkg (a zip)', async () => {
  const ort = path.join(dir, 'ort-e');
  const bin = await fakeOrtPackage(ort, '1.29.0');
  const ortRequire = createRequire(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const AdmZip = ortRequire('adm-zip') as new () => {
    addFile(name: string, data: Buffer): void;
    writeZip(file: string): void;
  };
  const zip = new AdmZip();
  const cuda = fakeCudaProvider('1.29.0');
  zip.addFile(`runtimes/linux-x64/native/${CUDA}`, cuda);
  zip.addFile(`runtimes/linux-x64/native/${SHARED}`, fakeElf({ needed: ['libc.so.6'] }));
  zip.addFile('runtimes/linux-x64/native/libonnxruntime.so', fakeElf({ strings: ['1.29.0'] }));
  const nupkg = path.join(dir, 'microsoft.ml.onnxruntime.gpu.linux.1.29.0.nupkg');
  zip.writeZip(nupkg);
  const { code, output } = await install(['--from', nupkg, '--ort-dir', ort]);
  assert.equal(code, 0, output);
  assert.deepEqual(await readFile(path.join(bin, CUDA)), cuda);
  assert.deepEqual((await readdir(bin)).sort(), [CUDA, 'libonnxruntime.so.1', SHARED].sort());
});

test('refusals: no provider in the source, two candidates, not an onnxruntime-node folder', async () => {
  const ort = path.join(dir, 'ort-d');
  const bin = await fakeOrtPackage(ort, '1.29.0');
  const empty = path.join(dir, 'empty');
  await mkdir(empty);
  const none = await install(['--from', empty, '--ort-dir', ort]);
  assert.equal(none.code, 1);
  assert.match(
    none.output,
    /libonnxruntime_providers_cuda\.so \(or libonnxruntime_providers_cuda\.so\.zst\) is not in/,
  );

  const { root } = await asus4Tree('tree-d', '1.29.0');
  await cp(path.join(root, ASUS4_DIR), path.join(root, 'copy'), { recursive: true });
  const twice = await install(['--from', root, '--ort-dir', ort]);
  assert.equal(twice.code, 1);
  assert.match(twice.output, /is there more than once/);
  assert.deepEqual(await readdir(bin), ['libonnxruntime.so.1']);

  const notOrt = path.join(dir, 'not-ort');
  await mkdir(notOrt);
  await writeFile(path.join(notOrt, 'package.json'), '{"name":"onnxruntime-common","version":"1.29.0"}');
  const wrong = await install(['--from', root, '--ort-dir', notOrt]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.output, /is not onnxruntime-node's/);
  assert.deepEqual(await readdir(notOrt), ['package.json'], 'no bin folder created');

  const usage = await install(['--online', '--remove']);
  assert.equal(usage.code, 2);
  assert.match(usage.output, /Usage: install-cuda-provider/);
});

test('the real asus4 package into a copy of onnxruntime-node (only with CUDA_PROVIDER_PACKAGE)', async (t) => {
  const pkg = process.env.CUDA_PROVIDER_PACKAGE;
  if (!pkg)
    return t.skip('set CUDA_PROVIDER_PACKAGE to com.github.asus4.onnxruntime.linux-x64-gpu-0.4.9.tgz');
  const real = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const copy = path.join(dir, 'real', 'onnxruntime-node');
  await cp(real, copy, { recursive: true });
  const { code, output } = await install(['--from', pkg, '--ort-dir', copy]);
  assert.equal(code, 0, output);
  assert.match(output, /CUDA provider 1\.29\.0/);
  const bin = path.join(copy, 'bin', 'napi-v6', process.platform, process.arch);
  assert.ok((await readdir(bin)).includes(CUDA));
});
