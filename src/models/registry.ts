import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { uidFromName } from '../dicom/uid.ts';
import { errorMessage } from '../util/error-message.ts';
import type { ModelIdentity } from '../pipeline/findings.ts';
import { ManifestError, parseManifest, type ModelManifest } from './manifest.ts';

export const MANIFEST_FILE = 'model.json';

/** Units the worker runs: every unit the schema names. */
const IMPLEMENTED_UNITS = new Set<ModelManifest['unit']>(['instance', 'volume']);

export interface LoadedModel {
  manifest: ModelManifest;
  identity: ModelIdentity;
  /** The model folder. */
  dir: string;
  manifestPath: string;
  /** Absolute path of the ONNX file (it may be a symlink to weights kept elsewhere). */
  onnxPath: string;
}

export interface ModelCatalogue {
  models: LoadedModel[];
  /** Models skipped and why (missing weights, unsupported unit); not fatal. */
  problems: string[];
}

export function modelIdentity(m: ModelManifest): ModelIdentity {
  return {
    id: m.id,
    name: m.name,
    version: m.version,
    manufacturer: m.manufacturer,
    uid: uidFromName(`model:${m.id}@${m.version}`),
  };
}

/**
 * Reads every `<modelsDir>/<folder>/model.json`. An invalid manifest throws ManifestError (a config
 * mistake the admin must fix); a model whose weights are absent is skipped and reported in `problems`,
 * so one missing download does not stop the others.
 */
export async function loadModels(modelsDir: string): Promise<ModelCatalogue> {
  const root = path.resolve(modelsDir);
  const problems: string[] = [];
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { models: [], problems: [`models directory ${root} does not exist`] };
    }
    throw err;
  }
  const models: LoadedModel[] = [];
  const byId = new Map<string, string>();
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.name.startsWith('.')) continue;
    const dir = path.join(root, entry.name);
    // Admins often symlink model folders kept elsewhere: follow links, skip plain files.
    const isDir =
      entry.isDirectory() ||
      (entry.isSymbolicLink() && (await stat(dir).catch(() => undefined))?.isDirectory());
    if (!isDir) continue;
    const manifestPath = path.join(dir, MANIFEST_FILE);
    let text: string;
    try {
      text = await readFile(manifestPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // not a model folder
      throw err;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ManifestError(manifestPath, `not valid JSON: ${errorMessage(err)}`);
    }
    const manifest = parseManifest(manifestPath, raw);
    const previous = byId.get(manifest.id);
    if (previous)
      throw new ManifestError(manifestPath, `id: '${manifest.id}' is already used by ${previous}`);
    byId.set(manifest.id, manifestPath);

    if (!IMPLEMENTED_UNITS.has(manifest.unit)) {
      problems.push(`${manifest.id}: unit '${manifest.unit}' is not implemented yet; model skipped`);
      continue;
    }
    const onnxPath = path.join(dir, manifest.onnx);
    const weights = await stat(onnxPath).catch(() => undefined); // follows symlinks
    if (!weights?.isFile()) {
      problems.push(
        `${manifest.id}: weights file ${onnxPath} is missing (place or symlink the ONNX file there); model skipped`,
      );
      continue;
    }
    models.push({ manifest, identity: modelIdentity(manifest), dir, manifestPath, onnxPath });
  }
  return { models, problems };
}
