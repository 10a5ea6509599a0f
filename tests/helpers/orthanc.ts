// A real Orthanc (Debian package, DICOMweb plugin) per test: free loopback ports, temp storage,
// generated configuration. It plays the PACS in integration and end-to-end tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './dicom-tools.ts';
import { waitFor } from './gateway.ts';
import { multipartParts } from './sr-content.ts';

export const ORTHANC_BINARY = '/usr/sbin/Orthanc';
export const DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';

export interface OrthancModality {
  aet: string;
  host: string;
  port: number;
}

export interface StartOrthancOptions {
  /** Remote DICOM nodes Orthanc may talk to (C-STORE/C-ECHO/C-FIND targets), keyed by name. */
  modalities?: Record<string, OrthancModality>;
  /** Orthanc's own AE title (default ORTHANC). */
  aet?: string;
  /** Turns HTTP basic authentication on with this single user. */
  auth?: { user: string; password: string };
  /** Extra top-level configuration merged over the generated one (e.g. LuaScripts, StableAge). */
  extraConfig?: Record<string, unknown>;
  /** How long to wait for /system to answer (default 30 s). */
  startTimeoutMs?: number;
  /** Extra environment variables for the Orthanc process (e.g. TCP_NODELAY=1, which DCMTK reads). */
  env?: Record<string, string>;
}

export interface OrthancInstance {
  httpPort: number;
  dicomPort: number;
  aet: string;
  /** http://127.0.0.1:<httpPort> */
  url: string;
  /** http://127.0.0.1:<httpPort>/dicom-web */
  dicomwebUrl: string;
  /** Headers to add to raw requests (Authorization when auth is on). */
  authHeaders: Record<string, string>;
  /** Temp folder holding configuration, storage and orthanc.log. */
  dir: string;
  /** The running Orthanc process's id (undefined while halted). */
  readonly pid: number | undefined;
  logPath: string;
  /** fetch() against the REST API; `p` starts with '/'. Adds the auth header. */
  rest(p: string, init?: RequestInit): Promise<Response>;
  /** GET + JSON parse, throwing on a non-2xx answer. */
  restJson<T = unknown>(p: string): Promise<T>;
  /** Stops Orthanc and starts it again on the same ports and storage (data survives). */
  restart(): Promise<void>;
  /** Stops the Orthanc process but keeps ports and storage, for outage tests; resume() starts it again. */
  halt(): Promise<void>;
  resume(): Promise<void>;
  /** Stops Orthanc and deletes its temp folder. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startOrthanc(opts: StartOrthancOptions = {}): Promise<OrthancInstance> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-orthanc-'));
  const storage = path.join(dir, 'storage');
  await mkdir(storage);
  const logPath = path.join(dir, 'orthanc.log');
  const configPath = path.join(dir, 'orthanc.json');
  const aet = opts.aet ?? 'ORTHANC';
  const [httpPort, dicomPort] = await twoFreePorts();

  const config: Record<string, unknown> = {
    Name: `aigw-test-${path.basename(dir)}`,
    StorageDirectory: storage,
    IndexDirectory: storage,
    Plugins: [DICOMWEB_PLUGIN],
    HttpServerEnabled: true,
    HttpPort: httpPort,
    // Orthanc 1.10 has no HTTP bind-address option; with RemoteAccessAllowed=false it refuses
    // every request that does not come from the local host.
    RemoteAccessAllowed: false,
    AuthenticationEnabled: opts.auth !== undefined,
    RegisteredUsers: opts.auth ? { [opts.auth.user]: opts.auth.password } : {},
    DicomServerEnabled: true,
    DicomAet: aet,
    DicomPort: dicomPort,
    DicomCheckCalledAet: false,
    DicomCheckModalityHost: false,
    DicomAlwaysAllowStore: true,
    DicomAlwaysAllowEcho: true,
    DicomModalities: Object.fromEntries(
      Object.entries(opts.modalities ?? {}).map(([name, m]) => [name, [m.aet, m.host, m.port]]),
    ),
    DicomWeb: { Enable: true, Root: '/dicom-web/', EnableWado: true, Ssl: false },
    SaveJobs: false,
    // Orthanc "Name" above and no remote inventory: keep the test peer self-contained.
    OrthancPeers: {},
    ...opts.extraConfig,
  };
  await writeFile(configPath, JSON.stringify(config, null, 2));

  const url = `http://127.0.0.1:${httpPort}`;
  const authHeaders: Record<string, string> = opts.auth
    ? { Authorization: `Basic ${Buffer.from(`${opts.auth.user}:${opts.auth.password}`).toString('base64')}` }
    : {};
  const timeoutMs = opts.startTimeoutMs ?? 30_000;

  let child: ChildProcess | undefined;
  let logStream: WriteStream | undefined;
  let stopped = false;

  const rest = (p: string, init: RequestInit = {}): Promise<Response> => {
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(authHeaders)) if (!headers.has(k)) headers.set(k, v);
    return fetch(`${url}${p}`, { ...init, headers, signal: init.signal ?? AbortSignal.timeout(30_000) });
  };

  const launch = async (): Promise<void> => {
    logStream = createWriteStream(logPath, { flags: 'a' });
    await new Promise<void>((resolve, reject) => {
      logStream!.once('open', () => resolve());
      logStream!.once('error', reject);
    });
    const proc = spawn(ORTHANC_BINARY, [configPath], {
      cwd: dir,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', logStream, logStream],
    });
    child = proc;
    // A crashed or interrupted test run must not leave Orthanc behind.
    const reap = (): void => void proc.kill('SIGKILL');
    process.once('exit', reap);
    proc.once('exit', () => process.removeListener('exit', reap));
    let exited: string | undefined;
    proc.once('exit', (code, signal) => {
      exited = `exited with code ${code} signal ${signal}`;
    });
    proc.once('error', (e) => {
      exited = `failed to spawn: ${e.message}`;
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exited !== undefined) throw new Error(`Orthanc ${exited}\n${await logTail(logPath)}`);
      try {
        const res = await rest('/system', { signal: AbortSignal.timeout(2_000) });
        if (res.ok) {
          await res.arrayBuffer();
          return;
        }
        await res.arrayBuffer();
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await terminate();
        throw new Error(`Orthanc did not answer /system within ${timeoutMs} ms\n${await logTail(logPath)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const terminate = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    const ls = logStream;
    logStream = undefined;
    if (ls) await new Promise<void>((r) => ls.end(() => r()));
  };

  try {
    await launch();
  } catch (e) {
    await terminate();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  return {
    httpPort,
    dicomPort,
    aet,
    url,
    dicomwebUrl: `${url}/dicom-web`,
    authHeaders,
    dir,
    logPath,
    get pid() {
      return child?.pid;
    },
    rest,
    async restJson<T>(p: string): Promise<T> {
      const res = await rest(p, { headers: { Accept: 'application/json' } });
      const text = await res.text();
      if (!res.ok) throw new Error(`GET ${p} -> ${res.status}: ${text.slice(0, 500)}`);
      return JSON.parse(text) as T;
    },
    async restart(): Promise<void> {
      if (stopped) throw new Error('Orthanc was stopped');
      await terminate();
      await launch();
    },
    async halt(): Promise<void> {
      if (stopped) throw new Error('Orthanc was stopped');
      await terminate();
    },
    async resume(): Promise<void> {
      if (stopped) throw new Error('Orthanc was stopped');
      if (child) return;
      await launch();
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      await terminate();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function twoFreePorts(): Promise<[number, number]> {
  const a = await freePort();
  let b = await freePort();
  while (b === a) b = await freePort();
  return [a, b];
}

async function logTail(logPath: string, lines = 40): Promise<string> {
  try {
    const text = await readFile(logPath, 'utf8');
    return `--- orthanc.log (last ${lines} lines) ---\n${text.split('\n').slice(-lines).join('\n')}`;
  } catch {
    return '(no Orthanc log)';
  }
}

/**
 * Waits for a series of `modality` whose description matches in a study held by Orthanc, finds it by
 * QIDO-RS and downloads its one instance by WADO-RS, as a viewer would.
 */
export async function fetchSeriesInstance(
  orthanc: OrthancInstance,
  studyUid: string,
  modality: string,
  seriesDescription: RegExp,
): Promise<Buffer> {
  const series = await waitFor(`a ${modality} series in study ${studyUid}`, async () => {
    const res = await orthanc.rest(
      `/dicom-web/studies/${studyUid}/series?Modality=${modality}&includefield=0008103E`,
    );
    if (!res.ok) return undefined;
    const list = (await res.json()) as Record<string, { Value?: unknown[] }>[];
    return list.find((s) => seriesDescription.test(String(s['0008103E']?.Value?.[0] ?? '')));
  });
  const seriesUid = String(series['0020000E']!.Value![0]);
  const instances = (await (
    await orthanc.rest(`/dicom-web/studies/${studyUid}/series/${seriesUid}/instances`)
  ).json()) as Record<string, { Value?: unknown[] }>[];
  if (instances.length !== 1)
    throw new Error(`${instances.length} instances in the ${modality} series, not 1`);
  const sopUid = String(instances[0]!['00080018']!.Value![0]);
  const res = await fetch(
    `${orthanc.dicomwebUrl}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}`,
    {
      headers: { ...orthanc.authHeaders, Accept: 'multipart/related; type="application/dicom"' },
    },
  );
  if (res.status !== 200) throw new Error(`WADO-RS ${res.status}`);
  const parts = multipartParts(Buffer.from(await res.arrayBuffer()), res.headers.get('content-type') ?? '');
  if (parts.length !== 1) throw new Error(`WADO-RS answered ${parts.length} parts`);
  return parts[0]!;
}
