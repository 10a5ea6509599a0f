// Promise wrappers around the command-line DICOM tools the tests use as independent judges
// (dicom3tools dciodvfy, dcmtk dsrdump/dcmdump/storescu), plus a free-port finder.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import dcmjs from 'dcmjs';
import { createServer } from 'node:net';
import path from 'node:path';
import type { SourceInstanceRef } from '../../src/pipeline/findings.ts';

const MR_SERIES = path.resolve(
  import.meta.dirname,
  '../../../shared/dicom-samples/mr/siemens-prisma-t1-sag-series',
);

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunToolOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the tool after this many milliseconds (default 60 s), so a hung tool cannot hang the suite. */
  timeoutMs?: number;
  input?: string | Buffer;
}

/** Runs a command without a shell and collects its output; never rejects on a non-zero exit. */
export function runTool(
  cmd: string,
  args: readonly string[],
  opts: RunToolOptions = {},
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 60_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.on('error', () => undefined); // tool may exit before reading its input
    child.stdin.end(opts.input);
  });
}

export interface DciodvfyReport {
  errors: string[];
  warnings: string[];
  /** Everything dciodvfy printed, for diagnostics. */
  output: string;
  code: number | null;
}

/** Validates a file against its IOD with dicom3tools' dciodvfy ('Error - ...' / 'Warning - ...' lines). */
export async function dciodvfy(path: string): Promise<DciodvfyReport> {
  const r = await runTool('dciodvfy', [path]);
  const output = `${r.stdout}${r.stderr}`;
  const lines = output.split(/\r?\n/);
  return {
    errors: lines.filter((l) => /^\s*Error\b/.test(l)),
    warnings: lines.filter((l) => /^\s*Warning\b/.test(l)),
    output,
    code: r.code,
  };
}

/** dcmtk's dsrdump: renders an SR document tree; exit 0 and no 'E:' lines means it parsed cleanly. */
export function dsrdump(path: string, extraArgs: readonly string[] = []): Promise<ToolResult> {
  return runTool('dsrdump', [...extraArgs, path]);
}

/** dcmtk's dcmdump, for asserting on individual attributes. */
export function dcmdump(path: string, extraArgs: readonly string[] = []): Promise<ToolResult> {
  return runTool('dcmdump', [...extraArgs, path]);
}

/** Ports this process has handed out: the OS may offer a just-closed port again, so never hand one out twice. */
const handedOut = new Set<number>();

/** A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it, release it). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await ephemeralPort();
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** The attributes before Pixel Data of a test file, naturalized by dcmjs (the tests' independent reader). */
/** A Part-10 file's data set, naturalized by dcmjs: the header only unless `withPixelData`. */
export function parseDicom(buf: Buffer, withPixelData = false): Record<string, unknown> {
  const dict = dcmjs.data.DicomMessage.readFile(
    buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
    withPixelData ? {} : { untilTag: '7FE00010' },
  );
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Record<string, unknown>;
}

export function readHeaderSync(file: string): Record<string, unknown> {
  return parseDicom(readFileSync(file));
}

export function studyUidOf(file: string): string {
  return readHeaderSync(file).StudyInstanceUID as string;
}

/** Headers of sample files and the SourceInstanceRef a model result would list for each. */
export function sourcesOf(files: string[]): { header: Record<string, unknown>; ref: SourceInstanceRef }[] {
  return files.map((file) => {
    const header = readHeaderSync(file);
    return {
      header,
      ref: {
        sopClassUid: header.SOPClassUID as string,
        sopInstanceUid: header.SOPInstanceUID as string,
        seriesUid: header.SeriesInstanceUID as string,
        key: instanceKeyOf(header),
        file,
      },
    };
  });
}

/** The object key a header's instance would be stored under (not validated: test files only). */
export function instanceKeyOf(header: Record<string, unknown>): string {
  const uid = (k: string) => String(header[k] as string);
  return `studies/${uid('StudyInstanceUID')}/${uid('SeriesInstanceUID')}/${uid('SOPInstanceUID')}.dcm`;
}

/** Slices `from`..`to` (exclusive) of the real Siemens MR series, in file-name order. */
export function mrSlices(from: number, to: number): string[] {
  return readdirSync(MR_SERIES)
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .slice(from, to)
    .map((f) => path.join(MR_SERIES, f));
}
