// `config check` output is pasted into tickets and chat. Every secret-bearing setting of the schema is set
// to a distinctive marker; the real CLI must print none of them, while ordinary settings still show.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { REPO } from '../../helpers/gateway.ts';

const run = promisify(execFile);

/** Each marker is long enough for every schema minimum and unique, so a leak names its setting. */
const m = (what: string) => `SECRETMARK-${what}-0123456789`;

const config = {
  dimse: {
    aeTitle: 'CHECKAE',
    peers: [{ aeTitle: 'MODALITY1', requireUserIdentity: true }],
    userIdentity: { users: [{ username: 'dimse-user', password: m('dimse-pass') }] },
  },
  http: {
    host: '127.0.0.1',
    auth: {
      basic: [{ user: 'console-admin', password: m('admin-pass'), role: 'admin' }],
      bearer: [{ name: 'ci-token', token: m('admin-token'), role: 'read' }],
    },
  },
  redis: { url: `redis://cache-user:${m('redis-pass')}@127.0.0.1:6379/0`, prefix: 'checkprefix' },
  stowrs: {
    auth: {
      basic: [{ username: 'stow-user', password: m('stow-pass') }],
      bearer: [m('stow-token')],
    },
  },
  destinations: {
    pacsbasic: {
      kind: 'dicomweb',
      url: `http://url-user:${m('url-pass')}@127.0.0.1:8042/dicom-web`,
      auth: { type: 'basic', user: 'pacs-user', password: m('pacs-pass') },
      headers: {
        Authorization: `Bearer ${m('header-auth')}`,
        'X-Api-Key': m('header-apikey'),
        Cookie: `session=${m('header-cookie')}`,
        'X-Custom-Signature': m('header-other'),
      },
    },
    pacsbearer: {
      kind: 'dicomweb',
      url: `http://127.0.0.1:8042/dicom-web?access_token=${m('query-token')}`,
      auth: { type: 'bearer', token: m('dest-bearer') },
    },
    pacsoauth: {
      kind: 'dicomweb',
      url: 'https://pacs.example.org/dicom-web',
      auth: {
        type: 'oauth2',
        tokenUrl: `https://idp-user:${m('tokenurl-pass')}@idp.example.org/token`,
        clientId: 'gateway-client',
        clientSecret: m('oauth-secret'),
        scope: 'pacs.write',
      },
    },
    pacsdimse: { kind: 'dimse', host: '127.0.0.1', port: 4242, aeTitle: 'ORTHANC' },
  },
  defaultDestination: 'pacsbasic',
  storage: {
    backend: 's3',
    s3: {
      bucket: 'check-bucket',
      endpoint: `http://minio-user:${m('endpoint-pass')}@127.0.0.1:9000`,
      accessKeyId: 'check-key-id',
      secretAccessKey: m('s3-secret'),
    },
  },
};

test('config check prints no secret, whatever its setting, and still prints the rest', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-check-'));
  try {
    const file = path.join(dir, 'gateway.yaml');
    await writeFile(file, stringify(config));
    const { stdout, stderr } = await run(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'src/cli.ts'), 'config', 'check', '--config', file],
      {
        cwd: REPO,
        env: { ...process.env, GATEWAY_ADMIN_TOKEN: m('env-admin-token'), GATEWAY_CONFIG: '' },
      },
    );
    const out = `${stdout}${stderr}`;
    const leaked = [...out.matchAll(/SECRETMARK-([a-z-]+)-0123456789/g)].map((x) => x[1]);
    assert.deepEqual([...new Set(leaked)], [], `secrets printed:\n${out}`);
    // Ordinary settings, user names and header names still show.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking printed JSON
    const printed = JSON.parse(stdout) as Record<string, any>;
    assert.equal(printed.dimse.aeTitle, 'CHECKAE');
    assert.equal(printed.dimse.userIdentity.users[0].username, 'dimse-user');
    assert.equal(printed.http.auth.basic[0].user, 'console-admin');
    assert.equal(printed.http.auth.bearer[0].name, 'ci-token');
    assert.equal(printed.stowrs.auth.basic[0].username, 'stow-user');
    assert.equal(printed.stowrs.auth.bearer.length, 1);
    assert.equal(printed.redis.prefix, 'checkprefix');
    assert.match(printed.redis.url, /^redis:\/\/cache-user:.+@127\.0\.0\.1:6379\/0$/);
    const basic = printed.destinations.pacsbasic;
    assert.match(basic.url, /^http:\/\/url-user:.+@127\.0\.0\.1:8042\/dicom-web$/);
    assert.equal(basic.auth.user, 'pacs-user');
    assert.deepEqual(Object.keys(basic.headers).sort(), [
      'Authorization',
      'Cookie',
      'X-Api-Key',
      'X-Custom-Signature',
    ]);
    assert.equal(printed.destinations.pacsoauth.auth.clientId, 'gateway-client');
    assert.equal(printed.destinations.pacsoauth.auth.scope, 'pacs.write');
    assert.match(printed.destinations.pacsoauth.auth.tokenUrl, /@idp\.example\.org\/token$/);
    assert.equal(printed.destinations.pacsdimse.aeTitle, 'ORTHANC');
    assert.equal(printed.defaultDestination, 'pacsbasic');
    assert.equal(printed.storage.s3.bucket, 'check-bucket');
    assert.equal(printed.storage.s3.accessKeyId, 'check-key-id');
    assert.match(printed.storage.s3.endpoint, /^http:\/\/minio-user:.+@127\.0\.0\.1:9000/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
