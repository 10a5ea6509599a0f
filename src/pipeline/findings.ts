// What inference hands to the report builder: the contract between the inference and reports stages.

/** A coded concept (PS3.3 Code Sequence Macro): value, scheme designator, meaning. */
export interface CodedConcept {
  value: string;
  scheme: string;
  meaning: string;
}

/** One independent label (sigmoid): present or absent against its threshold. */
export interface ClassificationFinding {
  kind: 'classification';
  label: string;
  concept: CodedConcept;
  probability: number;
  threshold: number;
  /** probability >= threshold */
  positive: boolean;
}

/** Each class with its probability, as an exclusive classification lists them. */
export interface ClassProbability {
  label: string;
  concept: CodedConcept;
  probability: number;
}

/**
 * The result of a classifier whose classes are mutually exclusive (softmax: exactly one is true of the
 * image): the most probable class is the finding, stated as present; every class's probability is given.
 */
export interface ExclusiveClassificationFinding {
  kind: 'exclusive-classification';
  /** The most probable class. */
  label: string;
  concept: CodedConcept;
  probability: number;
  /** The classes the report lists, in output order, the most probable among them. */
  classes: ClassProbability[];
}

export interface VolumeFinding {
  kind: 'volume';
  label: string;
  concept: CodedConcept;
  /** Millilitres. */
  volumeMl: number;
  voxelCount: number;
}

export type Finding = ClassificationFinding | ExclusiveClassificationFinding | VolumeFinding;

export interface ModelIdentity {
  id: string;
  name: string;
  version: string;
  manufacturer: string;
  /** Device Observer UID: stable per model id + version. */
  uid: string;
}

/** One source image the model read. */
export interface SourceInstanceRef {
  sopClassUid: string;
  sopInstanceUid: string;
  seriesUid: string;
  /** The instance's object key in the store (objectKey.instance). */
  key: string;
  /**
   * A local file with its bytes, materialised by the inference processor (ObjectStore.localCopy) for the
   * decoders and the SR builder (which reads patient/study attributes from the first one). Valid only while
   * the job runs, on this machine; never stored nor put in job data.
   */
  file: string;
  /** 1-based frame of a multi-frame image used as one slice of a volume; absent for a whole image. */
  frameNumber?: number;
}

/** A label map for a DICOM SEG, in the geometry of the source images (one slice per source instance). */
export interface SegmentationResult {
  rows: number;
  columns: number;
  /**
   * One label map per entry of ModelResult.sources (an image, or a frame of one), same order; values
   * are segment label values.
   */
  slices: Uint8Array[];
  segments: {
    labelValue: number;
    label: string;
    /** Segmented Property Type (what the segment is). */
    concept: CodedConcept;
    /** Segmented Property Category; default SCT 91723000 Anatomical structure. */
    category?: CodedConcept;
  }[];
}

export interface ModelResult {
  model: ModelIdentity;
  findings: Finding[];
  sources: SourceInstanceRef[];
  /** Execution provider the session actually bound ('cuda' or 'cpu'). */
  provider: string;
  inferenceMs: number;
  /** Present for segmentation models. */
  segmentation?: SegmentationResult;
  /** Images the model could not use, each as `<SOPInstanceUID>: <why>`. */
  skipped?: string[];
}

/** A derived object (SR or SEG) written for a run, ready for delivery. */
export interface WrittenObject {
  kind: 'sr' | 'seg';
  sopInstanceUid: string;
  /** Its key in the object store (objectKey.outbox), where it is kept until every delivery has landed. */
  key: string;
}

/** One model's result for one run of a study, as the reports stage receives it. */
export interface ResultToReport {
  result: ModelResult;
  studyUid: string;
  modelId: string;
  modelVersion: string;
  run: number;
}

/** The reports stage as the inference stage sees it: results in, written objects (SR first) out. */
export type ResultWriter = (input: ResultToReport) => Promise<WrittenObject[]>;

/**
 * The reports stage cannot build its object from this result and these sources, and never will: the
 * build is a function of its input, so every try fails the same way. The inference stage fails the job
 * once, with this reason, instead of retrying it.
 */
export class UnbuildableReportError extends Error {
  override name = 'UnbuildableReportError';
}
