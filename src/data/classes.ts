/**
 * Class lists: the 20 PASCAL VOC foreground classes in the standard order, and the 80 MS COCO
 * 2014 categories with their (non-contiguous) ids, plus the mapping between the two naming
 * schemes used by the synthetic COCO tree.
 * @module
 */

/** The 20 VOC foreground classes in the standard order (mask value = index + 1). */
export const VOC_CLASSES: readonly string[] = Object.freeze([
  "aeroplane",
  "bicycle",
  "bird",
  "boat",
  "bottle",
  "bus",
  "car",
  "cat",
  "chair",
  "cow",
  "diningtable",
  "dog",
  "horse",
  "motorbike",
  "person",
  "pottedplant",
  "sheep",
  "sofa",
  "train",
  "tvmonitor",
]);

// The tag modes are config values: defined beside the config schema (src/io/config.ts).
export { VOC_TAG_MODES, type VocTagMode } from "../io/config.ts";

/** One COCO category as found in `instances_*.json`. */
export interface CocoCategory {
  id: number;
  name: string;
  supercategory: string;
}

const COCO_RAW: [number, string, string][] = [
  [1, "person", "person"],
  [2, "bicycle", "vehicle"],
  [3, "car", "vehicle"],
  [4, "motorcycle", "vehicle"],
  [5, "airplane", "vehicle"],
  [6, "bus", "vehicle"],
  [7, "train", "vehicle"],
  [8, "truck", "vehicle"],
  [9, "boat", "vehicle"],
  [10, "traffic light", "outdoor"],
  [11, "fire hydrant", "outdoor"],
  [13, "stop sign", "outdoor"],
  [14, "parking meter", "outdoor"],
  [15, "bench", "outdoor"],
  [16, "bird", "animal"],
  [17, "cat", "animal"],
  [18, "dog", "animal"],
  [19, "horse", "animal"],
  [20, "sheep", "animal"],
  [21, "cow", "animal"],
  [22, "elephant", "animal"],
  [23, "bear", "animal"],
  [24, "zebra", "animal"],
  [25, "giraffe", "animal"],
  [27, "backpack", "accessory"],
  [28, "umbrella", "accessory"],
  [31, "handbag", "accessory"],
  [32, "tie", "accessory"],
  [33, "suitcase", "accessory"],
  [34, "frisbee", "sports"],
  [35, "skis", "sports"],
  [36, "snowboard", "sports"],
  [37, "sports ball", "sports"],
  [38, "kite", "sports"],
  [39, "baseball bat", "sports"],
  [40, "baseball glove", "sports"],
  [41, "skateboard", "sports"],
  [42, "surfboard", "sports"],
  [43, "tennis racket", "sports"],
  [44, "bottle", "kitchen"],
  [46, "wine glass", "kitchen"],
  [47, "cup", "kitchen"],
  [48, "fork", "kitchen"],
  [49, "knife", "kitchen"],
  [50, "spoon", "kitchen"],
  [51, "bowl", "kitchen"],
  [52, "banana", "food"],
  [53, "apple", "food"],
  [54, "sandwich", "food"],
  [55, "orange", "food"],
  [56, "broccoli", "food"],
  [57, "carrot", "food"],
  [58, "hot dog", "food"],
  [59, "pizza", "food"],
  [60, "donut", "food"],
  [61, "cake", "food"],
  [62, "chair", "furniture"],
  [63, "couch", "furniture"],
  [64, "potted plant", "furniture"],
  [65, "bed", "furniture"],
  [67, "dining table", "furniture"],
  [70, "toilet", "furniture"],
  [72, "tv", "electronic"],
  [73, "laptop", "electronic"],
  [74, "mouse", "electronic"],
  [75, "remote", "electronic"],
  [76, "keyboard", "electronic"],
  [77, "cell phone", "electronic"],
  [78, "microwave", "appliance"],
  [79, "oven", "appliance"],
  [80, "toaster", "appliance"],
  [81, "sink", "appliance"],
  [82, "refrigerator", "appliance"],
  [84, "book", "indoor"],
  [85, "clock", "indoor"],
  [86, "vase", "indoor"],
  [87, "scissors", "indoor"],
  [88, "teddy bear", "indoor"],
  [89, "hair drier", "indoor"],
  [90, "toothbrush", "indoor"],
];

/** The 80 COCO 2014 categories in id order (as in `instances_train2014.json`). */
export const COCO_CATEGORIES: readonly CocoCategory[] = Object.freeze(
  COCO_RAW.map(([id, name, supercategory]) => Object.freeze({ id, name, supercategory })),
);

/** VOC names whose COCO category is spelled differently. */
const COCO_SPELLING: Record<string, string> = {
  aeroplane: "airplane",
  diningtable: "dining table",
  motorbike: "motorcycle",
  pottedplant: "potted plant",
  sofa: "couch",
  tvmonitor: "tv",
};

/** COCO category name for each VOC class (same index as {@link VOC_CLASSES}). */
export const VOC_TO_COCO_NAME: readonly string[] = Object.freeze(
  VOC_CLASSES.map((n) => COCO_SPELLING[n] ?? n),
);

/**
 * Maps COCO category ids to contiguous indices 0..K-1 in ascending id order, keeping names.
 * Throws on duplicate ids.
 */
export class CategoryMap {
  /** Category ids in index order. */
  readonly ids: number[];
  /** Category names in index order. */
  readonly names: string[];
  readonly #index = new Map<number, number>();

  constructor(categories: readonly { id: number; name: string }[]) {
    const sorted = [...categories].sort((a, b) => a.id - b.id);
    this.ids = sorted.map((c) => c.id);
    this.names = sorted.map((c) => c.name);
    sorted.forEach((c, i) => {
      if (this.#index.has(c.id)) throw new Error(`duplicate category id ${c.id}`);
      this.#index.set(c.id, i);
    });
  }

  /** Contiguous index of a category id, or -1 when the id is unknown. */
  indexOf(id: number): number {
    return this.#index.get(id) ?? -1;
  }

  /** Number of categories. */
  get size(): number {
    return this.ids.length;
  }
}
