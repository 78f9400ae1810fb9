/**
 * Option presets of `deno task pipeline --preset NAME`: a partial option object merged under the
 * `--config` file and the flags. `synthetic` is the built-in defaults; `psa-voc` and `psa-coco`
 * are psa's published recipe (github.com/jiwoon-ahn/psa: `train_cls.py`, `infer_cls.py`,
 * `train_aff.py`, `infer_aff.py`, its README) as closely as this project's models allow.
 *
 * The presets are built from one table, {@link PRESET_ROWS}, which also renders the README's
 * presets table ({@link presetTable}; tests/pipeline_real_test.ts checks that the README holds
 * it verbatim), so the documentation cannot drift from the code.
 * @module
 */
import { ConfigError } from "../io/config.ts";

/** The preset names. */
export const PRESET_NAMES = ["synthetic", "psa-voc", "psa-coco"] as const;

/** A preset name. */
export type PresetName = typeof PRESET_NAMES[number];

/** One option a psa preset sets: its value per preset, psa's value and where that comes from. */
export interface PresetRow {
  /** The option's path in the method's options (`train.lr`: the CAM classifier's lr). */
  path: string;
  /** The value in `psa-voc`. */
  voc: unknown;
  /** The value in `psa-coco`. */
  coco: unknown;
  /** psa's value, as its scripts have it. */
  psa: string;
  /** Where psa's value comes from, and how this project differs. */
  source: string;
}

/** VOC 2012 train_aug (psa's `voc12/train_aug.txt`): 10,582 images. */
const VOC_TRAINAUG = 10582;
/** COCO train2014: 82,783 images. */
const COCO_TRAIN = 82783;
/** psa's step count: `len(dataset) // batch * epochs` (train_cls.py, train_aff.py). */
const steps = (n: number, batch: number, epochs: number) => Math.floor(n / batch) * epochs;

/** The psa presets' options, each with its source (the README's presets table). */
export const PRESET_ROWS: readonly PresetRow[] = [
  {
    path: "train.dataset",
    voc: "voc",
    coco: "coco",
    psa: "VOC 2012",
    source: "psa README (VOC only; psa-coco applies the same recipe to COCO 2014: not psa's)",
  },
  {
    path: "train.split",
    voc: "trainaug",
    coco: "train",
    psa: "voc12/train_aug.txt",
    source: "train_cls.py `--train_list` default",
  },
  {
    path: "camsSplit",
    voc: "trainaug",
    coco: "train",
    psa: "voc12/train_aug.txt",
    source: "README step 2: infer_cls.py `--infer_list voc12/train_aug.txt` (AffinityNet's " +
      "labels); here also the split walked for the segmenter's masks (psa trains no segmenter)",
  },
  {
    path: "train.valSplit",
    voc: "val",
    coco: "val",
    psa: "voc12/val.txt",
    source: "train_cls.py `--val_list` default",
  },
  {
    path: "train.model",
    voc: "resnet50",
    coco: "resnet50",
    psa: "ResNet-38 (or VGG-16)",
    source: "psa README; differs: no ResNet-38 here, resnet50 with torchvision ImageNet weights",
  },
  {
    path: "train.outputStride",
    voc: 8,
    coco: 8,
    psa: "8",
    source: "psa's network/resnet38d.py dilates to stride 8 (not checked)",
  },
  {
    path: "train.optimizer",
    voc: "sgd",
    coco: "sgd",
    psa: "SGD (PolyOptimizer)",
    source: "train_cls.py: torchutils.PolyOptimizer, poly decay",
  },
  {
    path: "train.lr",
    voc: 0.1,
    coco: 0.1,
    psa: "0.1",
    source: "train_cls.py `--lr` default and README step 1",
  },
  {
    path: "train.headLrMult",
    voc: 10,
    coco: 10,
    psa: "10 (20 for biases)",
    source: "train_cls.py param groups; differs: one multiplier, bias at 10x",
  },
  {
    path: "train.weightDecay",
    voc: 5e-4,
    coco: 5e-4,
    psa: "5e-4",
    source: "train_cls.py `--wt_dec` default and README step 1",
  },
  {
    path: "train.batch",
    voc: 16,
    coco: 16,
    psa: "16",
    source: "train_cls.py `--batch_size` default and README step 1",
  },
  {
    path: "train.size",
    voc: 448,
    coco: 448,
    psa: "448",
    source: "train_cls.py `--crop_size` default and README step 1",
  },
  {
    path: "train.augment.colorJitter",
    voc: 0.3,
    coco: 0.3,
    psa: "ColorJitter(0.3, 0.3, 0.3, 0.1)",
    source: "train_cls.py transforms; differs: one strength, no hue jitter (not checked)",
  },
  {
    path: "camSteps",
    voc: steps(VOC_TRAINAUG, 16, 15),
    coco: steps(COCO_TRAIN, 16, 15),
    psa: "15 epochs",
    source: "train_cls.py `--max_epoches` 15; converted: 10,582 // 16 x 15 (VOC train_aug), " +
      "82,783 // 16 x 15 (COCO train2014)",
  },
  {
    path: "scales",
    voc: [1, 0.5, 1.5, 2],
    coco: [1, 0.5, 1.5, 2],
    psa: "1, 0.5, 1.5, 2 + flip",
    source: "infer_cls.py `scales=(1, 0.5, 1.5, 2.0)`, flipped copies summed",
  },
  {
    path: "affinity.loAlpha",
    voc: 4,
    coco: 4,
    psa: "4",
    source: "infer_cls.py `--low_alpha` default",
  },
  {
    path: "affinity.hiAlpha",
    voc: 32,
    coco: 32,
    psa: "32",
    source: "infer_cls.py `--high_alpha` default",
  },
  {
    path: "affinityCrf",
    voc: true,
    coco: true,
    psa: "dCRF labels",
    source: "infer_cls.py `_crf_with_alpha` (README step 2)",
  },
  {
    path: "affinity.optimizer",
    voc: "sgd",
    coco: "sgd",
    psa: "SGD (PolyOptimizer)",
    source: "train_aff.py: torchutils.PolyOptimizer",
  },
  {
    path: "affinity.lr",
    voc: 0.07,
    coco: 0.07,
    psa: "0.07 (script default 0.1)",
    source: "psa README step 3 `--lr 0.07`; train_aff.py's default is 0.1",
  },
  {
    path: "affinity.weightDecay",
    voc: 5e-4,
    coco: 5e-4,
    psa: "5e-4",
    source: "train_aff.py `--wt_dec` default and README step 3",
  },
  {
    path: "affinity.batch",
    voc: 8,
    coco: 8,
    psa: "8",
    source: "train_aff.py `--batch_size` default and README step 3",
  },
  {
    path: "affinity.size",
    voc: 256,
    coco: 256,
    psa: "256",
    source: "train_aff.py `--crop_size` default and README step 3 (not 448)",
  },
  {
    path: "affinity.radius",
    voc: 5,
    coco: 5,
    psa: "5",
    source: "train_aff.py `radius=5`",
  },
  {
    path: "affinitySteps",
    voc: steps(VOC_TRAINAUG, 8, 8),
    coco: steps(COCO_TRAIN, 8, 8),
    psa: "8 epochs",
    source: "train_aff.py `--max_epoches` 8; converted: 10,582 // 8 x 8, 82,783 // 8 x 8; " +
      "on camsSplit's CAMs; differs: backbone from the CAM classifier (psa: ImageNet)",
  },
  {
    path: "rw.beta",
    voc: 8,
    coco: 8,
    psa: "8",
    source: "infer_aff.py `--beta` default",
  },
  {
    path: "rw.logt",
    voc: 8,
    coco: 8,
    psa: "8",
    source: "infer_aff.py `--logt` default",
  },
  {
    path: "alpha",
    voc: [16],
    coco: [16],
    psa: "16",
    source: "infer_aff.py `--alpha` default (one exponent, no sweep)",
  },
  {
    path: "seg.optimizer",
    voc: "sgd",
    coco: "sgd",
    psa: "none",
    source: "not psa's (its repo trains no segmenter): DeepLab's SGD (not checked)",
  },
  {
    path: "seg.lr",
    voc: 2.5e-4,
    coco: 2.5e-4,
    psa: "none",
    source: "not psa's: DeepLab-v2's base lr 2.5e-4 (not checked)",
  },
];

/** Sets `path` (dot-separated) in `obj`, creating the objects on the way. */
function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
  o[keys[keys.length - 1]] = structuredClone(value);
}

/**
 * A preset's partial options (merged under the config file and the flags). An unknown name is
 * a ConfigError listing the known ones.
 */
export function presetOptions(name: string): Record<string, unknown> {
  if (!(PRESET_NAMES as readonly string[]).includes(name)) {
    throw new ConfigError(`--preset: unknown preset "${name}"; known: ${PRESET_NAMES.join(", ")}`);
  }
  const out: Record<string, unknown> = {};
  if (name === "synthetic") return out;
  for (const r of PRESET_ROWS) setPath(out, r.path, name === "psa-voc" ? r.voc : r.coco);
  return out;
}

/** A value as a table cell. */
function cell(v: unknown): string {
  return "`" + (Array.isArray(v) ? v.join(", ") : String(v)) + "`";
}

/** The README's presets table (Markdown), from {@link PRESET_ROWS}. */
export function presetTable(): string {
  const lines = [
    "| option | psa-voc | psa-coco | psa | source |",
    "| --- | --- | --- | --- | --- |",
    ...PRESET_ROWS.map((r) =>
      `| \`${r.path}\` | ${cell(r.voc)} | ${cell(r.coco)} | ${r.psa} | ${r.source} |`
    ),
  ];
  return lines.join("\n");
}
