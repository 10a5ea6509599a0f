import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

// The doctor's view of the machine: its files (below `root`, '/' on a real host), its environment
// and the programs it can run. Tests pass a temporary root, a made-up environment and canned program
// output, so every check runs against a host laid out however the test needs.

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Host {
  /** Prefix for every absolute path the checks look at ('/' on a real host). */
  root: string;
  env: NodeJS.ProcessEnv;
  /** Runs a program; null when it is not installed. */
  exec(cmd: string, args: string[]): Promise<ExecResult | null>;
}

export function realHost(): Host {
  return {
    root: '/',
    env: process.env,
    exec: (cmd, args) =>
      new Promise((resolve) => {
        execFile(cmd, args, { timeout: 20_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
          if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') return resolve(null);
          const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          resolve({ code, stdout: String(stdout), stderr: String(stderr) });
        });
      }),
  };
}

/** An absolute host path as seen through `root`. */
export function onHost(host: Host, p: string): string {
  return path.join(host.root, p);
}

export async function isFile(host: Host, p: string): Promise<boolean> {
  return (await stat(onHost(host, p)).catch(() => null))?.isFile() ?? false;
}

export async function readText(host: Host, p: string): Promise<string | null> {
  return readFile(onHost(host, p), 'utf8').catch(() => null);
}

/** Names in a host folder; empty when it does not exist. */
export async function list(host: Host, dir: string): Promise<string[]> {
  return readdir(onHost(host, dir)).catch(() => []);
}
