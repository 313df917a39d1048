"""Every user-facing failure is one line on stderr and a non-zero exit, before any compute, with
nothing new in the store. Each case runs the real entry point in a subprocess."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from eif.utils.io import write_bytes, write_text
from tests.conftest import ROOT, TINY, launch
from tests.fixtures import make_cub, make_imagefolder

pytestmark = pytest.mark.usefixtures("fmnist_available")

FOLDER = [
    "dataset=imagefolder",
    "model=small_cnn",
    "model.in_channels=3",
    "dataset.batch.classes_per_batch=2",
    "dataset.batch.samples_per_class=2",
    "dataset.transforms.train={name: random_resized_crop, size: 16}",
    "dataset.transforms.eval={name: resize_center_crop, resize: 16, crop: 16}",
]


def _bad_images(root: Path) -> Path:
    """An image folder with one truncated training JPEG and one garbage test PNG."""
    make_imagefolder(root)
    good = (root / "bee" / "img_000.jpg").read_bytes()
    write_bytes(root / "bee" / "img_001.jpg", good[: len(good) // 2])
    write_bytes(root / "fox" / "img_002.png", b"\x89PNG\r\n\x1a\n this is not a png")
    return root


def _mixed_modes(root: Path) -> Path:
    """Class folders of grayscale, RGB and RGBA images (make_imagefolder's own mix)."""
    make_imagefolder(root)
    return root


def _checkpoint_other_model(tmp: Path) -> Path:
    from eif.models import build_model

    model = build_model(
        {
            "_target_": "eif.models.small_cnn.SmallCnn",
            "in_channels": 1,
            "feature_dim": 256,
            "embedding_size": 32,
        }
    )
    path = tmp / "other.pt"
    torch.save({"model": model.state_dict(), "loss": {}, "num_classes": 5}, path)
    return path


def _checkpoint_pickle(tmp: Path) -> Path:
    path = tmp / "pickled.pt"
    buf = io.BytesIO()
    torch.save({"model": argparse.Namespace(trained=True), "loss": {}}, buf)
    path.write_bytes(buf.getvalue())
    return path


def _netrc(tmp: Path) -> Path:
    write_text(tmp / "netrc", "")
    return tmp / "netrc"


# (id, overrides (with {tmp} for the case's directory), what the line must contain, setup, env)
Case = tuple[str, list[str], list[str], Callable[[Path], object] | None, dict[str, str]]
CASES: list[Case] = [
    (
        "typo'd stage",
        ["stages=[train,evall]"],
        ["unknown stage 'evall'", "did you mean 'evaluate'"],
        None,
        {},
    ),
    ("non-numeric epochs", ["train.epochs=abc"], ["train.epochs", "'abc'"], None, {}),
    ("negative batch size", ["evaluate.batch_size=-4"], ["evaluate.batch_size", "greater than 0"], None, {}),
    ("noise fraction out of range", ["noise.fraction=0.5"], ["noise.fraction", "less than 0.5"], None, {}),
    (
        "warm-up never ends",
        ["train.epochs=5", "train.warmup_epochs=5"],
        ["warmup_epochs=5", "never train"],
        None,
        {},
    ),
    ("unknown choice", ["evaluate.map_metric=cosine"], ["evaluate.map_metric", "cosine"], None, {}),
    ("unknown setting", ["+train.epoch=3"], ["train.epoch", "unknown setting"], None, {}),
    ("hydra: key not in config", ["train.epoch=3"], ["train.epoch"], None, {}),
    ("hydra: unknown group option", ["dataset=cubb"], ["cubb"], None, {}),
    ("stages as a string", ["stages=train"], ["stages must be a list"], None, {}),
    ("missing data dir", ["dataset.root={tmp}/nope"], ["{tmp}/nope", "data not found"], None, {}),
    ("class ids not in the data", ["dataset.train_classes=[0,1,42]"], ["42", "no images"], None, {}),
    (
        "overlapping classes",
        ["dataset.train_classes=[0,1,2]", "dataset.test_classes=[2,3]"],
        ["overlap"],
        None,
        {},
    ),
    (
        "more classes per batch than classes",
        ["dataset.batch.classes_per_batch=6"],
        ["classes_per_batch=6", "5 classes"],
        None,
        {},
    ),
    ("channels of data vs model", ["model.in_channels=3"], ["model.in_channels=3", "1-channel"], None, {}),
    (
        "corrupt train and test images",
        [*FOLDER, "dataset.root={tmp}/bad"],
        ["2 images", "bee/img_001.jpg", "fox/img_002.png", "cannot decode"],
        lambda t: _bad_images(t / "bad"),
        {},
    ),
    (
        "mixed image modes without to_rgb",
        [
            *FOLDER,
            "model.in_channels=1",
            "dataset.root={tmp}/mixed",
            "dataset.transforms.to_rgb=false",
            "dataset.transforms.mean=[0.5]",
            "dataset.transforms.std=[0.25]",
        ],
        ["ant/img_000.png (mode RGBA", "mode RGB", "to_rgb=true"],
        lambda t: _mixed_modes(t / "mixed"),
        {},
    ),
    (
        "image folder without a root",
        ["dataset=imagefolder", "model=small_cnn", "model.in_channels=3"],
        ["dataset.root: required"],
        None,
        {},
    ),
    (
        "checkpoint of another model",
        ["stages=[train]", "model.checkpoint={tmp}/other.pt"],
        ["model.checkpoint", "wrong shape head.weight (32, 256) vs (64, 256)"],
        _checkpoint_other_model,
        {},
    ),
    (
        "checkpoint that is not a torch file",
        ["stages=[train]", "model.checkpoint={tmp}/junk.pt"],
        ["not a readable torch file"],
        lambda t: write_bytes(t / "junk.pt", b"\x00\x01 junk"),
        {},
    ),
    (
        "checkpoint that pickles objects",
        ["stages=[train]", "model.checkpoint={tmp}/pickled.pt"],
        ["pickles Python objects", "weights_only=True"],
        _checkpoint_pickle,
        {},
    ),
    (
        "checkpoint that does not exist",
        ["model.checkpoint={tmp}/none.pt"],
        ["none.pt does not exist"],
        None,
        {},
    ),
    (
        "pretrained weights offline",
        ["dataset=cub", "dataset.root={tmp}/cub", "model.embedding_size=8"],
        ["model.pretrained=true needs the ImageNet ResNet-50 weights", "TORCH_HOME"],
        lambda t: make_cub(t / "cub"),
        {"TORCH_HOME": "{tmp}/torch"},
    ),
    ("device=cuda without a GPU", ["device=cuda"], ["device=cuda", "CUDA"], None, {}),
    (
        "W&B online without an API key",
        ["logger=wandb", "logger.mode=online"],
        ["W&B API key", "wandb login"],
        _netrc,
        {"WANDB_API_KEY": "", "NETRC": "{tmp}/netrc", "WANDB_MODE": ""},
    ),
    (
        "stats without IF",
        ["stages=[stats]", "retrain.methods=[eif]"],
        ["stats.baseline=if is not among the re-trained methods"],
        None,
        {},
    ),
    (
        "share out of range",
        ["stages=[mine]", "mine.share=1.5"],
        ["mine.share", "less than or equal to 1"],
        None,
        {},
    ),
]


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def _run_case(case: Case, tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    _, args, _, setup, env = case
    tmp.mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(tmp)
    t0 = time.perf_counter()
    tiny = not any(a.startswith("dataset=") for a in args)  # TINY's overrides are Fashion-MNIST's
    env = {k: _fill(v, tmp) for k, v in env.items()}
    proc = launch([_fill(a, tmp) for a in args], tmp, env=env, timeout=300, tiny=tiny)
    return proc, time.perf_counter() - t0


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode not in (0, None), proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return lines[0]


def store_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


def test_bad_inputs_fail_in_one_line_before_any_compute(tmp_path: Path) -> None:
    """The table of bad inputs (at least 20 distinct ones), two subprocesses at a time."""
    assert len(CASES) >= 20
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda ic: _run_case(ic[1], tmp_path / f"case{ic[0]}"), enumerate(CASES)))
    report = []
    for i, (case, (proc, seconds)) in enumerate(zip(CASES, results)):
        tmp = tmp_path / f"case{i}"
        line = one_error_line(proc)
        assert proc.returncode == 2, (case[0], proc.returncode, line)
        for needle in case[2]:
            assert _fill(needle, tmp) in line, (case[0], needle, line)
        assert store_files(tmp / "store") == [], (case[0], store_files(tmp / "store"))
        assert not list((tmp / "store").rglob("*.partial*")), case[0]
        report.append(f"{case[0]}: {line} ({seconds:.1f} s)")
    print("\n".join(report))
    assert results[0][1] < 10, f"a typo'd stage name took {results[0][1]:.1f} s to report"


def test_cfg_job_resolve_prints_the_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--cfg", "job", "--resolve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "job_type: train+evaluate+embed" in proc.stdout and "Traceback" not in proc.stderr


def _mount(kind: str, target: Path, source: Path | None = None) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    cmds = {
        "tmpfs": [["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)]],
        "ro": [
            ["mount", "--bind", str(source), str(target)],
            ["mount", "-o", "remount,bind,ro", str(target)],
        ],
    }[kind]
    for cmd in cmds:
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True)
            return False
    return True


def test_read_only_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    ro = tmp_path / "ro"
    if not _mount("ro", ro, tmp_path / "src"):
        pytest.skip("cannot bind-mount read-only here (needs root and CAP_SYS_ADMIN)")
    try:
        proc = launch([f"paths.store_dir={ro}/store"], tmp_path)
        line = one_error_line(proc)
        assert proc.returncode == 2 and f"{ro}/store" in line and "Read-only file system" in line, line
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_full_disk_is_one_line_naming_the_file(tmp_path: Path) -> None:
    full = tmp_path / "full"
    if not _mount("tmpfs", full):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        proc = launch([f"paths.store_dir={full}", "stages=[train]", "train.epochs=3"], tmp_path)
        line = one_error_line(proc)
        assert proc.returncode == 1 and "No space left on device" in line and str(full) in line, line
        assert not list(full.rglob("MANIFEST.json")) and not list(full.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def _start(tmp: Path, args: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "launch.py"),
        *TINY,
        f"paths.store_dir={tmp / 'store'}",
        f"hydra.run.dir={tmp / 'run'}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(store: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if list(store.glob("train/*.partial*/ckpt/*.ckpt")):
            return
        time.sleep(0.05)
    raise AssertionError(f"no training checkpoint appeared (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_interrupt_checkpoints_and_exits_in_one_line(tmp_path: Path, sig: int, code: int, word: str) -> None:
    args = [
        "dataset.max_per_class=200",
        "train.epochs=4",
        "train.checkpoint_every_batches=3",
        "stages=[train]",
    ]
    proc = _start(tmp_path, args)
    _wait_for_checkpoint(tmp_path / "store", proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, err)
    assert lines[0].startswith(f"error: {word}") and "re-run the same command to resume" in lines[0]
    assert not list((tmp_path / "store").glob("train/*/MANIFEST.json"))
    resumed = launch(args, tmp_path, run_name="again", check=True)
    assert "resuming training at epoch" in resumed.stdout, resumed.stdout[-3000:]


@pytest.mark.slow
def test_flipped_checkpoint_byte_is_detected(tmp_path: Path) -> None:
    """A training checkpoint with one flipped byte is reported on one line and never loaded: training
    resumes from the previous good checkpoint and ends with the weights of an uninterrupted run."""
    from eif.utils.io import CorruptFile, load_checked

    args = ["dataset.max_per_class=100", "train.epochs=3", "train.warmup_epochs=1", "stages=[train]"]
    launch(args, tmp_path / "clean", check=True)
    work = tmp_path / "crash"
    work.mkdir()
    proc = _start(work, [*args, "train.checkpoint_every_batches=2"])
    store = work / "store"
    end = time.time() + 120
    while (
        len(list(store.glob("train/*.partial*/ckpt/*.ckpt"))) < 2
        and proc.poll() is None
        and time.time() < end
    ):
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    ckpts = sorted(store.glob("train/*.partial*/ckpt/*.ckpt"))
    assert len(ckpts) == 2, ckpts
    newest = ckpts[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match="SHA-256 mismatch"):
        load_checked(newest)
    resumed = launch(args, work, run_name="resumed", check=True)
    out = resumed.stdout
    assert f"training checkpoint {newest.name} is corrupt (SHA-256 mismatch)" in out, out[-3000:]
    assert f"({ckpts[0].name})" in out  # resumed from the previous one
    a = torch.load(next((tmp_path / "clean" / "store" / "train").glob("*/model.pt")), weights_only=True)[
        "model"
    ]
    b = torch.load(next(store.glob("train/*/model.pt")), weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_foreign_target_is_refused_before_anything_is_imported(tmp_path: Path) -> None:
    """``_target_`` is checked by name first: ``this`` (which prints the Zen of Python when imported)
    is never imported; the command line prints one line."""
    proc = launch(["loss._target_=this.Nothing"], tmp_path)
    line = one_error_line(proc)
    assert proc.returncode == 2 and "loss: _target_ 'this.Nothing' is not an eif settings class" in line, line
    assert "Zen of Python" not in proc.stdout + proc.stderr
    assert store_files(tmp_path / "store") == []


def test_a_registered_target_of_another_package_is_accepted(tmp_path: Path) -> None:
    """A settings class outside eif is found through the ``eif.settings`` entry points, in a fresh
    interpreter that sees a package installed under ``tmp_path`` (its dist-info names the class)."""
    (tmp_path / "myloss").mkdir()
    write_text(
        tmp_path / "myloss" / "__init__.py",
        "from eif.losses.proxynca_pp import ProxyNCAPPConfig\n\n\n"
        "class MyLoss(ProxyNCAPPConfig):\n    pass\n",
    )
    info = tmp_path / "myloss-0.1.dist-info"
    info.mkdir()
    write_text(info / "METADATA", "Metadata-Version: 2.1\nName: myloss\nVersion: 0.1\n")
    write_text(info / "entry_points.txt", "[eif.settings]\nmyloss = myloss:MyLoss\n")
    code = (
        "import sys\n"
        "from eif.losses.base import LossConfig\n"
        "from eif.settings import parse\n"
        "from eif.utils.errors import EifError\n"
        "node = {'name': 'proxynca_pp', 'scale': 3.0}\n"
        "try:\n"
        "    parse(LossConfig, {'_target_': 'myloss.Unregistered', **node}, 'loss')\n"
        "except EifError as err:\n"
        "    print('refused' if 'not an eif settings class' in str(err) else err)\n"
        "print('myloss' in sys.modules)\n"
        "print(type(parse(LossConfig, {'_target_': 'myloss.MyLoss', **node}, 'loss')).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["refused", "False", "MyLoss"]
