/**
 * The contract between `finetune export` and each format (one file per format in src/export/).
 * A format reads a finished run folder and writes its artifact to `out` (a file or a folder, as
 * the format says), atomically: written under a temporary name beside `out`, renamed when whole.
 */
export interface ExportContext {
  /** Absolute path of the run folder (holds finetune.json and model/). */
  runDir: string;
  /** Absolute path to write (the CLI has already refused an existing one without --overwrite). */
  out: string;
  /** Progress and notes, one line each. */
  log: (message: string) => void;
}

export interface ExportFormat {
  /** As given to --format: 'tfjs', 'keras', 'onnx', 'web'. */
  readonly name: string;
  /** One line for --help. */
  readonly description: string;
  /** The default output name inside the run folder's parent, e.g. 'model.h5', 'model.onnx', 'web/'. */
  readonly defaultOut: string;
  /** Writes the artifact; returns the files written (paths relative to `out`'s folder). */
  export(context: ExportContext): Promise<string[]>;
}
