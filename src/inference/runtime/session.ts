import ort from 'onnxruntime-node';
import { errorMessage } from '../../observability/error-message.ts';
import { inferenceEvents } from '../events.ts';

// Execution-provider selection. onnxruntime-node 1.30 THROWS when the CUDA EP libraries are missing
// instead of falling back (../shared/models/README.md), so each provider is tried in order here.

export type ProviderName = 'cuda' | 'cpu';

export interface RuntimeOptions {
  /** Tried in order; the first that binds wins. */
  executionProviders: ProviderName[];
  deviceId: number;
  /** Fail unless the first provider binds (a GPU worker that must not silently run on CPU). */
  strict: boolean;
  /** Micro-batch gathering window. */
  maxWaitMs?: number;
  /** Run each session once on zeros at start (default true). */
  warmUp?: boolean;
  /** ONNX Runtime intra-op threads; unset: its default (one per physical core). */
  intraOpThreads?: number;
}

export const DEFAULT_RUNTIME: RuntimeOptions = {
  executionProviders: ['cuda', 'cpu'],
  deviceId: 0,
  strict: false,
};

export class ExecutionProviderError extends Error {
  override name = 'ExecutionProviderError';
}

export interface ModelSession {
  session: ort.InferenceSession;
  /** The provider the session was created with (the one actually bound). */
  provider: ProviderName;
  /** Why earlier providers were passed over. */
  fallbacks: { provider: ProviderName; error: string }[];
}

function providerConfig(name: ProviderName, deviceId: number): ort.InferenceSession.ExecutionProviderConfig {
  return name === 'cuda' ? { name: 'cuda', deviceId } : 'cpu';
}

export async function createSession(modelPath: string, opts: RuntimeOptions): Promise<ModelSession> {
  if (opts.executionProviders.length === 0)
    throw new ExecutionProviderError('no execution provider configured');
  const fallbacks: ModelSession['fallbacks'] = [];
  for (const [index, provider] of opts.executionProviders.entries()) {
    try {
      const session = await ort.InferenceSession.create(modelPath, {
        executionProviders: [providerConfig(provider, opts.deviceId)],
        graphOptimizationLevel: 'all',
        // ORT prints its own error for a missing CUDA library; ours below says what happened instead.
        logSeverityLevel: 3,
        // Idle intra-op threads sleep instead of spinning: they share the cores with the decode threads
        // (and, in the `all` role, with ingest), which a spinning thread would starve.
        extra: { session: { intra_op: { allow_spinning: '0' } } },
        ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
      });
      inferenceEvents.providerBound(modelPath, provider, opts.deviceId, fallbacks);
      return { session, provider, fallbacks };
    } catch (err) {
      const error = errorMessage(err);
      if (opts.strict && index === 0) {
        throw new ExecutionProviderError(
          `strict mode: execution provider '${provider}' (device ${opts.deviceId}) failed to bind for ${modelPath}: ${error}`,
        );
      }
      inferenceEvents.providerFailed(modelPath, provider, opts.deviceId, error);
      fallbacks.push({ provider, error });
    }
  }
  throw new ExecutionProviderError(
    `no execution provider could run ${modelPath}: ${fallbacks.map((f) => `${f.provider}: ${f.error}`).join('; ')}`,
  );
}

/** Runs once on zeros so the first real job does not pay for lazy initialisation. */
export async function warmUp(
  session: ort.InferenceSession,
  inputName: string,
  shape: readonly number[],
): Promise<void> {
  const size = shape.reduce((a, b) => a * b, 1);
  await session.run({ [inputName]: new ort.Tensor('float32', new Float32Array(size), [...shape]) });
}
