"""``ralu generate`` loads a saved pipeline with from_pretrained (a local path, no downloads)."""

import subprocess
import sys

import pytest
from PIL import Image

from ralu_torch.cli import main
from tiny import tiny_sd3_with_text


def test_generate_writes_an_image(model_dir, tmp_path, capsys):
    out = tmp_path / "image.png"
    code = main(["generate", "--model", str(model_dir), "--prompt", "a tiny puppy high fiving a kitten",
                 "--preset", "flux-dev-7x", "--height", "64", "--width", "96", "--seed", "0", "--out", str(out),
                 "--max-sequence-length", "16", "--device", "cpu", "--dtype", "float32"])
    assert code == 0
    assert Image.open(out).size == (96, 64)
    assert "tokens per stage [6, 9, 24]" in capsys.readouterr().out


def test_generate_is_deterministic(model_dir, tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for p in paths:
        assert main(["generate", "--model", str(model_dir), "--prompt", "a red cat", "--height", "64", "--width", "64",
                     "--out", str(p), "--max-sequence-length", "16"]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize("argv, msg", [
    (["--preset", "flux-dev-9x"], "unknown preset 'flux-dev-9x'"),
    (["--height", "100"], "height and width must be positive multiples of 32 pixels for this schedule (16 pixels per token x downsampling 2), got 100x64"),
    (["--upsample", "bilinear"], "invalid choice: 'bilinear'"),
    (["--preset", "sd3-medium-7x"], "preset 'sd3-medium-7x' was made for sd3-medium, but this is a FLUX.1 pipeline"),
    (["--guidance-scale", "nan"], "--guidance-scale must be finite"),
    (["--seed", "-1"], "--seed must lie in [0, 2**63)"),
])
def test_errors_are_one_line(model_dir, tmp_path, argv, msg):
    args = [sys.executable, "-m", "ralu_torch", "generate", "--model", str(model_dir), "--prompt", "a cat",
            "--height", "64", "--width", "64", "--out", str(tmp_path / "x.png"), *argv]
    # later flags win in argparse, so the bad value replaces the good one
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1          # one line: no warning, no progress bar
    assert r.stderr.startswith("ralu: error: ") and msg in r.stderr


def test_missing_model_is_one_line(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "a", "--height", "64", "--width", "64",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert f"--model '{tmp_path / 'nope'}': no such directory" in capsys.readouterr().err


def test_generate_with_an_sd3_model(tmp_path, capsys):
    path = tmp_path / "tiny-sd3"
    tiny_sd3_with_text().save_pretrained(path)
    out = tmp_path / "sd3.png"
    assert main(["generate", "--model", str(path), "--prompt", "a red cat", "--negative-prompt", "blurry",
                 "--preset", "sd3-medium-7x", "--height", "64", "--width", "96", "--out", str(out),
                 "--max-sequence-length", "16"]) == 0
    assert Image.open(out).size == (96, 64)
    assert "tokens per stage [6, 9, 24]" in capsys.readouterr().out


def test_negative_prompt_on_flux_needs_true_cfg(model_dir, tmp_path, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "a cat", "--negative-prompt", "dog",
            "--height", "64", "--width", "64", "--max-sequence-length", "16"]
    assert main([*args, "--out", str(tmp_path / "x.png")]) == 2
    assert "a negative prompt on FLUX.1 needs true_cfg_scale > 1" in capsys.readouterr().err
    assert main([*args, "--true-cfg", "3", "--out", str(tmp_path / "y.png")]) == 0
    assert Image.open(tmp_path / "y.png").size == (64, 64)


def test_images_carry_their_recipe_and_regenerate_bit_for_bit(model_dir, tmp_path, capsys):
    import json

    import numpy as np

    first, again = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a red cat", "--preset", "flux-dev-4x",
                 "--height", "64", "--width", "96", "--seed", "7", "--guidance-scale", "4.0",
                 "--max-sequence-length", "16", "--out", str(first)]) == 0
    capsys.readouterr()
    assert main(["info", str(first)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert (recipe["prompt"], recipe["seed"], recipe["height"], recipe["width"], recipe["guidance_scale"]) == \
        ("a red cat", 7, 64, 96, 4.0)
    assert recipe["schedule"]["info"]["preset"] == "flux-dev-4x" and recipe["model"] == str(model_dir)
    assert set(recipe["versions"]) == {"ralu", "diffusers", "torch"} and recipe["dtype"] == "float32"
    assert main(["generate", "--from", str(first), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert main(["info", str(tmp_path / "missing.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert main(["info", str(tmp_path / "plain.png")]) == 2
    assert "carries no RALU recipe" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "c.png")]) == 2
    assert "generate needs --model and --prompt or --prompts (or --from IMAGE)" in capsys.readouterr().err
