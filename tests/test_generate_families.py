"""``ralu generate`` for every family: the family and model variant read from configs before any
weights, its default preset, its guidance rules on the command line, and a whole run."""

import json

import pytest
from PIL import Image

from ralu_schedule.presets import DEFAULT_PRESETS
from ralu_torch.cli import main
from ralu_torch.testing import TINY_MODELS, chroma_pipeline_with_text, tiny_pipeline

FAMILY = {"flux-dev": "flux", "flux-schnell": "flux", "sd3-medium": "sd3", "flux2-dev": "flux2",
          "flux2-klein-4b": "flux2", "flux2-klein-base-4b": "flux2", "qwen-image": "qwen-image",
          "z-image-turbo": "z-image", "z-image": "z-image", "chroma": "chroma", "wan2.1-t2v-14b": "wan",
          "wan2.2-t2v-a14b": "wan", "hunyuanvideo1.5-480p": "hunyuanvideo1.5", "qwen-image-2.1": "qwen-image-2.1",
          "ltx-2": "ltx2"}


@pytest.mark.parametrize("model", TINY_MODELS)
def test_family_and_variant_come_from_the_configs(model, tmp_path):
    from ralu_torch.generation.plan import model_family as _family

    tiny_pipeline(model).save_pretrained(tmp_path)
    family, variant = _family(str(tmp_path))
    assert family.name == FAMILY[model] and variant == model
    assert variant in DEFAULT_PRESETS


@pytest.fixture(scope="module")
def chroma_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-chroma")
    chroma_pipeline_with_text().save_pretrained(path)
    return path


def test_generate_runs_chroma_with_its_default_preset_and_guidance(chroma_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--model", str(chroma_dir), "--prompt", "a red cat", "--negative-prompt", "blurry",
                 "--num-images", "2", "--height", "128", "--width", "96", "--out-dir", str(out),
                 "--max-sequence-length", "16"]) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["preset"] for x in lines] == ["chroma-7x"] * 2 and lines[0]["negative_prompt"] == "blurry"
    assert Image.open(out / lines[0]["file"]).size == (96, 128)


@pytest.mark.parametrize("flags, message", [
    (["--negative-prompt", "blurry", "--guidance-scale", "1"], "a negative prompt on Chroma needs guidance_scale > 1"),
    (["--true-cfg", "3"], "--true-cfg is the true CFG of FluxPipeline, QwenImagePipeline, QwenImage21Pipeline; Chroma: "
     "classifier-free"),
    (["--preset", "flux-dev-7x"], "preset 'flux-dev-7x' was made for flux-dev, but this is a Chroma pipeline"),
])
def test_family_rules_refuse_before_loading(chroma_dir, tmp_path, capsys, flags, message):
    assert main(["generate", "--model", str(chroma_dir), "--prompt", "a cat", "--height", "64", "--width", "64",
                 "--out", str(tmp_path / "x.png"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
