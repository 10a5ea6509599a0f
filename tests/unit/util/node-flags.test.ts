import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { NODE_FLAGS } from '../../../src/util/node-flags.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

test('npm start, npm run worker and the Docker image start node with the same V8 flags as the benches and tests', async () => {
  const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  for (const script of ['start', 'worker']) {
    const words = pkg.scripts[script]!.split(/\s+/);
    assert.equal(words[0], 'node', `npm run ${script}`);
    assert.deepEqual(words.slice(1, 1 + NODE_FLAGS.length), [...NODE_FLAGS], `npm run ${script}`);
  }
  const dockerfile = await readFile(path.join(REPO, 'Dockerfile'), 'utf8');
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
  assert.equal(entrypoint[0], 'node');
  assert.deepEqual(entrypoint.slice(1, 1 + NODE_FLAGS.length), [...NODE_FLAGS], 'Dockerfile ENTRYPOINT');
});

test('this node accepts every flag (a renamed or dropped V8 flag stops node with "bad option")', async () => {
  // A flag node does not know stops it with "bad option": this Node must accept every one of them.
  const { stdout } = await promisify(execFile)(process.execPath, [
    ...NODE_FLAGS,
    '-p',
    'process.execArgv.length',
  ]);
  assert.equal(stdout.trim(), String(NODE_FLAGS.length + 2));
});
