/**
 * finetune — fine-tune ImageNet-pretrained MobileNetV2 or VGG16 on a folder of labelled images.
 *
 * One call does the whole job (`fineTune`); every piece it is built from is exported too, so a
 * script can run them one by one: discover → decode → build backbone → load weights → attach head
 * → Trainer.fit (stage 1) → Trainer.unfreeze → Trainer.fit (stage 2) → save.
 */
export { fineTune, resolveOptions, DEFAULTS } from './finetune.js';
export type { FineTuneOptions, FineTuneResult, ResolvedOptions } from './finetune.js';
export { FinetuneError, UsageError } from './errors.js';

// Data
export { discoverLayout } from './data/layout.js';
export { decodeImage, decodeAll } from './data/decode.js';
export type { DecodeOptions } from './data/decode.js';
export { augmentImage } from './data/augment.js';
export { randAugment } from './data/randaugment.js';
export { stratifiedFolds } from './data/folds.js';
export { loadImageData } from './data/image-data.js';
export type { ImageData } from './data/image-data.js';
export { imageBatch } from './data/batches.js';
export type { ImageSet } from './data/batches.js';
export { Rng } from './data/rng.js';
export { makeShapesDataset } from './data/synthetic.js';
export type { AugmentLevel, DatasetLayout, LabelledFile, ResizeMode, SkippedFile } from './data/types.js';

// Backbones
export { backbones, getBackbone, validateBackboneOptions } from './backbones/registry.js';
export { mobileNetV2 } from './backbones/mobilenet_v2.js';
export { vgg16 } from './backbones/vgg16.js';
export { readWeightFile, assignWeights, loadBackboneWeights } from './backbones/weights.js';
export { resolveImagenetWeights } from './backbones/imagenet.js';
export {
  CAFFE_PREPROCESSING,
  MOBILENET_PREPROCESSING,
  channelMean,
  preprocessInto,
  withDatasetMean,
} from './backbones/preprocess.js';
export type { Preprocessing } from './backbones/preprocess.js';
export type { BackboneOptions, BackboneSpec, ImagenetWeightsFile } from './backbones/types.js';

// Training
export { attachHead, HEAD_LAYERS } from './train/head.js';
export { Trainer } from './train/trainer.js';
export type { FitOptions, TrainerData, TrainerOptions } from './train/trainer.js';
export { TrainStep, accuracy, fusedAdam } from './train/train-step.js';
export type { Metric, OptimizerFactory, StepOptimizer, StepTotals, TrainStepParts } from './train/train-step.js';
export { softmaxCrossEntropy } from './train/loss.js';
export type { CrossEntropyOptions, Loss } from './train/loss.js';
export { ActivationCache } from './train/activation-cache.js';
export { crossValidate } from './train/cross-validate.js';
export type { CrossValidation, FoldResult } from './train/cross-validate.js';
export type { ActivationCacheOptions, TrainingActivations } from './train/activation-cache.js';
export { DiskCache, defaultCacheDir } from './cache/disk-cache.js';
export type { DiskCacheOptions, DiskCacheStats } from './cache/disk-cache.js';
export { TrainableLayers, unfreezeLayers, validUnfreezeStarts } from './train/trainable.js';
export { loadCheckpoint, saveCheckpoint } from './train/checkpoint.js';
export type { CheckpointState, LoadedCheckpoint } from './train/checkpoint.js';
export type { BatchLogs, Callback, EpochLogs, NamedTensor, TrainingContext, UnfreezeSpec } from './train/types.js';
/** @deprecated The former name of `Trainer`. */
export { Learner } from './train/learner.js';
export type { LearnerData, LearnerOptions } from './train/learner.js';
export { FusedAdam } from './train/optimizer.js';
export type { AdamOptions } from './train/optimizer.js';
export { solveLinearProbe } from './train/linear-probe.js';
export type { LinearProbeOptions, LinearProbeResult } from './train/linear-probe.js';
export { lbfgs } from './train/lbfgs.js';
export type { LbfgsOptions, LbfgsResult, Objective } from './train/lbfgs.js';
export { WeightAverage, rampedDecay } from './train/ema.js';
export { lrRangeTest, sweepRate, valley, steepest } from './train/lr-find.js';
export type { LrFindOptions, LrFindResult } from './train/lr-find.js';
export { findLearningRate } from './cli/lr-find.js';
export type { LrFindCommandOptions, LrFindOutcome } from './cli/lr-find.js';
export { EarlyStopping, HistoryLogger, ModelCheckpoint, ReduceLROnPlateau, balancedClassWeights } from './train/callbacks.js';
export { classificationMetrics, rocAuc } from './train/metrics.js';
export type { ClassificationMetrics, ClassMetrics } from './train/metrics.js';

// Engine and files
export { BACKEND_ORDER, initEngine, probeBackends } from './engine/backend.js';
export type { KernelCheckFailure, KernelsMode } from './engine/kernel-overrides.js';
export type { BackendName, BackendProbe, BackendRequest, EngineInfo, EngineOptions, GpuAdapterSummary, ProbeBackendsOptions } from './engine/backend.js';
export { SPEED_PROBE_DEFAULTS, speedProbe, speedProbes } from './engine/speed-probe.js';
export { FusedInference } from './engine/fused-inference.js';
export type { SpeedProbeOptions, SpeedProbeOutcome, SpeedProbeResult, SpeedProbesOptions } from './engine/speed-probe.js';
export { loadModelDir, saveModelDir } from './io/model-io.js';
export { saveClassifierModel } from './io/classifier-model.js';
export { EXPORT_FORMATS, exportFormat, exportRun } from './export/index.js';
export type { ExportContext, ExportFormat } from './export/types.js';
export type { Reporter, ProgressTask } from './reporter.js';

// Looking at the data
export { exactCrossSplitDuplicates } from './check/exact.js';
export { checkData } from './check/check.js';
export type { CheckOptions, CheckReport } from './check/check.js';

// Prediction and evaluation
export { predict, checkPredictOptions, decodedBatches, emptyPredictStats, labelRow } from './predict/predict.js';
export type {
  DecodedItem,
  FailedPrediction,
  LabelledPrediction,
  Prediction,
  PredictInputs,
  PredictOptions,
  PredictStats,
} from './predict/predict.js';
export { Classifier, loadClassifier, locateModel, readModelConfig, checkModelConfig, MODEL_FORMAT, type InferenceInfo } from './predict/classifier.js';
export { INFERENCE_ENGINES, type InferenceEngineRequest } from './predict/onnx-engine.js';
export type { LoadClassifierOptions, ModelConfig, ModelLocation } from './predict/classifier.js';
export { ImageDecoder } from './predict/decoder.js';
export { expandInputs, parseShard, shardOf, inShard } from './predict/inputs.js';
export type { ExpandOptions, ExpandStats, InputFile, Shard } from './predict/inputs.js';
export { Sorter } from './predict/sort.js';
export type { SortMode, SortOptions, SortOutcome } from './predict/sort.js';
export { Formatter, OUTPUT_FORMATS, parseCsv, readRecords } from './predict/formats.js';
export type { FormatOptions, OutputFormat, ReadRecord } from './predict/formats.js';
export { openOutputFile, streamSink } from './predict/output.js';
export type { OpenedOutput, OutputSink } from './predict/output.js';
export { evaluate, evaluationTable, topKAccuracy, writeEvaluation } from './predict/evaluate.js';
export type { EvaluateOptions, EvaluateSplit, EvaluationMetrics, EvaluationResult, ScoredFile } from './predict/evaluate.js';
