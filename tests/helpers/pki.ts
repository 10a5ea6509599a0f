// A throwaway PKI for TLS tests, made with openssl for this run: a CA and certificates it signed (RSA 2048,
// one day). The certificate named 'server' is valid for 127.0.0.1 and localhost.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Writes ca.pem/ca.key and <name>.pem/<name>.key for each name into `dir` (subject CN aigw-test-<name>). */
export async function makePki(dir: string, names: readonly string[]): Promise<void> {
  const openssl = (args: string[]) => run('openssl', args, { cwd: dir });
  await openssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=aigw-test-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
  ]);
  await writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of names) {
    await openssl([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=aigw-test-${who}`,
      '-keyout',
      `${who}.key`,
      '-out',
      `${who}.csr`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      ...(who === 'server' ? ['-extfile', 'server.ext'] : []),
      '-out',
      `${who}.pem`,
    ]);
  }
}
