import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { errorMessage } from '../observability/error-message.ts';
import { findStrings, readGpuArchitectures, readNeeded, type GpuArchitectures } from './elf.ts';

// Where onnxruntime-node keeps its native libraries, and what is (or is not) next to them. The CUDA
// execution provider is two libraries that ORT loads from the directory of libonnxruntime.so.1:
// libonnxruntime_providers_shared.so (a small bridge) and libonnxruntime_providers_cuda.so (the
// kernels). They must come from the same ONNX Runtime release as the core library.

export const CORE_LIBRARY = 'libonnxruntime.so.1';
export const CUDA_PROVIDER = 'libonnxruntime_providers_cuda.so';
export const SHARED_PROVIDER = 'libonnxruntime_providers_shared.so';
export const PROVIDER_FILES = [CUDA_PROVIDER, SHARED_PROVIDER] as const;

/** System libraries every Linux process has; not worth reporting as GPU prerequisites. */
const BASE_SYSTEM_LIBRARIES =
  /^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+)\.so(\.\d+)*$|^ld-linux.*\.so(\.\d+)*$/;

/** ONNX Runtime release strings (1.10.0 and later) as they appear in its libraries. */
const ORT_VERSION = /1\.[1-9]\d{1,2}\.\d{1,3}/;

export interface OrtPackage {
  /** The onnxruntime-node package folder. */
  dir: string;
  /** Its package.json version. */
  version: string;
  /** Where its native libraries are for this platform (bin/napi-v6/<platform>/<arch>). */
  binDir: string;
}

export class OrtNotFoundError extends Error {
  override name = 'OrtNotFoundError';
}

/** The onnxruntime-node package this project resolves (or the one in `dir`). */
export async function locateOrt(
  dir?: string,
  platform: string = process.platform,
  arch: string = process.arch,
): Promise<OrtPackage> {
  let pkgDir = dir;
  if (!pkgDir) {
    try {
      pkgDir = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    } catch {
      throw new OrtNotFoundError('onnxruntime-node is not installed (run npm ci)');
    }
  }
  let pkg: { name?: unknown; version?: unknown };
  try {
    pkg = JSON.parse(await readFile(path.join(pkgDir, 'package.json'), 'utf8')) as typeof pkg;
  } catch (err) {
    throw new OrtNotFoundError(`${pkgDir} is not an onnxruntime-node package: ${errorMessage(err)}`);
  }
  const { name, version } = pkg;
  if (name !== 'onnxruntime-node' || typeof version !== 'string') {
    throw new OrtNotFoundError(`${pkgDir}/package.json is not onnxruntime-node's (name ${String(name)})`);
  }
  return { dir: pkgDir, version, binDir: path.join(pkgDir, 'bin', 'napi-v6', platform, arch) };
}

/**
 * The ONNX Runtime release a library was built from, read from the version string in its read-only
 * data. Null when it holds none or more than one candidate (then it cannot be told).
 */
export async function ortVersionOf(file: string): Promise<string | null> {
  const found = await findStrings(file, ORT_VERSION);
  return found.length === 1 ? found[0]! : null;
}

/** The GPU-specific libraries a provider library needs the dynamic loader to find. */
export function gpuDependencies(needed: string[]): string[] {
  return needed.filter((lib) => !BASE_SYSTEM_LIBRARIES.test(lib));
}

/** CUDA major version a provider was built for, from the CUDA runtime it links (libcudart.so.N). */
export function cudaMajorOf(needed: string[]): number | null {
  for (const lib of needed) {
    const m = /^libcudart\.so\.(\d+)$/.exec(lib);
    if (m) return Number(m[1]);
  }
  return null;
}

export interface ProviderState {
  ort: OrtPackage;
  /** The core library's release, from libonnxruntime.so.1 (null: file missing or unreadable). */
  coreVersion: string | null;
  files: { name: string; present: boolean; bytes?: number }[];
  /** The CUDA provider's release (null when missing or unreadable). */
  providerVersion: string | null;
  /** Libraries (other than base system ones) that the CUDA provider links. */
  dependencies: string[];
  cudaMajor: number | null;
  architectures: GpuArchitectures | null;
  /** Why something could not be read. */
  errors: string[];
}

/** What the onnxruntime-node folder holds for CUDA: the provider files, their release, their needs. */
/** Which provider files are in the package's bin folder, and their sizes (no library is read). */
export function providerFiles(ort: OrtPackage): Promise<ProviderState['files']> {
  return Promise.all(
    PROVIDER_FILES.map(async (name) => {
      const s = await stat(path.join(ort.binDir, name)).catch(() => null);
      return s?.isFile() ? { name, present: true, bytes: s.size } : { name, present: false };
    }),
  );
}

export async function inspectProvider(ort: OrtPackage): Promise<ProviderState> {
  const errors: string[] = [];
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | null> => {
    try {
      return await fn();
    } catch (err) {
      errors.push(`${what}: ${errorMessage(err)}`);
      return null;
    }
  };
  const core = path.join(ort.binDir, CORE_LIBRARY);
  const coreVersion = existsSync(core) ? await attempt(CORE_LIBRARY, () => ortVersionOf(core)) : null;
  const files = await providerFiles(ort);
  const cuda = path.join(ort.binDir, CUDA_PROVIDER);
  let providerVersion: string | null = null;
  let dependencies: string[] = [];
  let architectures: GpuArchitectures | null = null;
  let cudaMajor: number | null = null;
  if (files[0]!.present) {
    providerVersion = await attempt(CUDA_PROVIDER, () => ortVersionOf(cuda));
    const needed = (await attempt(CUDA_PROVIDER, () => readNeeded(cuda))) ?? [];
    dependencies = gpuDependencies(needed);
    cudaMajor = cudaMajorOf(needed);
    architectures = await attempt(CUDA_PROVIDER, () => readGpuArchitectures(cuda));
  }
  return {
    ort,
    coreVersion,
    files,
    providerVersion,
    dependencies,
    cudaMajor,
    architectures,
    errors,
  };
}
