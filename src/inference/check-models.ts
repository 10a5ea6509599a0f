import { openModel } from './run-model.ts';
import { loadModels } from '../models/registry.ts';
import { errorMessage } from '../observability/error-message.ts';

/**
 * `models check`: validates every manifest, then opens each ONNX file on the CPU and compares its real
 * inputs and outputs (names, shapes, types) with the manifest. Prints one line per model; true when all pass.
 */
export async function checkModels(
  modelsDir: string,
  out: (line: string) => void = console.log,
): Promise<boolean> {
  let catalogue;
  try {
    catalogue = await loadModels(modelsDir);
  } catch (err) {
    out(`FAIL ${errorMessage(err)}`);
    return false;
  }
  let ok = catalogue.problems.length === 0;
  for (const problem of catalogue.problems) out(`SKIP ${problem}`);
  for (const model of catalogue.models) {
    const { id, version } = model.manifest;
    try {
      // No warm-up: the contract check needs the file's metadata, not a (possibly 256³) run.
      const session = await openModel(model, {
        executionProviders: ['cpu'],
        deviceId: 0,
        strict: true,
        warmUp: false,
      });
      await session.close();
      out(`OK   ${id}@${version} (${model.onnxPath})`);
    } catch (err) {
      ok = false;
      out(`FAIL ${id}@${version}: ${errorMessage(err)}`);
    }
  }
  if (catalogue.models.length === 0 && catalogue.problems.length === 0) {
    out(`FAIL no model folders with a model.json in ${modelsDir}`);
    ok = false;
  }
  return ok;
}
