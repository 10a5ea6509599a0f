import type { InstanceManifest, ModelManifest } from '../models/manifest.ts';
import { decodeImage, type PixelHeader } from '../imaging/decode.ts';
import { withNativeGreyFrame } from '../imaging/native-frame.ts';
import type { SampleAllocator } from '../imaging/kernels/grey-sample.ts';
import { preprocess, preprocessGreyFrame } from './preprocess.ts';

// One instance file → one input sample of an instance model (first frame). Native greyscale files take
// the fast path (native-frame.ts); everything else, and every error message, comes from decode.ts.

export type InstanceInput = { sample: Float32Array } | { rejected: string };

/**
 * Whether an image is one the manifest says the model can read; the reason when not. A volume model
 * (`singleSample`) also needs grey, one-sample images.
 */
export function rejectReason(
  m: Pick<ModelManifest, 'accepts'>,
  image: Pick<PixelHeader, 'photometric' | 'rows' | 'columns' | 'samplesPerPixel'>,
  singleSample = false,
): string | undefined {
  const { accepts } = m;
  if (!(accepts.photometric as string[]).includes(image.photometric))
    return `photometric ${image.photometric} not accepted`;
  if (singleSample && image.samplesPerPixel !== 1) return 'a volume needs single-sample (grey) images';
  if (image.rows < accepts.minRows || image.columns < accepts.minColumns) {
    return `${image.rows}×${image.columns} is smaller than ${accepts.minRows}×${accepts.minColumns}`;
  }
  return undefined;
}

/**
 * Throws DecodeError when the file cannot be decoded. `output` gives the array a fast-path sample is
 * written to (decode threads recycle them).
 */
export async function instanceInput(
  file: string,
  m: InstanceManifest,
  output?: SampleAllocator,
): Promise<InstanceInput> {
  const modalityLut = m.preprocessing.modalityLut;
  const fast = withNativeGreyFrame(file, (frame): InstanceInput => {
    const reason = rejectReason(m, frame.header);
    return reason ? { rejected: reason } : { sample: preprocessGreyFrame(frame, m, modalityLut, output) };
  });
  if (fast) return fast;
  const image = await decodeImage(file, { frames: 'first', modalityLut });
  const reason = rejectReason(m, image);
  return reason ? { rejected: reason } : { sample: preprocess(image, m) };
}
