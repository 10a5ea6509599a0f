#!/usr/bin/env -S npx tsx
// Places onnxruntime-node's CUDA execution provider (see src/doctor/install-provider.ts).
//
//   npx tsx scripts/install-cuda-provider.ts --online            # NuGet download (needs network)
//   npx tsx scripts/install-cuda-provider.ts --from FILE|FOLDER  # offline / air-gapped
//   npx tsx scripts/install-cuda-provider.ts --remove            # back to CPU only
//
// Options: --ort-dir DIR (another onnxruntime-node folder), --force (skip the version check).
import { parseArgs } from 'node:util';
import {
  installFromLocal,
  installOnline,
  ProviderInstallError,
  removeProvider,
} from '../src/doctor/install-provider.ts';
import { locateOrt, OrtNotFoundError } from '../src/doctor/ort-install.ts';

const USAGE = `Usage: install-cuda-provider (--online | --from FILE|FOLDER | --remove) [--ort-dir DIR] [--force]

  --online        run onnxruntime-node's own installer, which downloads the provider from NuGet
  --from PATH     install from a local file: the npm package com.github.asus4.onnxruntime.linux-x64-gpu
                  (.tgz), a NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux package (.nupkg), or a folder with
                  libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so (.zst allowed)
  --remove        delete the provider libraries (CPU only again)
  --ort-dir DIR   the onnxruntime-node folder (default: the one this project resolves)
  --force         install even if the provider's ONNX Runtime release differs from the core's`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      online: { type: 'boolean' },
      from: { type: 'string' },
      remove: { type: 'boolean' },
      'ort-dir': { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const modes = [values.online, values.from !== undefined, values.remove].filter(Boolean).length;
  if (values.help || modes !== 1) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const ort = await locateOrt(values['ort-dir']);
  console.log(`onnxruntime-node ${ort.version} at ${ort.dir}; provider folder ${ort.binDir}`);
  const opts = { ort, force: values.force ?? false };
  if (values.remove) await removeProvider(opts);
  else if (values.online) await installOnline(opts);
  else await installFromLocal(values.from!, opts);
  if (!values.remove) {
    console.log('done. Check the GPU prerequisites with: npx tsx src/cli.ts doctor');
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ProviderInstallError || err instanceof OrtNotFoundError) {
      console.error(`install-cuda-provider: ${err.message}`);
    } else {
      console.error(err);
    }
    process.exit(1);
  },
);
