"""Cars196 from ``cars_annos.mat``, split by class and ignoring the official ``test`` flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from eif.data.base import FileImageSet
from eif.data.config import ClassIds, ClassRange, DatasetConfig, class_ids
from eif.data.splits import Splits, split_by_class
from eif.utils.errors import EifError

LAYOUT = "root/cars_annos.mat (struct array 'annotations' with relative_im_path and class) and root/car_ims/"


class Cars(DatasetConfig):
    """Cars196: every annotated image; label = ``class - 1`` (0..195), path = ``root / relative_im_path``;
    split by class ids (the official ``test`` flag is ignored)."""

    train_classes: ClassIds = ClassRange(start=0, stop=98)
    test_classes: ClassIds = ClassRange(start=98, stop=196)

    def load(self) -> Splits:
        root = Path(self.root)
        mat_path = root / "cars_annos.mat"
        if not mat_path.is_file():
            raise EifError(f"cars: {mat_path} not found; expected {LAYOUT}")
        try:
            mat = scipy.io.loadmat(str(mat_path), squeeze_me=True)
            ann = np.atleast_1d(mat["annotations"])
            rel = [str(p) for p in ann["relative_im_path"]]
            labels = ann["class"].astype(np.int64) - 1
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise EifError(
                f"cars: {mat_path} lacks the struct array 'annotations' with fields "
                f"relative_im_path and class ({type(e).__name__}: {e})"
            ) from None
        names = [str(n) for n in np.atleast_1d(mat["class_names"])] if "class_names" in mat else []
        names += [f"class_{c + 1}" for c in range(len(names), int(labels.max()) + 1)]
        images = FileImageSet(root, rel, labels)
        return split_by_class(
            images, names, class_ids(self.train_classes), class_ids(self.test_classes), "cars"
        )
