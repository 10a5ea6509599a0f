import path from 'node:path';
import { isFile, list, type Host } from './host.ts';

// Can the dynamic loader find a library? It searches LD_LIBRARY_PATH, then its cache (`ldconfig -p`,
// built from /etc/ld.so.conf), then the default folders. Libraries that exist elsewhere (the nvidia-*
// Python wheels PyTorch installs, a CUDA toolkit not registered with ldconfig) are reported with the
// folder to add to LD_LIBRARY_PATH.

const DEFAULT_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
];

export interface LibraryLocation {
  soname: string;
  /** Where the loader finds it, and how. */
  loader?: { path: string; via: 'LD_LIBRARY_PATH' | 'ldconfig' | 'default folder' };
  /** Folders off the loader's path that hold it (wheels, toolkits). */
  elsewhere: string[];
}

/** `ldconfig -p`: soname → paths, for this machine's architecture. */
export async function ldconfigCache(host: Host): Promise<Map<string, string[]>> {
  const cache = new Map<string, string[]>();
  const result = (await host.exec('ldconfig', ['-p'])) ?? (await host.exec('/sbin/ldconfig', ['-p']));
  if (!result || result.code !== 0) return cache;
  for (const line of result.stdout.split('\n')) {
    // "	libcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.13"
    const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const [, name, flags, file] = m as unknown as [string, string, string, string];
    if (process.arch === 'x64' && !flags.includes('x86-64')) continue;
    cache.set(name, [...(cache.get(name) ?? []), file]);
  }
  return cache;
}

/** Site-packages folders of the Python installs and environments that are usual places for PyTorch. */
async function sitePackages(host: Host): Promise<string[]> {
  const prefixes = ['/usr/local/lib', '/usr/lib', '/opt/conda/lib'];
  const { HOME, VIRTUAL_ENV, CONDA_PREFIX } = host.env;
  if (HOME) prefixes.push(path.join(HOME, '.local/lib'));
  if (VIRTUAL_ENV) prefixes.push(path.join(VIRTUAL_ENV, 'lib'));
  if (CONDA_PREFIX) prefixes.push(path.join(CONDA_PREFIX, 'lib'));
  const found = new Set<string>();
  for (const prefix of prefixes) {
    for (const py of await list(host, prefix)) {
      if (!/^python3(\.\d+)?$/.test(py)) continue;
      for (const kind of ['site-packages', 'dist-packages']) found.add(path.join(prefix, py, kind));
    }
  }
  // The Python on PATH knows its own (a venv or pyenv install the list above misses).
  const py = await host.exec('python3', [
    '-c',
    'import site; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()]))',
  ]);
  if (py?.code === 0) for (const dir of py.stdout.split('\n')) if (dir.trim()) found.add(dir.trim());
  return [...found];
}

/**
 * Library folders of nvidia-* wheels: `nvidia/<component>/lib` (CUDA 12: cuda_runtime, cublas,
 * cudnn, …; CUDA 13 puts the toolkit in one `nvidia/cu13/lib`, cuDNN keeps `nvidia/cudnn/lib`), the
 * driver folder containers mount, and CUDA toolkits under /usr/local.
 */
export async function candidateDirs(host: Host): Promise<string[]> {
  const dirs: string[] = [];
  for (const sp of await sitePackages(host)) {
    for (const component of await list(host, path.join(sp, 'nvidia'))) {
      for (const lib of ['lib', 'lib64']) {
        const dir = path.join(sp, 'nvidia', component, lib);
        if ((await list(host, dir)).length > 0) dirs.push(dir);
      }
    }
  }
  // Containers often mount the driver's user-space libraries (libcuda.so.1) here.
  for (const dir of ['/usr/local/nvidia/lib64', '/usr/local/nvidia/lib']) {
    if ((await list(host, dir)).length > 0) dirs.push(dir);
  }
  for (const name of await list(host, '/usr/local')) {
    if (!/^cuda(-\d+(\.\d+)?)?$/.test(name)) continue;
    for (const lib of ['lib64', 'lib', 'targets/x86_64-linux/lib']) {
      const dir = path.join('/usr/local', name, lib);
      if ((await list(host, dir)).length > 0) dirs.push(dir);
    }
  }
  return dirs;
}

export function ldLibraryPath(host: Host): string[] {
  return (host.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d.length > 0);
}

/** Where each library is: on the loader's path, and/or in one of the candidate folders. */
export async function locateLibraries(host: Host, sonames: string[]): Promise<LibraryLocation[]> {
  const [cache, candidates] = await Promise.all([ldconfigCache(host), candidateDirs(host)]);
  const envDirs = ldLibraryPath(host);
  const out: LibraryLocation[] = [];
  for (const soname of sonames) {
    let loader: LibraryLocation['loader'];
    for (const dir of envDirs) {
      if (!loader && (await isFile(host, path.join(dir, soname))))
        loader = { path: path.join(dir, soname), via: 'LD_LIBRARY_PATH' };
    }
    // The cache can be stale (a library deleted without re-running ldconfig): trust only what exists.
    for (const cached of cache.get(soname) ?? []) {
      if (!loader && (await isFile(host, cached))) loader = { path: cached, via: 'ldconfig' };
    }
    for (const dir of DEFAULT_DIRS) {
      if (!loader && (await isFile(host, path.join(dir, soname))))
        loader = { path: path.join(dir, soname), via: 'default folder' };
    }
    const elsewhere: string[] = [];
    for (const dir of candidates) {
      if (!envDirs.includes(dir) && (await isFile(host, path.join(dir, soname)))) elsewhere.push(dir);
    }
    out.push({ soname, loader, elsewhere });
  }
  return out;
}

/** What each library is, in words. */
export function describeLibrary(soname: string): string {
  const known: [RegExp, string][] = [
    [/^libcudart\./, 'CUDA runtime'],
    [/^libcublasLt\./, 'cuBLASLt'],
    [/^libcublas\./, 'cuBLAS'],
    [/^libcurand\./, 'cuRAND'],
    [/^libcufft\./, 'cuFFT'],
    [/^libcudnn\./, 'cuDNN (loaded on demand by the CUDA provider)'],
    [/^libcuda\.so/, 'CUDA driver API (comes with the NVIDIA driver)'],
    [/^libnvrtc\./, 'NVRTC'],
    [/^libnvinfer/, 'TensorRT'],
  ];
  return known.find(([re]) => re.test(soname))?.[1] ?? soname;
}
