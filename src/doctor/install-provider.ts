import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  CORE_LIBRARY,
  CUDA_PROVIDER,
  providerFiles,
  ortVersionOf,
  PROVIDER_FILES,
  type OrtPackage,
} from './ort-install.ts';

// Places the CUDA execution provider next to onnxruntime-node's core library, either with the
// package's own NuGet download (online) or from a file carried onto an air-gapped host (offline): the
// npm package com.github.asus4.onnxruntime.linux-x64-gpu (.tgz), a NuGet Microsoft.ML.OnnxRuntime.
// Gpu.Linux package (.nupkg), or a folder holding the two libraries, each optionally zstd-compressed.
// The provider must be the same ONNX Runtime release as the core; a mismatch is refused.

export class ProviderInstallError extends Error {
  override name = 'ProviderInstallError';
}

export interface InstallOptions {
  ort: OrtPackage;
  /** Install even when the provider's release differs from the core's (or cannot be read). */
  force?: boolean;
  out?: (line: string) => void;
}

export interface InstalledFile {
  name: string;
  from: string;
  to: string;
  bytes: number;
  sha256: string;
}

/** Runs a program; resolves with its exit code, output streamed to `out` line by line. */
function runProgram(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; out: (line: string) => void },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const forward = (chunk: Buffer) =>
      chunk
        .toString()
        .split('\n')
        .filter((l) => l.trim())
        .forEach((l) => opts.out(`  ${cmd === process.execPath ? 'install.js' : cmd}: ${l}`));
    child.stdout.on('data', forward);
    child.stderr.on('data', forward);
    child.on('error', (err) =>
      reject(
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new ProviderInstallError(`'${cmd}' is not installed`)
          : err,
      ),
    );
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** Every file under `dir` (depth-limited) whose name is one of `names`, by name. */
async function findByName(dir: string, names: string[], depth = 8): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  const walk = async (d: string, level: number): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory() && level < depth) await walk(full, level + 1);
      else if ((entry.isFile() || entry.isSymbolicLink()) && names.includes(entry.name)) {
        found.set(entry.name, [...(found.get(entry.name) ?? []), full]);
      }
    }
  };
  await walk(dir, 0);
  return found;
}

interface AdmZipClass {
  new (file: string): {
    getEntries(): { entryName: string; isDirectory: boolean }[];
    extractEntryTo(entry: string, target: string, maintainPath: boolean, overwrite: boolean): boolean;
  };
}

/** adm-zip comes with onnxruntime-node (its own installer opens the NuGet package with it). */
function loadAdmZip(ort: OrtPackage): AdmZipClass {
  const bases = [path.join(ort.dir, 'package.json')];
  try {
    bases.push(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  } catch {
    // this project's onnxruntime-node is not installed; only the given folder counts
  }
  for (const base of bases) {
    try {
      return createRequire(base)('adm-zip') as AdmZipClass;
    } catch {
      // try the next place
    }
  }
  throw new ProviderInstallError(
    'adm-zip (a dependency of onnxruntime-node) is missing: cannot open .nupkg/.zip files',
  );
}

/** Unpacks an archive into `into`; returns the folder to search. */
async function unpack(source: string, into: string, ort: OrtPackage, out: (l: string) => void) {
  const lower = source.toLowerCase();
  if (/\.(tgz|tar\.gz|tar|tar\.zst)$/.test(lower)) {
    const args = lower.endsWith('.zst') ? ['--zstd', '-xf', source, '-C', into] : ['-xf', source, '-C', into];
    out(`unpacking ${source}`);
    if ((await runProgram('tar', args, { out })) !== 0)
      throw new ProviderInstallError(`tar failed on ${source}`);
    return into;
  }
  if (/\.(nupkg|zip)$/.test(lower)) {
    const AdmZip = loadAdmZip(ort);
    out(`unpacking ${source}`);
    const zip = new AdmZip(source);
    const wanted = new Set<string>([...PROVIDER_FILES, ...PROVIDER_FILES.map((f) => `${f}.zst`)]);
    for (const entry of zip.getEntries()) {
      if (!entry.isDirectory && wanted.has(path.posix.basename(entry.entryName))) {
        zip.extractEntryTo(entry.entryName, into, true, true);
      }
    }
    return into;
  }
  throw new ProviderInstallError(
    `${source}: not a folder, .tgz, .tar(.gz|.zst), .nupkg or .zip (the npm package com.github.asus4.onnxruntime.linux-x64-gpu or a NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux package)`,
  );
}

/** The two provider libraries in `dir` (plain or .zst); decompresses .zst ones into `scratch`. */
async function pickProviderFiles(dir: string, scratch: string, out: (l: string) => void) {
  const names = [...PROVIDER_FILES, ...PROVIDER_FILES.map((f) => `${f}.zst`)];
  const found = await findByName(dir, names);
  const picked = new Map<string, string>();
  for (const name of PROVIDER_FILES) {
    const plain = found.get(name) ?? [];
    const zst = found.get(`${name}.zst`) ?? [];
    const all = [...plain, ...zst];
    if (all.length === 0) throw new ProviderInstallError(`${name} (or ${name}.zst) is not in ${dir}`);
    if (all.length > 1) throw new ProviderInstallError(`${name} is there more than once: ${all.join(', ')}`);
    if (plain.length === 1) {
      picked.set(name, plain[0]!);
    } else {
      const target = path.join(scratch, name);
      out(`decompressing ${zst[0]}`);
      if ((await runProgram('zstd', ['-d', '-q', '-f', '-o', target, zst[0]!], { out })) !== 0) {
        throw new ProviderInstallError(`zstd failed on ${zst[0]}`);
      }
      picked.set(name, target);
    }
  }
  return picked;
}

/** Refuses a provider from another ONNX Runtime release than the core (unless forced). */
async function checkVersions(cudaProvider: string, opts: InstallOptions): Promise<string | null> {
  const out = opts.out ?? console.log;
  const { ort } = opts;
  const provider = await ortVersionOf(cudaProvider);
  const core = await ortVersionOf(path.join(ort.binDir, CORE_LIBRARY)).catch(() => null);
  out(
    `versions: onnxruntime-node ${ort.version}, core library ${core ?? 'unreadable'}, CUDA provider ${provider ?? 'unreadable'}`,
  );
  const problems: string[] = [];
  if (core === null)
    problems.push(`cannot read the ONNX Runtime release of ${CORE_LIBRARY} in ${ort.binDir}`);
  if (provider === null) problems.push(`cannot read the ONNX Runtime release of ${cudaProvider}`);
  else if (provider !== ort.version)
    problems.push(
      `the CUDA provider is ONNX Runtime ${provider} but onnxruntime-node is ${ort.version}; install onnxruntime-node@${provider} or use a provider built for ${ort.version}`,
    );
  if (core !== null && core !== ort.version)
    problems.push(`${CORE_LIBRARY} is ${core} but onnxruntime-node's package.json says ${ort.version}`);
  if (problems.length > 0) {
    if (!opts.force) throw new ProviderInstallError(problems.join('; '));
    for (const p of problems) out(`WARNING (--force): ${p}`);
  }
  return provider;
}

/** The folder must already hold the core library: never fill a folder ORT would not read. */
async function requireCore(ort: OrtPackage): Promise<void> {
  if (!(await stat(path.join(ort.binDir, CORE_LIBRARY)).catch(() => null))) {
    throw new ProviderInstallError(`${ort.binDir} has no ${CORE_LIBRARY}; is onnxruntime-node installed?`);
  }
}

/** Copies each file next to the core library through a temporary name, so a reader never sees half. */
async function place(files: Map<string, string>, ort: OrtPackage, out: (l: string) => void) {
  await requireCore(ort);
  const placed: InstalledFile[] = [];
  for (const [name, from] of files) {
    const to = path.join(ort.binDir, name);
    const tmp = `${to}.partial-${process.pid}`;
    await copyFile(from, tmp);
    await chmod(tmp, 0o755);
    await rename(tmp, to);
    const file = { name, from, to, bytes: (await stat(to)).size, sha256: await sha256(to) };
    out(`placed ${to} (${file.bytes} bytes, sha256 ${file.sha256})`);
    placed.push(file);
  }
  return placed;
}

/** Offline install from a folder or archive (see the file comment). */
export async function installFromLocal(source: string, opts: InstallOptions): Promise<InstalledFile[]> {
  const out = opts.out ?? console.log;
  await requireCore(opts.ort);
  const scratch = await mkdtemp(path.join(tmpdir(), 'cuda-provider-'));
  try {
    const s = await stat(source).catch(() => null);
    if (!s) throw new ProviderInstallError(`${source} does not exist`);
    const dir = s.isDirectory() ? source : await unpack(source, scratch, opts.ort, out);
    const files = await pickProviderFiles(dir, scratch, out);
    await checkVersions(files.get(CUDA_PROVIDER)!, opts);
    return await place(files, opts.ort, out);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Online install: onnxruntime-node's own install script, forced (ONNXRUNTIME_NODE_INSTALL=1), which
 * downloads Microsoft.ML.OnnxRuntime.Gpu.Linux at the package's own version from NuGet and extracts
 * the provider libraries into its bin folder. Run directly because npm 11 does not run dependencies'
 * install scripts unless approved, and because ONNXRUNTIME_NODE_INSTALL=skip may be set for npm ci.
 */
export async function installOnline(opts: InstallOptions): Promise<void> {
  const out = opts.out ?? console.log;
  const script = path.join(opts.ort.dir, 'script', 'install.js');
  out(`running ${script} with ONNXRUNTIME_NODE_INSTALL=1 (downloads from api.nuget.org)`);
  const env: NodeJS.ProcessEnv = { ...process.env, ONNXRUNTIME_NODE_INSTALL: '1' };
  delete env.npm_config_onnxruntime_node_install;
  const code = await runProgram(process.execPath, [script], { cwd: opts.ort.dir, env, out });
  if (code !== 0) throw new ProviderInstallError(`onnxruntime-node's install script failed (exit ${code})`);
  const files = await providerFiles(opts.ort);
  const missing = files.filter((f) => !f.present).map((f) => f.name);
  if (missing.length > 0)
    throw new ProviderInstallError(`still missing after the download: ${missing.join(', ')}`);
  await checkVersions(path.join(opts.ort.binDir, CUDA_PROVIDER), opts);
  for (const f of files) out(`present ${path.join(opts.ort.binDir, f.name)} (${f.bytes} bytes)`);
}

/** Removes the provider files: back to a CPU-only onnxruntime-node. */
export async function removeProvider(opts: InstallOptions): Promise<void> {
  const out = opts.out ?? console.log;
  for (const name of PROVIDER_FILES) {
    const file = path.join(opts.ort.binDir, name);
    await rm(file, { force: true });
    out(`removed ${file}`);
  }
}
