import { z } from 'zod';
import { isValidUid } from '../dicom/uid.ts';
import { MODEL_ID_PATTERN, MODEL_VERSION_PATTERN } from '../pipeline/jobs.ts';
import { isOrientationCode } from '../imaging/conform.ts';

// The schema of models/<id>/model.json. A model is data: everything the worker needs to feed it and
// to report its outputs is said here, so the worker holds no model-specific code.

/** Code Sequence Macro limits (PS3.3 §8.8): Code Value SH, Scheme Designator SH, Code Meaning LO. */
const codedConceptSchema = z
  .object({
    value: z.string().min(1).max(16),
    scheme: z.string().min(1).max(16),
    meaning: z.string().min(1).max(64),
  })
  .strict();

const labelSchema = z
  .object({
    name: z.string().min(1).max(64),
    concept: codedConceptSchema,
    /** A probability at or above this is a positive finding. */
    threshold: z.number().min(0).max(1),
    /** Whether the finding goes into the SR; false keeps a label the model emits but nobody asked for. */
    report: z.boolean(),
  })
  .strict();

/** Photometric interpretations the decoder turns into pixels. */
export const SUPPORTED_PHOTOMETRIC = ['MONOCHROME1', 'MONOCHROME2', 'RGB', 'YBR_FULL'] as const;

const acceptsSchema = z
  .object({
    modality: z.array(z.string().regex(/^[A-Z0-9_]{1,16}$/, 'a DICOM Modality code such as CR or DX')).min(1),
    bodyPart: z
      .array(z.string().regex(/^[A-Z0-9_ ]{1,16}$/, 'a DICOM Body Part Examined value such as CHEST'))
      .min(1)
      .optional(),
    sopClassUid: z
      .array(z.string().refine((v) => isValidUid(v), 'a valid DICOM UID'))
      .min(1)
      .optional(),
    minRows: z.number().int().min(1).max(16384).default(1),
    minColumns: z.number().int().min(1).max(16384).default(1),
    /** 'volume' models: fewest slices that make a volume. */
    minSlices: z.number().int().min(2).max(4096).default(2),
    photometric: z.array(z.enum(SUPPORTED_PHOTOMETRIC)).min(1),
  })
  .strict();

const inputSchema = z
  .object({
    name: z.string().min(1),
    layout: z.literal('NCHW'),
    channels: z.union([z.literal(1), z.literal(3)]),
    height: z.number().int().min(1).max(4096),
    width: z.number().int().min(1).max(4096),
    dtype: z.literal('float32'),
  })
  .strict();

const windowSchema = z.union([
  z.literal('file'),
  z.literal('minmax'),
  z.object({ center: z.number(), width: z.number().min(1) }).strict(),
]);

const preprocessingSchema = z
  .object({
    /** Apply Rescale Slope/Intercept before windowing. */
    modalityLut: z.boolean(),
    /** 'file': the first Window Center/Width in the file, min/max when absent. */
    window: windowSchema,
    invertMonochrome1: z.boolean(),
    resize: z.literal('bilinear'),
    /** Multiplies the 8-bit display value, e.g. 1/255. */
    scale: z.number().positive(),
    mean: z.array(z.number()).min(1).max(3),
    std: z.array(z.number().positive()).min(1).max(3),
  })
  .strict();

const outputsSchema = z
  .object({
    /** Name of the output tensor, shape [N, labels.length]. */
    name: z.string().min(1),
    activation: z.enum(['none', 'softmax', 'sigmoid']),
    /**
     * The labels are mutually exclusive classes (exactly one is true of an image): the report states the
     * most probable class as the finding and lists every class's probability; thresholds are not used.
     * Otherwise each label is an independent finding, present or absent against its threshold. Default:
     * true for softmax, false otherwise.
     */
    exclusive: z.boolean().optional(),
    labels: z.array(labelSchema).min(1).max(256),
  })
  .strict();

/** Input of a 'volume' model: one conformed volume per batch item. */
const volumeInputSchema = z
  .object({
    name: z.string().min(1),
    layout: z.literal('NCDHW'),
    channels: z.literal(1),
    /** The conformed grid: voxels along the volume's first, second and third axis. */
    shape: z.tuple([
      z.number().int().min(8).max(512),
      z.number().int().min(8).max(512),
      z.number().int().min(8).max(512),
    ]),
    dtype: z.literal('float32'),
    /**
     * 'file': first axis fastest (NIfTI on disk, stacked DICOM slices); 'transposed': C order
     * [i][j][k], third axis fastest.
     */
    voxelOrder: z.enum(['file', 'transposed']),
  })
  .strict();

const volumePreprocessingSchema = z
  .object({
    modalityLut: z.boolean(),
    /** Resample to a fixed grid (FreeSurfer "conform"), trilinear, centred on the series. */
    conform: z
      .object({
        spacingMm: z.number().positive().max(10),
        orientation: z
          .string()
          .refine(isOrientationCode, 'three letters from R/L, A/P, S/I, one per axis, such as LIA'),
      })
      .strict(),
    /** Intensity scaling over the whole conformed volume. */
    intensity: z.literal('minmax'),
  })
  .strict();

const segmentLabelSchema = z
  .object({
    /** Class index along the output's channel axis; also the segment's label value in the SEG. */
    classIndex: z.number().int().min(1).max(255),
    name: z.string().min(1).max(64),
    concept: codedConceptSchema,
    /** Whether the label's volume goes into the SR. */
    report: z.boolean(),
  })
  .strict();

const segmentationOutputsSchema = z
  .object({
    /** Name of the output tensor, shape [N, classes, …volume]; class 0 is background. */
    name: z.string().min(1),
    kind: z.literal('segmentation'),
    /** Number of classes on the channel axis, background included; each voxel takes the argmax. */
    classes: z.number().int().min(2).max(256),
    labels: z.array(segmentLabelSchema).min(1).max(255),
  })
  .strict();

/** The relative path of the ONNX file: inside the model folder, no escaping it by '..'. */
const onnxPathSchema = z
  .string()
  .min(1)
  .max(255)
  .refine(
    (p) =>
      !p.startsWith('/') && !p.includes('\\') && !p.split('/').some((part) => part === '..' || part === ''),
    'a path relative to the model folder, without ".." or a leading "/"',
  );

const commonFields = {
  // The patterns keep every inference queue name (inference.<id>@<version>) valid: pipeline/jobs.ts.
  id: z.string().regex(MODEL_ID_PATTERN, 'lower-case letters, digits, ".", "_", "-"'),
  name: z.string().min(1).max(64),
  version: z.string().regex(MODEL_VERSION_PATTERN, 'a version such as 1.0.0'),
  manufacturer: z.string().min(1).max(64),
  description: z.string().min(1).max(2048),
  onnx: onnxPathSchema,
  accepts: acceptsSchema,
  batchLimit: z.number().int().min(1).max(256),
};

const instanceManifestSchema = z
  .object({
    ...commonFields,
    /** Each image is classified on its own, then the scores are aggregated over the series. */
    unit: z.literal('instance'),
    input: inputSchema,
    preprocessing: preprocessingSchema,
    outputs: outputsSchema,
    /** How instance scores combine into one series score. */
    aggregation: z.enum(['max', 'mean']),
  })
  .strict();

const volumeManifestSchema = z
  .object({
    ...commonFields,
    /** The series is assembled into one 3-D volume (sorted along the slice normal) and read whole. */
    unit: z.literal('volume'),
    input: volumeInputSchema,
    preprocessing: volumePreprocessingSchema,
    outputs: segmentationOutputsSchema,
  })
  .strict();

export const manifestSchema = z
  .discriminatedUnion('unit', [instanceManifestSchema, volumeManifestSchema])
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    m.outputs.labels.forEach((label, i) => {
      if (seen.has(label.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['outputs', 'labels', i, 'name'],
          message: 'duplicate label name',
        });
      }
      seen.add(label.name);
    });
    if (m.unit === 'volume') {
      const indices = new Set<number>();
      m.outputs.labels.forEach((label, i) => {
        if (label.classIndex >= m.outputs.classes || indices.has(label.classIndex)) {
          ctx.addIssue({
            code: 'custom',
            path: ['outputs', 'labels', i, 'classIndex'],
            message: `must be unique and below outputs.classes (${m.outputs.classes})`,
          });
        }
        indices.add(label.classIndex);
      });
      return;
    }
    for (const key of ['mean', 'std'] as const) {
      if (m.preprocessing[key].length !== m.input.channels) {
        ctx.addIssue({
          code: 'custom',
          path: ['preprocessing', key],
          message: `needs one value per input channel (${m.input.channels})`,
        });
      }
    }
    if (m.outputs.activation === 'softmax' && m.outputs.labels.length < 2) {
      ctx.addIssue({
        code: 'custom',
        path: ['outputs', 'activation'],
        message: 'softmax needs two or more labels',
      });
    }
    if (m.outputs.exclusive === true && m.outputs.labels.length < 2) {
      ctx.addIssue({
        code: 'custom',
        path: ['outputs', 'exclusive'],
        message: 'exclusive classes need two or more labels',
      });
    }
    if (m.outputs.exclusive === true && m.outputs.activation === 'sigmoid') {
      ctx.addIssue({
        code: 'custom',
        path: ['outputs', 'exclusive'],
        message: 'sigmoid outputs are independent probabilities, not exclusive classes',
      });
    }
  });

/** Whether an instance model's labels are mutually exclusive classes (see outputs.exclusive). */
export function hasExclusiveClasses(m: InstanceManifest): boolean {
  return m.outputs.exclusive ?? m.outputs.activation === 'softmax';
}

export type ModelManifest = z.infer<typeof manifestSchema>;
export type InstanceManifest = z.infer<typeof instanceManifestSchema>;
export type VolumeManifest = z.infer<typeof volumeManifestSchema>;
export type ManifestLabel = z.infer<typeof labelSchema>;
export type SegmentLabel = z.infer<typeof segmentLabelSchema>;
export type ManifestInput = InstanceManifest['input'];
export type Preprocessing = InstanceManifest['preprocessing'];
export type WindowSetting = Preprocessing['window'];

export class ManifestError extends Error {
  override name = 'ManifestError';
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}

/** Validates parsed JSON; the error names the file and each offending field. */
export function parseManifest(file: string, raw: unknown): ModelManifest {
  const result = manifestSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.map(
      (i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`,
    );
    throw new ManifestError(file, `invalid model manifest: ${issues.join('; ')}`);
  }
  return result.data;
}
