"""Offline tests of the dataset builders (tools/data, tools/prepare_data.py): tiling, splitting, shards, manifests,
IDX parsing, the command line and the reproduction plan.

No apt / network: Debian packages are replaced by fake extracted trees in tmp_path.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image

from coda_hf.cli import main as cli_main
from coda_hf.data.shards import load_image_shards
from tools.data import (
    ExtractedPackage,
    PackageFetchError,
    collect_photos,
    fetch_debian_package,
    iter_multiscale_tiles,
    photo_shard_dir,
    prepare_fashion_mnist,
    prepare_photo_dataset,
    read_copyright,
    read_idx,
    split_groups,
    split_photo_groups,
    write_idx,
)
from tools.data import debian as debian_module
from tools.data.photo_allowlist import DEBIAN_SOURCES, DebianPhotoSource, PhotoSpec
from tools.prepare_data import main as prepare_data_main

FAKE_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake-photos

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: special/*.png
Copyright: 2021 Someone Else
License: CC-BY-SA-4.0

Files: debian/*
Copyright: 2022 Packager
License: MIT
"""


# ----------------------------------------------------------------------------------------------- fixtures


def _fake_package(root: Path, name: str, files: dict[str, Image.Image | bytes]) -> ExtractedPackage:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_bytes(content)
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(FAKE_COPYRIGHT)
    return ExtractedPackage(name=name, version="1.0-1", deb_path=root / f"{name}_1.0-1_all.deb", root=root)


@pytest.fixture(scope="module")
def fake_photo_source(tmp_path_factory):
    """A fake extracted 'fake-photos' package with 4 real photos (crops of skimage photos), 3 scenes."""
    root = tmp_path_factory.mktemp("fake-photos")
    prefix = "usr/share/backgrounds/fake/"
    coffee, chelsea = Image.fromarray(skimage.data.coffee()), Image.fromarray(skimage.data.chelsea())
    files = {
        prefix + "nature/coffee_a.jpg": coffee.crop((0, 0, 300, 200)),
        prefix + "nature/coffee_b.jpg": coffee.crop((250, 150, 600, 400)),  # same scene as coffee_a
        prefix + "special/cat.png": chelsea.crop((0, 0, 256, 200)),
        prefix + "nature/cat_small.jpg": chelsea.crop((200, 100, 451, 300)),
    }
    package = _fake_package(root, "fake-photos", files)
    source = DebianPhotoSource(
        package="fake-photos", installed_prefix=prefix, upstream_prefix="",
        photos=(
            PhotoSpec(prefix + "nature/coffee_a.jpg", "fake/coffee", "photo"),
            PhotoSpec(prefix + "nature/coffee_b.jpg", "fake/coffee", "same scene"),
            PhotoSpec(prefix + "special/cat.png", "fake/cat", "photo"),
            PhotoSpec(prefix + "nature/cat_small.jpg", "fake/cat_small", "photo"),
        ),
    )

    def fetch(name, cache_dir):
        assert name == "fake-photos", name
        return package

    return source, fetch


PHOTO_KW = dict(tile_sizes=(32,), levels=(1, 2, 4), train_shards=4, eval_shards=2, eval_fraction=0.3)


@pytest.fixture(scope="module")
def photo_dataset(tmp_path_factory, fake_photo_source):
    source, fetch = fake_photo_source
    out = tmp_path_factory.mktemp("photos")
    manifest = prepare_photo_dataset(
        out, tmp_path_factory.mktemp("cache"), sources=("fake-photos", "skimage"), debian_sources=(source,),
        fetch=fetch, seed=0, **PHOTO_KW,
    )
    return out, manifest


def _rows(out: Path, split: str, tile_size: int = 32) -> list[tuple]:
    ds = load_image_shards(photo_shard_dir(out, tile_size), split, streaming=False)
    return [(r["photo_id"], r["level"], r["x"], r["y"], r["image"].tobytes()) for r in ds]


# ----------------------------------------------------------------------------------------------- tiling / split


def test_multiscale_tiles_counts_sizes_and_content():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    tiles = list(iter_multiscale_tiles(image, 32, levels=(1, 2, 4, 8)))
    # level 1: 48x32 -> 1 tile; level 2: 96x64 -> 3x2; level 4: 192x128 -> 6x4; level 8 (256 > 200) skipped.
    assert [sum(t.level == lv for t in tiles) for lv in (1, 2, 4, 8)] == [1, 6, 24, 0]
    assert all(t.image.size == (32, 32) and t.image.mode == "RGB" for t in tiles)
    level4 = image.resize((192, 128), Image.Resampling.LANCZOS)
    t = next(t for t in tiles if t.level == 4 and t.x == 64 and t.y == 32)
    assert np.array_equal(np.asarray(t.image), np.asarray(level4.crop((64, 32, 96, 64))))


def test_multiscale_tiles_stride_and_errors():
    image = Image.new("RGB", (96, 64), "red")
    assert len(list(iter_multiscale_tiles(image, 32, levels=(2,)))) == 6
    assert len(list(iter_multiscale_tiles(image, 32, levels=(2,), stride=16))) == 5 * 3
    with pytest.raises(ValueError, match="stride"):
        list(iter_multiscale_tiles(image, 32, stride=0))
    with pytest.raises(ValueError, match="levels"):
        list(iter_multiscale_tiles(image, 32, levels=(0,)))


def test_split_groups_disjoint_stratified_deterministic():
    groups = {f"a{i}": "a" for i in range(10)} | {f"b{i}": "b" for i in range(3)} | {"c0": "c"}
    train, evaluation = split_groups(groups, 0.2, seed=1)
    assert not set(train) & set(evaluation)
    assert set(train) | set(evaluation) == set(groups)
    assert sum(g.startswith("a") for g in evaluation) == 2
    assert sum(g.startswith("b") for g in evaluation) == 1  # at least one per source with >= 2 groups
    assert "c0" in train  # a single-scene source stays in train
    assert split_groups(groups, 0.2, seed=1) == (train, evaluation)
    assert any(split_groups(groups, 0.2, seed=s)[1] != evaluation for s in range(2, 8))
    assert split_groups(groups, 0.0, seed=1)[1] == []
    with pytest.raises(ValueError, match="eval_fraction"):
        split_groups(groups, 1.0, seed=0)


def test_split_photo_groups_validation_comes_from_train_and_eval_is_unchanged():
    groups = {f"a{i}": "a" for i in range(10)} | {f"b{i}": "b" for i in range(3)} | {"c0": "c"}
    split = split_photo_groups(groups, 0.2, seed=1, validation_fraction=0.2)
    train, evaluation = split_groups(groups, 0.2, seed=1)
    assert split["eval"] == evaluation  # a validation split never changes the eval groups of a seed
    assert set(split["validation"]) | set(split["train"]) == set(train)
    assert not set(split["validation"]) & set(split["train"])
    assert sum(g.startswith("a") for g in split["validation"]) == 2
    assert sum(g.startswith("b") for g in split["validation"]) == 1  # b: 3 scenes, one each
    assert [g for g in split["train"] if g.startswith("b")] and "c0" in split["train"]
    assert split_photo_groups(groups, 0.2, seed=1)["validation"] == []
    assert split_photo_groups(groups, 0.2, seed=1, validation_fraction=0.2) == split
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        split_photo_groups(groups, 0.2, seed=1, validation_fraction=-0.1)
    with pytest.raises(ValueError, match="must be < 1"):
        split_photo_groups(groups, 0.5, seed=1, validation_fraction=0.5)


# ----------------------------------------------------------------------------------------------- debian helpers


def test_read_copyright_dep5_last_match_wins(tmp_path):
    path = tmp_path / "copyright"
    path.write_text(FAKE_COPYRIGHT)
    c = read_copyright(path)
    assert c.default_license == "GPL-2+"
    assert c.license_for("nature/a.jpg") == "GPL-2+"
    assert c.license_for("special/cat.png") == "CC-BY-SA-4.0"
    assert c.license_for("special/cat.jpg") == "GPL-2+"
    path.write_text("This package was debianized by someone.\nLicense: BSD-3-Clause\n")
    assert read_copyright(path).license_for("x.png") == "BSD-3-Clause"


def test_fetch_debian_package_reports_apt_failure(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 100, "", "E: Unable to locate package nope-pkg"

    calls = []
    monkeypatch.setattr(debian_module, "_run", lambda cmd, cwd=None: calls.append(cmd) or Failed())
    with pytest.raises(PackageFetchError, match="nope-pkg"):
        fetch_debian_package("nope-pkg", tmp_path)
    assert ["apt-get", "update"] in calls  # retried once after an update
    with pytest.raises(ValueError, match="package name"):
        fetch_debian_package("Bad Name;rm", tmp_path)


def test_real_allowlist_maps_to_upstream_paths():
    opencv = next(s for s in DEBIAN_SOURCES if s.package == "opencv-doc")
    assert opencv.upstream_path(opencv.photos[0].path).startswith("samples/data/")
    for source in DEBIAN_SOURCES:
        paths = [p.path for p in source.photos]
        assert len(paths) == len(set(paths)), source.package
        assert all(p.startswith(source.installed_prefix) for p in paths)
    with pytest.raises(ValueError, match="not under"):
        opencv.upstream_path("usr/bin/x")


# ----------------------------------------------------------------------------------------------- photo dataset


def test_photo_manifest_records_provenance_and_counts(photo_dataset):
    out, manifest = photo_dataset
    assert json.loads((out / "manifest.json").read_text()) == manifest
    photos = {p["photo_id"]: p for p in manifest["photos"]}
    fake = {k: v for k, v in photos.items() if v["source"] == "fake-photos"}
    assert len(fake) == 4 and manifest["sources"]["fake-photos"]["photos"] == 4
    assert manifest["sources"]["skimage"]["photos"] == 7
    cat = fake["fake-photos:usr/share/backgrounds/fake/special/cat.png"]
    assert cat["license"] == "CC-BY-SA-4.0" and cat["package_version"] == "1.0-1"
    assert cat["license_file"] == "usr/share/doc/fake-photos/copyright"
    assert fake["fake-photos:usr/share/backgrounds/fake/nature/coffee_a.jpg"]["license"] == "GPL-2+"
    assert photos["skimage:chelsea.png"]["license"].startswith("CC0")
    for split in ("train", "eval"):
        info = manifest["splits"]["32"][split]
        assert info["tiles"] == sum(p["tiles"]["32"] for p in photos.values() if p["split"] == split)
        assert info["tiles"] == len(_rows(out, split))
    # a 256x200 photo at levels 1, 2, 4: 1 + 2x2 + (164x128 -> 5x4) tiles
    assert cat["tiles"]["32"] == 1 + 4 + 20


def test_no_photo_or_scene_in_both_splits(photo_dataset):
    out, manifest = photo_dataset
    train_ids = {r[0] for r in _rows(out, "train")}
    eval_ids = {r[0] for r in _rows(out, "eval")}
    assert train_ids and eval_ids and not train_ids & eval_ids
    group_of = {p["photo_id"]: p["group"] for p in manifest["photos"]}
    assert not {group_of[i] for i in train_ids} & {group_of[i] for i in eval_ids}
    coffee_splits = {p["split"] for p in manifest["photos"] if p["group"] == "fake/coffee"}
    assert len(coffee_splits) == 1
    assert {p["split"] for p in manifest["photos"] if p["photo_id"] in eval_ids} == {"eval"}


def test_shards_stream_and_split_by_node(photo_dataset):
    out, manifest = photo_dataset
    ds = load_image_shards(photo_shard_dir(out, 32), "train")
    assert ds.num_shards == 4
    keys = []
    for rank in range(2):
        part = split_dataset_by_node(ds, rank=rank, world_size=2)
        assert part.num_shards == 2
        rows = list(part)
        assert rows[0]["image"].size == (32, 32)
        keys.append({(r["photo_id"], r["level"], r["x"], r["y"]) for r in rows})
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert len(keys[0]) + len(keys[1]) == manifest["splits"]["32"]["train"]["tiles"]
    with pytest.raises(FileNotFoundError, match="test"):
        load_image_shards(photo_shard_dir(out, 32), "test")


def test_photo_dataset_deterministic_and_resumable(tmp_path, photo_dataset, fake_photo_source):
    out, manifest = photo_dataset
    source, fetch = fake_photo_source
    kw = dict(sources=("fake-photos", "skimage"), debian_sources=(source,), fetch=fetch, **PHOTO_KW)
    again = prepare_photo_dataset(tmp_path / "a", tmp_path / "cache", seed=0, **kw)
    assert again["splits"] == manifest["splits"] and again["groups"] == manifest["groups"]
    assert _rows(tmp_path / "a", "train") == _rows(out, "train")
    shard = photo_shard_dir(tmp_path / "a", 32) / again["splits"]["32"]["train"]["shards"][0]
    mtime = shard.stat().st_mtime_ns
    assert prepare_photo_dataset(tmp_path / "a", tmp_path / "cache", seed=0, **kw) == again
    assert shard.stat().st_mtime_ns == mtime  # reused, not rewritten
    prepare_photo_dataset(tmp_path / "a", tmp_path / "cache", seed=0, overwrite=True, **kw)
    assert shard.stat().st_mtime_ns != mtime
    other = prepare_photo_dataset(tmp_path / "b", tmp_path / "cache", seed=5, **kw)
    assert other["groups"] != manifest["groups"] or _rows(tmp_path / "b", "train") != _rows(out, "train")


def test_photo_dataset_stride_option(tmp_path, fake_photo_source):
    source, fetch = fake_photo_source
    m = prepare_photo_dataset(
        tmp_path, tmp_path / "cache", tile_sizes=(32,), levels=(2,), stride=16, sources=("fake-photos",),
        debian_sources=(source,), fetch=fetch, train_shards=2, eval_shards=1, eval_fraction=0.3,
    )
    cat = next(p for p in m["photos"] if p["path"].endswith("special/cat.png"))
    assert cat["tiles"]["32"] == 4 * 3  # 256x200 -> 82x64; stride 16: 4 columns x 3 rows
    assert m["config"]["stride"] == 16


def test_photo_dataset_validation_split(tmp_path, photo_dataset, fake_photo_source):
    out, manifest = photo_dataset
    source, fetch = fake_photo_source
    kw = dict(sources=("fake-photos", "skimage"), debian_sources=(source,), fetch=fetch, seed=0, **PHOTO_KW)
    m = prepare_photo_dataset(tmp_path, tmp_path / "cache", validation_fraction=0.2, validation_shards=1, **kw)
    assert m["groups"]["eval"] == manifest["groups"]["eval"] and m["groups"]["validation"]
    assert _rows(tmp_path, "eval") == _rows(out, "eval")  # the same eval tiles as without a validation split
    ids = {split: {r[0] for r in _rows(tmp_path, split)} for split in ("train", "validation", "eval")}
    assert all(ids.values()) and not (ids["train"] & ids["validation"]) and not (ids["validation"] & ids["eval"])
    assert ids["train"] | ids["validation"] == {r[0] for r in _rows(out, "train")}
    assert m["splits"]["32"]["validation"]["tiles"] == len(_rows(tmp_path, "validation"))
    assert m["config"]["validation_fraction"] == 0.2 and "validation_fraction" not in manifest["config"]
    assert {p["split"] for p in m["photos"]} == {"train", "validation", "eval"}


def test_collect_photos_errors(tmp_path, fake_photo_source, monkeypatch, caplog):
    source, fetch = fake_photo_source
    with pytest.raises(ValueError, match="unknown photo sources"):
        collect_photos(tmp_path, sources=("nope",), debian_sources=(source,), fetch=fetch)
    broken = DebianPhotoSource(source.package, source.installed_prefix, "",
                               (PhotoSpec(source.installed_prefix + "missing.jpg", "g", "r"),))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        collect_photos(tmp_path, sources=("fake-photos",), debian_sources=(broken,), fetch=fetch)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # simulate scikit-learn not installed
    with caplog.at_level(logging.WARNING):
        records = collect_photos(tmp_path, sources=("sklearn", "fake-photos"), debian_sources=(source,), fetch=fetch)
    assert {r.source for r in records} == {"fake-photos"}
    assert "scikit-learn is not installed" in caplog.text


# ----------------------------------------------------------------------------------------------- IDX / fashion


def test_read_idx_handcrafted_and_roundtrip(tmp_path):
    raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    (tmp_path / "tiny-idx2-ubyte").write_bytes(raw)
    assert read_idx(tmp_path / "tiny-idx2-ubyte").tolist() == [[0, 1, 2], [3, 4, 5]]
    with gzip.open(tmp_path / "tiny.gz", "wb") as f:
        f.write(raw)
    assert read_idx(tmp_path / "tiny.gz").shape == (2, 3)
    big = np.arange(-6, 6, dtype=np.int32).reshape(2, 3, 2)
    write_idx(big, tmp_path / "big.idx")
    assert (tmp_path / "big.idx").read_bytes()[:4] == bytes([0, 0, 0x0C, 3])
    assert np.array_equal(read_idx(tmp_path / "big.idx"), big)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "short")


@pytest.fixture()
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    folder = "usr/share/datasets/fashion-mnist/"
    files = {}
    data = {}
    for stem, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(1, 255, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        data[stem] = (images, labels)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            path = tmp_path / "src" / f"{stem}-{kind}-ubyte.gz"
            path.parent.mkdir(exist_ok=True)
            write_idx(arr, path)
            files[folder + path.name] = path.read_bytes()
    package = _fake_package(tmp_path / "pkg", "dataset-fashion-mnist", files)
    return (lambda name, cache: package), data


def test_prepare_fashion_mnist_native(tmp_path, fake_fashion):
    fetch, data = fake_fashion
    m = prepare_fashion_mnist(tmp_path / "out", tmp_path, fetch=fetch, train_shards=4, test_shards=2)
    assert m["splits"]["train"]["images"] == 12 and m["splits"]["test"]["images"] == 5
    assert m["license"] == "GPL-2+" and m["package_version"] == "1.0-1"
    ds = load_image_shards(tmp_path / "out", "train")
    assert ds.num_shards == 4
    rows = list(load_image_shards(tmp_path / "out", "train", streaming=False))
    assert [r["label"] for r in rows] == data["train"][1].tolist()
    assert np.array_equal(np.asarray(rows[3]["image"]), data["train"][0][3])


def test_prepare_fashion_mnist_pad_resize_rgb_limit(tmp_path, fake_fashion):
    fetch, data = fake_fashion
    prepare_fashion_mnist(tmp_path / "pad", tmp_path, image_size=32, rgb=True, limit=3, fetch=fetch,
                          train_shards=2, test_shards=1)
    rows = list(load_image_shards(tmp_path / "pad", "train", streaming=False))
    assert len(rows) == 3
    img = np.asarray(rows[0]["image"])
    assert img.shape == (32, 32, 3)
    assert img[:2].max() == 0 and img[:, -2:].max() == 0  # 2 px zero border
    assert np.array_equal(img[2:30, 2:30, 1], data["train"][0][0])
    prepare_fashion_mnist(tmp_path / "rs", tmp_path, image_size=32, resize_mode="resize", fetch=fetch,
                          train_shards=1, test_shards=1)
    img = np.asarray(next(iter(load_image_shards(tmp_path / "rs", "test")))["image"])
    assert img.shape == (32, 32) and img[:2].max() > 0
    with pytest.raises(ValueError, match="resize_mode"):
        prepare_fashion_mnist(tmp_path / "x", tmp_path, image_size=32, resize_mode="crop", fetch=fetch)
    with pytest.raises(ValueError, match="image_size"):
        prepare_fashion_mnist(tmp_path / "x", tmp_path, image_size=16, fetch=fetch)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_photos_skimage_only(tmp_path):
    code = prepare_data_main([
        "prepare-photos", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
        "--sources", "skimage", "--tile-sizes", "32", "--levels", "1", "2", "--train-shards", "2",
        "--eval-shards", "2", "--eval-fraction", "0.3", "--seed", "1",
    ])
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 1 and manifest["config"]["levels"] == [1, 2]
    assert len(manifest["groups"]["eval"]) == 2  # round(0.3 * 6 skimage scenes)
    assert load_image_shards(tmp_path / "out" / "tiles32", "eval").num_shards == 2
    assert "validation" not in manifest["groups"]
    code = prepare_data_main([
        "prepare-photos", "--out", str(tmp_path / "val"), "--cache", str(tmp_path / "cache"),
        "--sources", "skimage", "--tile-sizes", "32", "--levels", "1", "--eval-fraction", "0.3", "--seed", "1",
        "--validation-fraction", "0.2", "--validation-shards", "1",
    ])
    assert code == 0
    manifest = json.loads((tmp_path / "val" / "manifest.json").read_text())
    assert len(manifest["groups"]["validation"]) == 1  # round(0.2 * 6)
    assert load_image_shards(tmp_path / "val" / "tiles32", "validation").num_shards == 1


def test_cli_prepare_fashion_mnist(tmp_path, fake_fashion, monkeypatch):
    fetch, _ = fake_fashion
    import tools.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "fetch_debian_package", fetch)
    code = prepare_data_main(["prepare-fashion-mnist", "--out", str(tmp_path / "o"), "--cache", str(tmp_path),
                     "--image-size", "32", "--rgb", "--train-shards", "2", "--test-shards", "1", "--limit", "4"])
    assert code == 0
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["config"]["rgb"] is True and m["splits"]["train"]["images"] == 4

    def failing(name, cache):
        raise PackageFetchError(f"could not download Debian package {name!r}")

    monkeypatch.setattr(fm, "fetch_debian_package", failing)
    assert prepare_data_main(["prepare-fashion-mnist", "--out", str(tmp_path / "p"), "--cache", str(tmp_path)]) == 1


def test_prepare_data_script_help_and_moved_cli_command(tmp_path, capsys):
    """The builder runs as a script from any folder (--help lists each option's default); ``coda-hf data``
    says where it moved, in one line, with exit code 2."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "tools" / "prepare_data.py"
    proc = subprocess.run([sys.executable, str(script), "prepare-photos", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--tile-sizes" in text and "(default: [64, 128])" in text
    assert cli_main(["data", "prepare-photos", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python tools/prepare_data.py prepare-photos" in err


# ----------------------------------------------------------------------------------------------- reproduce plan


def _load_reproduce(monkeypatch):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("coda_reproduce", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


LADDER_RUNS = ["vq", "msvq", "msattn", "coda"]


def test_reproduce_plan_skips_finished_stages_and_reports(tmp_path, monkeypatch):
    repro = _load_reproduce(monkeypatch)
    plan = repro.build_plan(tmp_path, "cpu", tmp_path / "debs")
    names = [s.name for s in plan]
    runs = ["vae", *LADDER_RUNS, "vqgan"]
    assert names == ["data", "vae", "vae-stats", *LADDER_RUNS, "vqgan", *[f"eval-{r}" for r in runs], "report"]
    stage = {s.name: s for s in plan}
    hw = repro.CONFIGS["cpu"]
    for run in ["vae", *LADDER_RUNS, "vqgan"]:  # one objective for every training stage
        assert {k: stage[run].config[k] for k in hw["objective"]} == hw["objective"]
    # the attention rows' quantizer learns at its own rate; the other rows have one rate
    assert [stage[r].config.get("quantizer_learning_rate") for r in LADDER_RUNS] == [None, None, *[hw["attention_learning_rate"]] * 2]
    assert [stage[r].config.get("data_init_images") for r in LADDER_RUNS] == [None, None, *[hw["data_init_images"]] * 2]
    for run in LADDER_RUNS:  # the ladder: same frozen VAE, same budget N, same codebook size
        cfg = stage[run].config
        assert cfg["pretrained_vae"] == str(tmp_path / "runs" / "vae") and cfg["max_train_steps"] == hw["steps"]
        assert cfg["train_data_dir"].endswith("tiles64") and "--config" in stage[run].command
        assert cfg["model_kwargs"]["lora"] == (hw["lora"] if run == "coda" else {"rank": 0})
    assert stage["vq"].config["quantizer"] == {"name": "vq", "codebook_size": hw["codebook_size"]}
    assert stage["msvq"].config["quantizer"]["quantizer"] == "vq"
    # the LoRA row fine-tunes an annealed decoder at its own rate; every other stage at learning_rate
    assert stage["coda"].config["learning_rate"] == hw["lora_learning_rate"] < hw["learning_rate"]
    assert {stage[r].config["learning_rate"] for r in ("vae", "vq", "msvq", "msattn", "vqgan")} == {hw["learning_rate"]}
    assert stage["msattn"].config["quantizer"] == stage["coda"].config["quantizer"]
    attn_kwargs = stage["msattn"].config["quantizer"]["quantizer_kwargs"]
    assert attn_kwargs == {"codebook_size": hw["codebook_size"], **hw["attention"]}
    assert hw["lora"]["decoder"]["rank"] > 0  # the LoRA row adapts at least the decoder
    assert stage["vqgan"].config["max_train_steps"] == 6 * hw["steps"]  # the baseline gets 6N steps
    assert stage["vqgan"].config["quantizer"] == stage["vq"].config["quantizer"]
    assert "--write" in stage["vae-stats"].command
    assert "--cpu" in stage["eval-vae"].command and "evaluate" in stage["eval-vae"].command
    assert repro.run_plan(plan, tmp_path, dry_run=True) == names
    for s in plan[:2]:
        s.done_marker.parent.mkdir(parents=True, exist_ok=True)
        s.done_marker.write_text("{}")
    assert repro.run_plan(plan, tmp_path, dry_run=True) == names[2:]
    assert repro.run_plan(plan, tmp_path, dry_run=True, force=("vae",)) == names[1:]
    assert "--cpu" not in {s.name: s for s in repro.build_plan(tmp_path, "gpu", tmp_path)}["eval-vae"].command
    photos = tmp_path / "ready"
    assert repro.build_plan(tmp_path, "cpu", tmp_path, photos=photos)[0].done_marker == photos / "manifest.json"
    with pytest.raises(ValueError, match="unknown config"):
        repro.build_plan(tmp_path, "tpu", tmp_path)
    for run, psnr in (("coda", 21.5), ("vqgan", 18.25)):
        (tmp_path / "eval" / run).mkdir(parents=True)
        (tmp_path / "eval" / run / "metrics.json").write_text(json.dumps({"psnr": psnr, "model": run}))
    results = repro.write_report(tmp_path)
    assert results == {"coda": {"psnr": 21.5}, "vqgan": {"psnr": 18.25}}
    assert "| coda | 21.5 |" in (tmp_path / "results.md").read_text()
    assert repro.main(["--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    # a forced training stage moves its old run aside (kept, never deleted) and restarts its wall time
    vq_dir = tmp_path / "runs" / "vq"
    (vq_dir / "checkpoint-200").mkdir(parents=True)
    (vq_dir / "training_summary.json").write_text("{}")
    (tmp_path / "timings.json").write_text(json.dumps({"vq": 71.2, "vae": 5.0}))
    only_vq = [stage["vq"]]
    stage["vq"].command = [sys.executable, "-c", "print('retrained')"]
    assert repro.run_plan(only_vq, tmp_path) == []
    assert repro.run_plan(only_vq, tmp_path, force=("vq",)) == ["vq"]
    (aside,) = (tmp_path / "runs").glob("vq.replaced-*")
    assert (aside / "checkpoint-200").is_dir() and not vq_dir.exists()
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["vae"] == 5.0 and timings["vq"] < 60
    assert not (tmp_path / "w" / "configs").exists()  # dry run writes nothing


def test_reproduce_only_and_reuse(tmp_path, monkeypatch, caplog):
    """--only runs a subset of the plan; --reuse takes a row from an earlier report and marks it."""
    import logging

    repro = _load_reproduce(monkeypatch)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.json").write_text(json.dumps({"vqgan": {"psnr": 18.1, "train_wall_s": 3000.0}}))
    work = tmp_path / "w"
    with caplog.at_level(logging.INFO, logger="reproduce"):
        assert repro.main(["--workdir", str(work), "--dry-run", "--only", "vq", "eval-vq", "vqgan"]) == 0
    planned = dict.fromkeys(r.getMessage()[1:].split("]")[0] for r in caplog.records if r.getMessage().startswith("["))
    assert list(planned) == ["vq", "vqgan", "eval-vq"]  # plan order, nothing else
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reproduce"):
        assert repro.main(["--workdir", str(work), "--dry-run", "--reuse", f"vqgan={earlier}"]) == 0
    assert not any(r.getMessage().startswith(("[vqgan]", "[eval-vqgan]")) for r in caplog.records)
    (work / "eval" / "coda").mkdir(parents=True)
    (work / "eval" / "coda" / "metrics.json").write_text(json.dumps({"psnr": 26.0}))
    results = repro.write_report(work, {"vqgan": earlier})
    assert results == {"coda": {"psnr": 26.0}, "vqgan": {"psnr": 18.1, "train_wall_s": 3000.0, "reused_from": str(earlier)}}
    report = (work / "results.md").read_text()
    assert "| vqgan (reused) | 18.1 | 3000 |" in report and f"the row of {earlier}/results.json" in report
    assert f"{torch.get_num_threads()} torch threads" in report  # results depend on it (float summation order)
    for bad in (["--reuse", "vqgan"], ["--reuse", "gan=x"], ["--only", "nope"]):
        with pytest.raises(SystemExit):
            repro.main(["--workdir", str(work), "--dry-run", *bad])
    with pytest.raises(ValueError, match="has no row 'vae'"):
        repro.main(["--workdir", str(work), "--dry-run", "--reuse", f"vae={earlier}"])
    with pytest.raises(FileNotFoundError, match="no results.json there"):
        repro.main(["--workdir", str(work), "--dry-run", "--reuse", f"vae={tmp_path}"])


def test_reproduce_override_replaces_config_keys_for_an_ablation(tmp_path, monkeypatch):
    repro = _load_reproduce(monkeypatch)
    lora = {"encoder": {"rank": 8}, "decoder": {"rank": 8}}
    plan = {s.name: s for s in repro.build_plan(tmp_path, "cpu", tmp_path, overrides={"lora": lora, "lora_learning_rate": 3e-5})}
    assert plan["coda"].config["model_kwargs"]["lora"] == lora and plan["coda"].config["learning_rate"] == 3e-5
    assert plan["msattn"].config["model_kwargs"]["lora"] == {"rank": 0}  # only the LoRA row has adapters
    assert repro.CONFIGS["cpu"]["lora"] != lora  # the named config itself is untouched
    ema = {"use_ema": True, "restart_after": 20}  # the VQ rows' codebooks (vq, msvq, VQGAN), nothing else
    plan = {s.name: s for s in repro.build_plan(tmp_path, "cpu-latent16", tmp_path, overrides={"vq": ema})}
    assert plan["vq"].config["quantizer"] == {"name": "vq", "codebook_size": 4096, **ema}
    assert plan["msvq"].config["quantizer"]["quantizer_kwargs"] == {"codebook_size": 4096, **ema}
    assert plan["vqgan"].config["quantizer"] == plan["vq"].config["quantizer"]
    assert "use_ema" not in plan["msattn"].config["quantizer"]["quantizer_kwargs"]
    plain = repro.build_plan(tmp_path, "cpu-latent16", tmp_path)[3]
    assert plain.name == "vq" and plain.config["quantizer"] == {"name": "vq", "codebook_size": 4096}
    with pytest.raises(ValueError, match="unknown config keys \\['lr'\\]"):
        repro.build_plan(tmp_path, "cpu", tmp_path, overrides={"lr": 1.0})
    for bad in ("{not json", "[1, 2]", '{"lr": 1}'):
        with pytest.raises(SystemExit):
            repro.main(["--workdir", str(tmp_path / "w"), "--dry-run", "--override", bad])
    assert repro.main(["--workdir", str(tmp_path / "w"), "--dry-run", "--override", '{"steps": 3}']) == 0


def test_reproduce_off_the_shelf_vae_trains_on_other_photos(tmp_path, monkeypatch):
    """``vae_sources`` / ``--vae-photos``: stage 0 (and its latent stats) on one photo set, everything else on another."""
    repro = _load_reproduce(monkeypatch)
    plan = {s.name: s for s in repro.build_plan(tmp_path, "cpu-latent16-offdomain", tmp_path / "debs")}
    assert list(plan)[:4] == ["data", "data-vae", "vae", "vae-stats"]
    hw = repro.CONFIGS["cpu-latent16-offdomain"]
    photos, vae_photos = tmp_path / "data" / "photos", tmp_path / "data" / "vae-photos"
    assert plan["data"].command[-3:] == ["--sources", *hw["sources"]]
    assert plan["data-vae"].command[-3:] == ["--sources", *hw["vae_sources"]] and "--out" in plan["data-vae"].command
    assert plan["data-vae"].done_marker == vae_photos / "manifest.json"
    assert plan["vae"].config["train_data_dir"] == str(vae_photos / "tiles64")
    assert str(vae_photos / "tiles64") in plan["vae-stats"].command  # the shift / scale come with the VAE
    for run in (*LADDER_RUNS, "vqgan"):
        assert plan[run].config["train_data_dir"] == str(photos / "tiles64")
        assert str(photos / "tiles64") in plan[f"eval-{run}"].command
        assert "--num-images" not in plan[f"eval-{run}"].command  # eval_images null: every eval tile
    default = {s.name: s for s in repro.build_plan(tmp_path / "d", "cpu-latent16", tmp_path)}
    assert "data-vae" not in default and "--sources" not in default["data"].command
    assert default["vae"].config["train_data_dir"] == default["msattn"].config["train_data_dir"]
    assert default["eval-vae"].command[-3:-1] == ["--num-images", "972"]
    # an already prepared set for stage 0, without vae_sources: its stage prepares every default source
    ready = tmp_path / "ready"
    plan = {s.name: s for s in repro.build_plan(tmp_path / "r", "cpu", tmp_path, vae_photos=ready)}
    assert plan["data-vae"].done_marker == ready / "manifest.json" and "--sources" not in plan["data-vae"].command
    assert plan["vae"].config["train_data_dir"] == str(ready / "tiles64")
    assert plan["vq"].config["train_data_dir"] == str(tmp_path / "r" / "data" / "photos" / "tiles64")
    assert repro.main(["--workdir", str(tmp_path / "m"), "--dry-run", "--vae-photos", str(ready)]) == 0
    with pytest.raises(ValueError, match="share \\['skimage'\\]; stage 0 must train on other photos"):
        repro.build_plan(tmp_path, "cpu", tmp_path, overrides={"sources": ["skimage", "opencv-doc"], "vae_sources": ["skimage"]})
    for bad in ("skimage", [], [1]):
        with pytest.raises(ValueError, match="'vae_sources' takes null or a non-empty list"):
            repro.build_plan(tmp_path, "cpu", tmp_path, overrides={"vae_sources": bad})
    # a prepared photo set from other sources is refused, not silently reused (its stage would be skipped)
    photos.mkdir(parents=True)
    (photos / "manifest.json").write_text(json.dumps({"config": {"sources": ["skimage"]}}))
    with pytest.raises(ValueError, match="prepared from the sources \\['skimage'\\], but the config's 'sources'"):
        repro.build_plan(tmp_path, "cpu-latent16-offdomain", tmp_path)
    vae_photos.mkdir(parents=True)
    (vae_photos / "manifest.json").write_text(json.dumps({"config": {"sources": ["skimage"]}}))
    with pytest.raises(ValueError, match="the config's 'vae_sources'"):
        repro.build_plan(tmp_path, "cpu-latent16-offdomain", tmp_path, photos=ready)
    with pytest.raises(SystemExit):
        repro.main(["--workdir", str(tmp_path), "--config", "cpu-latent16-offdomain", "--dry-run"])


@pytest.mark.slow
def test_reproduce_smoke_runs_every_stage(tmp_path, monkeypatch):
    """The whole experiment, 2 steps per stage, on generated tiles: every stage runs and reports."""
    import datasets
    import numpy as np
    import yaml
    from PIL import Image

    from coda_hf.data.shards import encode_png, write_parquet_shards

    repro = _load_reproduce(monkeypatch)
    photos, vae_photos = tmp_path / "photos", tmp_path / "vae-photos"  # stage 0 on other tiles (off the shelf)
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image()})
    for folder in (photos, vae_photos):
        for split, n in (("train", 8), ("eval", 4)):
            tiles = [encode_png(Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8"))) for _ in range(n)]
            write_parquet_shards({"image": tiles}, features, folder / "tiles32", split, num_shards=2)
        (folder / "manifest.json").write_text("{}")
    work = tmp_path / "work"
    argv = ["--workdir", str(work), "--config", "smoke", "--photos", str(photos), "--vae-photos", str(vae_photos)]
    assert repro.main(argv) == 0
    assert yaml.safe_load((work / "configs" / "vae.yaml").read_text())["train_data_dir"] == str(vae_photos / "tiles32")
    results = json.loads((work / "results.json").read_text())
    assert list(results) == ["vae", *LADDER_RUNS, "vqgan"]
    assert results["vqgan"]["train_steps"] == 12 and results["coda"]["train_steps"] == 2
    assert all(results[r]["tokens_per_image"] > 0 for r in (*LADDER_RUNS, "vqgan"))
    assert "utilization" not in results["vae"] and results["vae"]["num_images"] == 4
    assert json.loads((work / "runs" / "vae" / "config.json").read_text())["scaling_factor"] != 0.18215
    timings = json.loads((work / "timings.json").read_text())
    assert all(timings[r] > 0 for r in ("vae", *LADDER_RUNS, "vqgan"))
    # A second invocation finds everything done and runs nothing.
    assert repro.run_plan(repro.build_plan(work, "smoke", work, photos=photos, vae_photos=vae_photos), work) == []
