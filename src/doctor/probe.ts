import { spawn } from 'node:child_process';

// The last word: create a real ONNX Runtime session with only the CUDA provider. It runs in a child
// process because a broken CUDA install can abort the process that loads it, and because ORT writes
// the real cause (which library failed to load) to stderr while the JavaScript error only says
// "Failed to load shared library".

export interface ProbeResult {
  bound: boolean;
  /** The error thrown by InferenceSession.create, and ORT's own log lines that explain it. */
  error?: string;
  details: string[];
}

const CHILD = `
const [ortDir, model, deviceId] = process.argv.slice(1);
const ort = require(ortDir);
ort.InferenceSession.create(model, {
  executionProviders: [{ name: 'cuda', deviceId: Number(deviceId) }],
  logSeverityLevel: 3,
}).then(
  async (s) => { await s.release(); console.log(JSON.stringify({ bound: true })); },
  (e) => console.log(JSON.stringify({ bound: false, error: String(e && e.message || e) })),
);`;

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** ORT's log lines worth showing: the part after its "FAIL :" or "] " prefix. */
export function explainOrtLog(stderr: string): string[] {
  return stderr
    .replace(ANSI, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /\[E:onnxruntime|error|fail/i.test(l))
    .map((l) => /FAIL : (.*)$/.exec(l)?.[1] ?? l.replace(/^.*?\] /, ''));
}

export function probeCuda(
  ortDir: string,
  modelPath: string,
  deviceId = 0,
  timeoutMs = 120_000,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', CHILD, ortDir, modelPath, String(deviceId)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ bound: false, error: `could not start the probe: ${err.message}`, details: [] });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const details = explainOrtLog(stderr);
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        const parsed = JSON.parse(line) as { bound: boolean; error?: string };
        return resolve({ ...parsed, details });
      } catch {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const why = signal === 'SIGKILL' ? ` (no answer within ${timeoutMs / 1000} s)` : '';
        resolve({
          bound: false,
          error: `the probe process ${how}${why}`,
          details: [...details, ...tail(stderr)],
        });
      }
    });
  });
}

function tail(text: string): string[] {
  return text.replace(ANSI, '').trim().split('\n').slice(-5).filter(Boolean);
}
