// The folder map in README is a promise: stages stand side by side and talk only through the pipeline
// contract and the libraries below them. This test reads every import in src/ and workers/ and fails on
// a circle or a boundary crossed, so the picture stays true after later changes.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const REPO = path.resolve(import.meta.dirname, '../../..');

/** Stages: each its own room. A stage imports no other stage. */
const STAGES = ['ingest', 'routing', 'inference', 'reports', 'delivery', 'admin'];
/** What each library folder may import besides itself (node_modules aside). Stages may import all of them. */
const LIBRARIES: Record<string, string[]> = {
  util: [],
  types: [],
  observability: ['util'],
  config: ['util'],
  dicom: ['util'],
  imaging: ['dicom', 'util', 'observability'],
  storage: ['dicom', 'config', 'util', 'observability'],
  models: ['dicom', 'imaging', 'pipeline', 'util'],
  pipeline: ['dicom', 'storage', 'config', 'observability', 'util'],
  doctor: ['config', 'util', 'observability'],
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .filter((f) => !f.includes(`${path.sep}assembly${path.sep}`));
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => path.resolve(path.dirname(file), s));
}

/** `src/<folder>/…` → folder; src/cli.ts → 'cli'; workers/… → 'workers'. */
function areaOf(file: string): string {
  const rel = path.relative(REPO, file).split(path.sep);
  if (rel[0] === 'workers') return 'workers';
  return rel.length > 2 ? rel[1]! : path.basename(rel[1]!, '.ts');
}

const files = [...sourceFiles(path.join(REPO, 'src')), ...sourceFiles(path.join(REPO, 'workers'))];
const graph = new Map(files.map((f) => [f, importsOf(f)]));

test('every relative import resolves to a file in the tree', () => {
  for (const [file, targets] of graph)
    for (const t of targets)
      assert.ok(
        graph.has(t) || t.endsWith('.d.ts') || t.endsWith('.json'),
        `${path.relative(REPO, file)} imports ${path.relative(REPO, t)}`,
      );
});

test('the import graph has no circle', () => {
  // Tarjan's strongly connected components: any component of more than one module is a circle.
  let counter = 0;
  const indexOf = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const circles: string[][] = [];
  const visit = (v: string): void => {
    indexOf.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!indexOf.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indexOf.get(w)!));
    }
    if (low.get(v) === indexOf.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(path.relative(REPO, w));
      } while (w !== v);
      if (component.length > 1) circles.push(component);
    }
  };
  for (const f of graph.keys()) if (!indexOf.has(f)) visit(f);
  assert.deepEqual(circles, []);
});

test('no stage imports another stage, and libraries import no stage', () => {
  const crossings: string[] = [];
  for (const [file, targets] of graph) {
    const from = areaOf(file);
    for (const t of targets) {
      if (!graph.has(t)) continue;
      const to = areaOf(t);
      if (to === from) continue;
      const entry = from === 'cli' || from === 'workers';
      if ((to === 'cli' || to === 'roles') && !entry)
        crossings.push(
          `${path.relative(REPO, file)} → ${path.relative(REPO, t)} (composition roots are imported only by the entry points)`,
        );
      else if (STAGES.includes(from) && STAGES.includes(to))
        crossings.push(`${path.relative(REPO, file)} → ${path.relative(REPO, t)} (stage to stage)`);
      else if (from in LIBRARIES && !LIBRARIES[from]!.includes(to))
        crossings.push(
          `${path.relative(REPO, file)} → ${path.relative(REPO, t)} (${from} may not import ${to})`,
        );
    }
  }
  assert.deepEqual(crossings, []);
});

test("a stage's events.ts imports only libraries (observability, dicom, …), never a stage or a root", () => {
  const crossings: string[] = [];
  for (const [file, targets] of graph) {
    if (path.basename(file) !== 'events.ts') continue;
    for (const t of targets)
      if (graph.has(t) && !(areaOf(t) in LIBRARIES))
        crossings.push(`${path.relative(REPO, file)} → ${path.relative(REPO, t)}`);
  }
  assert.deepEqual(crossings, []);
});

test('Redis keys are built in one module', () => {
  const builders: string[] = [];
  for (const file of graph.keys()) {
    if (file.endsWith(path.join('pipeline', 'keys.ts'))) continue;
    const text = readFileSync(file, 'utf8');
    if (/`\$\{(this\.)?(opts\.)?prefix\}:/.test(text)) builders.push(path.relative(REPO, file));
  }
  assert.deepEqual(builders, []);
});
