"""Writers of tiny dataset trees in the official on-disk formats, for tests.

Each ``make_*`` function writes into a given directory and returns what it wrote (counts, labels),
so tests can check the readers against the generator rather than against hard-coded guesses. The
class counts match the paper's splits: CUB 200 classes (100 train), Cars 196 (98 train).
``make_oml_csv`` writes the table format of open-metric-learning (OML).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

from eif.utils.io import write_bytes, write_text, write_with


def write_image(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> None:
    """A random image of ``width`` x ``height`` in ``mode``; JPEG or PNG by the file suffix."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=90)
    write_bytes(path, buf.getvalue())


def _size(k: int) -> tuple[int, int]:
    """Varying tiny sizes between 8x8 and 16x12."""
    return 8 + (k * 3) % 9, 8 + (k * 5) % 5


def cub_images_per_class(c: int) -> int:
    """Images in CUB fixture class ``c`` (0-based): 1, 2, 3, 1, 2, 3, ..."""
    return 1 + c % 3


def make_cub(root: Path, num_classes: int = 200) -> dict[str, np.ndarray]:
    """CUB-200-2011: images.txt, image_class_labels.txt, classes.txt, train_test_split.txt, images/.

    One grayscale JPEG (class 0) and one AppleDouble ``._junk.jpg`` (class 1, not an image) are
    included. Returns ``labels`` (0-based class of every real image, in sorted path order).
    """
    root = Path(root)
    images, class_lines, labels = [], [], []
    img_id = 0
    for c in range(num_classes):
        folder = f"{c + 1:03d}.Bird_{c + 1:03d}"
        class_lines.append(f"{c + 1} {folder}")
        for j in range(cub_images_per_class(c)):
            img_id += 1
            rel = f"{folder}/Bird_{c + 1:03d}_{j + 1:04d}_{img_id}.jpg"
            w, h = _size(img_id)
            write_image(root / "images" / rel, w, h, seed=img_id, mode="L" if img_id == 1 else "RGB")
            images.append((img_id, rel, c + 1))
            labels.append(c)
    write_bytes(root / "images" / f"{2:03d}.Bird_{2:03d}" / "._junk.jpg", b"\x00\x05\x16\x07 not a jpeg")
    write_text(root / "images.txt", "".join(f"{i} {rel}\n" for i, rel, _ in images))
    write_text(root / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, _, c in images))
    write_text(root / "classes.txt", "".join(f"{line}\n" for line in class_lines))
    write_text(root / "train_test_split.txt", "".join(f"{i} {i % 2}\n" for i, _, _ in images))
    return {"labels": np.asarray(labels, dtype=np.int64)}


def cars_images_per_class(c: int) -> int:
    """Images in Cars fixture class ``c`` (0-based): 2, 1, 2, 1, ..."""
    return 2 - c % 2


def make_cars(root: Path, num_classes: int = 196) -> dict[str, np.ndarray]:
    """Cars196: ``cars_annos.mat`` (struct array ``annotations`` + ``class_names``) and ``car_ims/``.

    Images are listed interleaved across classes (not sorted by class), like the real file's
    mix, and the ``test`` flag alternates so a reader that used it would get other counts.
    Returns ``labels`` (0-based, in annotation order) and ``paths`` (relative).
    """
    root = Path(root)
    per_class = [cars_images_per_class(c) for c in range(num_classes)]
    # Interleave: all first images of every class, then all second images.
    classes = [c for j in range(max(per_class)) for c in range(num_classes) if per_class[c] > j]
    n = len(classes)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    ann = np.zeros((1, n), dtype=[(f, "O") for f in fields])
    paths = []
    for k, c in enumerate(classes):
        rel = f"car_ims/{k + 1:06d}.jpg"
        w, h = _size(k)
        write_image(root / rel, w, h, seed=1000 + k)
        bbox = (np.uint8(1), np.uint8(1), np.uint16(w), np.uint16(h))
        ann[0, k] = (rel, *bbox, np.uint8(c + 1), np.uint8(k % 2))
        paths.append(rel)
    names = np.empty((1, num_classes), dtype=object)
    names[0, :] = [f"Make Model {c + 1} 2012" for c in range(num_classes)]
    write_with(
        root / "cars_annos.mat",
        lambda p: scipy.io.savemat(str(p), {"annotations": ann, "class_names": names}),
    )
    return {"labels": np.asarray(classes, dtype=np.int64), "paths": np.asarray(paths)}


def make_inshop(root: Path, train_items: int = 12, test_items: int = 9) -> dict[str, np.ndarray]:
    """In-Shop: ``Eval/list_eval_partition.txt`` (count line, header, rows) and ``img/`` JPEGs.

    Train items have odd ids 1, 3, ... with 1-3 images; test items have even ids with 1-2 query
    and 1-2 gallery images. Rows are written in item order, statuses mixed as in the real file.
    Returns the item id (int) and status of every row.
    """
    root = Path(root)
    rows: list[tuple[str, int, str]] = []
    train_ids = [2 * k + 1 for k in range(train_items)]
    test_ids = [2 * k + 2 for k in range(test_items)]
    for item in sorted(train_ids + test_ids):
        k = item // 2
        if item % 2:
            statuses = ["train"] * (1 + k % 3)
        else:
            statuses = ["query"] * (1 + k % 2) + ["gallery"] * (1 + (k // 2) % 2)
        for j, status in enumerate(statuses):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{j + 1:02d}_{j % 4 + 1}_front.jpg"
            w, h = _size(len(rows))
            write_image(root / rel, w, h, seed=5000 + len(rows))
            rows.append((rel, item, status))
    body = "".join(f"{rel:<60}id_{item:08d}      {status}\n" for rel, item, status in rows)
    write_text(
        root / "Eval" / "list_eval_partition.txt",
        f"{len(rows)}\nimage_name item_id evaluation_status\n{body}",
    )
    return {
        "items": np.asarray([r[1] for r in rows], dtype=np.int64),
        "status": np.asarray([r[2] for r in rows]),
    }


def make_imagefolder(
    root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat", "dog", "eel", "fox"), per_class: int = 3
) -> dict[str, int]:
    """``root/<class>/<image>``: JPEGs plus one RGBA PNG and one grayscale JPEG in the first class."""
    root = Path(root)
    for ci, name in enumerate(classes):
        for j in range(per_class):
            k = ci * per_class + j
            suffix, mode = (".png", "RGBA") if k == 0 else (".jpg", "L" if k == 1 else "RGB")
            w, h = _size(k)
            write_image(root / name / f"img_{j:03d}{suffix}", w, h, seed=9000 + k, mode=mode)
    write_text(root / classes[0] / "notes.txt", "not an image\n")
    return {name: per_class for name in classes}


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 2048 + array.ndim  # 0x00 0x00 0x08 (uint8) <ndim>
    header = np.asarray([magic, *array.shape], dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_fashion_idx(
    root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST IDX files (``.gz`` or raw) with random 28x28 images, labels cycling 0..9.

    Returns the pooled (train then t10k) ``images`` uint8 (N, 28, 28) and ``labels`` int64 (N,).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pooled_x, pooled_y = [], []
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = ((np.arange(n) * 7 + (0 if split == "train" else 3)) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            data = _idx_bytes(arr)
            name = f"{split}-{kind}"
            if gz:
                write_bytes(root / f"{name}.gz", gzip.compress(data, mtime=0))
            else:
                write_bytes(root / name, data)
        pooled_x.append(x)
        pooled_y.append(y.astype(np.int64))
    return {"images": np.concatenate(pooled_x), "labels": np.concatenate(pooled_y)}


def make_oml_csv(
    root: Path,
    flags: str = "separate",
    bboxes: bool = False,
    category: bool = False,
    train_classes: int = 4,
    test_classes: int = 3,
    per_class: int = 4,
    csv: str = "df.csv",
) -> dict[str, np.ndarray]:
    """An OML table ``root/<csv>`` (written by pandas, as OML's converters do) and its images under
    ``root/images/`` (RGB JPEGs between 18x14 and 24x20 pixels).

    Labels are OML ids, neither 0-based nor in file order: ``10 + 3 * ((5 * c) % n)`` for class ``c``
    of ``n``; classes ``0..train_classes-1`` are train, the rest validation. Rows interleave classes and
    splits (image 0 of every class, then image 1, ...). Train rows leave ``is_query``/``is_gallery``
    empty. ``flags`` on validation rows: ``separate`` (InShop: the first half of a class's images are
    queries, the rest gallery), ``both`` (CUB, Cars, SOP: every row is query and gallery), ``mixed``
    (image 0 both, the others one of them). ``bboxes``: the x_1, x_2, y_1, y_2 columns; every third
    row has none (empty cells, so the coordinates are written as floats, ``3.0``). ``category``: a
    ``category`` column, ``shoes`` or ``bags`` by label parity.

    Returns per row: ``label``, ``path``, ``split``, ``is_query``, ``is_gallery`` (False on train
    rows), ``box`` (int64 (N, 4) ``x1, y1, x2, y2``, -1 without) and ``category``.
    """
    if flags not in ("separate", "both", "mixed"):
        raise ValueError(f"flags must be separate, both or mixed, got {flags!r}")
    root = Path(root)
    n = train_classes + test_classes
    rows: list[dict[str, object]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for j in range(per_class):
        for c in range(n):
            k = len(rows)
            label = 10 + 3 * ((5 * c) % n)
            rel = f"images/{label}/{j:02d}.jpg"
            write_image(root / rel, 18 + k % 7, 14 + k % 7, seed=7000 + k)
            query = j < per_class // 2
            row: dict[str, object] = {"label": label, "path": rel, "split": "train"}
            row["is_query"] = row["is_gallery"] = None
            if c >= train_classes:
                both = flags == "both" or (flags == "mixed" and j == 0)
                row.update(split="validation", is_query=query or both, is_gallery=not query or both)
            box = (-1, -1, -1, -1) if k % 3 == 2 else (k % 3, k % 2, k % 3 + 10 + k % 4, k % 2 + 9 + k % 3)
            if bboxes:
                x1, y1, x2, y2 = (None if v < 0 else v for v in box)
                row.update(x_1=x1, x_2=x2, y_1=y1, y_2=y2)
            if category:
                row["category"] = "shoes" if label % 2 else "bags"
            rows.append(row)
            boxes.append(box if bboxes else (-1, -1, -1, -1))
    table = pd.DataFrame(rows)
    write_text(root / csv, table.to_csv(index=False))
    return {
        "label": table["label"].to_numpy(np.int64),
        "path": table["path"].to_numpy(str),
        "split": table["split"].to_numpy(str),
        "is_query": table["is_query"].fillna(False).to_numpy(bool),
        "is_gallery": table["is_gallery"].fillna(False).to_numpy(bool),
        "box": np.asarray(boxes, dtype=np.int64),
        "category": table["category"].to_numpy(str) if category else np.asarray([""] * len(rows)),
    }


def make_features(
    root: Path, dim: int = 8, train_classes: int = 4, test_classes: int = 3, per_class: int = 6, seed: int = 0
) -> dict[str, np.ndarray]:
    """``root/features.npz`` in the ``dataset=features`` layout: Gaussian blobs of ``dim`` floats per class
    (train labels ``0..train_classes-1``, test labels after them), image paths and class names.

    Returns the arrays written."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(train_classes + test_classes, dim)) * 2
    arrays: dict[str, np.ndarray] = {}
    for split, classes in (
        ("train", range(train_classes)),
        ("test", range(train_classes, train_classes + test_classes)),
    ):
        labels = np.repeat(np.asarray(list(classes), dtype=np.int64), per_class)
        arrays[f"{split}_features"] = (centres[labels] + rng.normal(size=(labels.size, dim))).astype(
            np.float32
        )
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_paths"] = np.asarray([f"c{c}/{split}_{k:03d}.jpg" for k, c in enumerate(labels)])
    arrays["class_names"] = np.asarray([f"class {c}" for c in range(train_classes + test_classes)])
    Path(root).mkdir(parents=True, exist_ok=True)
    np.savez(Path(root) / "features.npz", **arrays)
    return arrays


def make_gray_folder(
    root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat", "dog", "eel", "fox"), per_class: int = 30
) -> dict[str, int]:
    """``root/<class>/<k>.png``: ``per_class`` 28x28 grayscale PNGs per class, random noise around a faint
    class-specific horizontal band, so that a small CNN learns the classes but confuses some images."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for k in range(per_class):
            pixels = rng.integers(0, 200, size=(28, 28))
            pixels[4 * c : 4 * c + 6, :] += 50
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            write_bytes(Path(root) / name / f"{k:03d}.png", buf.getvalue())
    return {name: per_class for name in classes}
