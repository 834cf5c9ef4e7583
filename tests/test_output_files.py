"""coda_hf.output_files (checks before the work, atomic writes, distinct names), coda_hf.tokens_file and the
CLI's error handling and decode command."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers_coda import images, tiny_coda
from PIL import Image

from coda_hf.cli import main
from coda_hf.output_files import (
    atomic_output,
    check_output_dir,
    check_output_file,
    distinct_output_names,
    write_text_atomic,
)
from coda_hf.tokens_file import TokenizedImage, TokensFile, read_tokens, save_tokens


def test_distinct_output_names_mirror_the_tree_and_disambiguate(tmp_path):
    inputs = [tmp_path / "valid.png", tmp_path / "sub" / "valid.png", tmp_path / "sub" / "valid_1.png"]
    assert distinct_output_names(inputs, ".png") == ["valid.png", "sub/valid.png", "sub/valid_1.png"]
    same_stem = [tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "x.png"]
    assert distinct_output_names(same_stem, ".png") == ["x.png", "x_png.png", "x_png_2.png"]
    assert distinct_output_names([tmp_path / "a" / "im.png"], ".png") == ["im.png"]
    assert distinct_output_names([], ".png") == []


def test_checks_create_nothing_and_name_the_problem(tmp_path):
    target = tmp_path / "new" / "deeper" / "t.safetensors"
    assert check_output_file(target) == target and not (tmp_path / "new").exists()
    assert check_output_dir(tmp_path / "out", ["a.png"]) == tmp_path / "out" and not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "t.safetensors")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_file(tmp_path / "file")
    assert check_output_file(tmp_path / "file", overwrite=True) == tmp_path / "file"
    (tmp_path / "out" / "b.png").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match="b.png is a folder"):
        check_output_dir(tmp_path / "out", ["a.png", "b.png"], overwrite=True)
    with pytest.raises(PermissionError, match="cannot write in /proc"):
        check_output_file("/proc/coda-hf/t.safetensors")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.png", "file", "out"]  # no probe left behind


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    with atomic_output(tmp_path / "picture.png") as tmp:
        Image.new("RGB", (2, 2)).save(tmp)  # the temporary name keeps the suffix: PIL picks PNG
    assert Image.open(tmp_path / "picture.png").format == "PNG"


def test_tokens_file_round_trip_and_decode_at_the_stored_size(tmp_path):
    model = tiny_coda()
    pixels = images(1, 32)[..., :, :20]  # (1, 3, 32, 20): not square
    with torch.no_grad():
        enc = model.encode(pixels)
        item = TokenizedImage("tokens_0", "a/b.png", enc.token_ids[0], (32, 20), [tuple(i.shape[-2:]) for i in enc.indices])
        save_tokens(tmp_path / "t.safetensors", TokensFile([item], model="m", codebook_size=model.codebook_size))
        back = read_tokens(tmp_path / "t.safetensors")
        assert back.model == "m" and back.codebook_size == 32 and back.images[0].image_size == (32, 20)
        assert torch.equal(back.images[0].token_ids, enc.token_ids[0]) and back.images[0].path == "a/b.png"
        decoded = model.decode(back.images[0].token_ids[None], image_size=back.images[0].image_size)
        torch.testing.assert_close(decoded, model.decode(enc.indices))
        with pytest.raises(ValueError, match="not both"):
            model.decode(enc.token_ids, latent_size=(16, 10), image_size=(32, 20))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.safetensors is not a coda-hf token file"):
        read_tokens(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_tokens(tmp_path / "missing")


def test_decode_command_overwrite_and_debug(tmp_path, capsys):
    tiny_coda().save_pretrained(tmp_path / "coda")
    for i, size in enumerate([(32, 40), (36, 32)]):
        folder = tmp_path / "photos" / f"set{i}"
        folder.mkdir(parents=True)
        Image.new("RGB", size[::-1], (10 * i, 50, 90)).save(folder / "same.png")
    inputs = [str(p) for p in sorted((tmp_path / "photos").rglob("*.png"))]
    tokens = str(tmp_path / "tokens.safetensors")
    assert main(["tokenize", *inputs, "--model", str(tmp_path / "coda"), "--output", tokens, "--no-progress"]) == 0
    stored = {json.dumps(list(i.image_size)) for i in read_tokens(tokens).images}
    out = tmp_path / "decoded"
    assert main(["decode", tokens, "--output-dir", str(out)]) == 0  # the model recorded in the file
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["set0/same.png", "set1/same.png"]
    assert {json.dumps(list(Image.open(out / w).size[::-1])) for w in written} == stored
    capsys.readouterr()
    assert main(["decode", tokens, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds 2 of the 2 output(s)" in err
    assert main(["--debug", "decode", tokens, "--output-dir", str(out), "--overwrite"]) == 0
    with pytest.raises(FileExistsError):  # --debug: the exception itself, with its traceback
        main(["decode", tokens, "--output-dir", str(out), "--debug"])


def test_cli_unexpected_errors_exit_1_with_one_line(monkeypatch, tmp_path, capsys):
    import coda_hf.commands.decode as decode

    def boom(args):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(decode, "run", boom)
    assert main(["decode", "x", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "coda-hf decode: error: RuntimeError: something broke over two lines (rerun with --debug for the traceback)\n"
