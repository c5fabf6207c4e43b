"""``ralu generate`` and ``ralu eval`` with image-conditioned models (``--image``, ``--mask``,
``--video``, ``--last-image``, ``--strength``; a prompts file's ``"image"``, ...): a tiny saved
FLUX.1 img2img model (PNG) and a tiny saved Wan 2.1 I2V model (MP4) regenerate their file bit
for bit with ``--from`` from a recipe that records each input's SHA-256 and size; a changed
input is refused by ``--from`` and is another job on resume; every bad input is one line before
any weights load (model folders of configs alone stand for the models these need no weights of)."""

import json
import shutil
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ralu_schedule._errors import UsageError
from ralu_torch import generate as gen_module
from ralu_torch.cli import main
from ralu_torch.generation.inputs import decode_image, read_input
from ralu_torch.recipe import check_recipe, read_recipe
from ralu_torch.testing import tiny_image

SMALL = ["--max-sequence-length", "16", "--device", "cpu"]


def one_line(capsys) -> str:
    """The run's one error line, the last on stderr, with no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ralu: error:")]
    assert "Traceback" not in err and len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    return lines[0]


@pytest.fixture(scope="module")
def img2img_dir(model_dir, tmp_path_factory):
    """The tiny FLUX.1 with text encoders as FluxImg2ImgPipeline (the same components; its
    model_index.json names the img2img pipeline)."""
    path = tmp_path_factory.mktemp("tiny-flux-img2img") / "model"
    shutil.copytree(model_dir, path)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxImg2ImgPipeline"}))
    return path


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory):
    """A tiny Wan 2.1 I2V (CLIP image encoder, 36 input channels) with a tiny UMT5, saved."""
    from ralu_torch.testing import conditioned_pipeline, with_text

    path = tmp_path_factory.mktemp("tiny-wan-i2v")
    with_text(conditioned_pipeline("wan2.1-i2v")).save_pretrained(path)
    return path


@pytest.fixture
def ftfy(monkeypatch):
    """diffusers 0.42.1's Wan I2V pipeline cleans every prompt with ftfy, unguarded; where ftfy is
    not installed, a stand-in whose ``fix_text`` returns the text (what ftfy does to these ASCII
    prompts)."""
    import importlib.machinery
    import importlib.util

    if importlib.util.find_spec("ftfy") is not None:
        return
    import diffusers.pipelines.wan.pipeline_wan_i2v as i2v

    stand_in = types.ModuleType("ftfy")
    stand_in.fix_text = lambda text: text
    stand_in.__spec__ = importlib.machinery.ModuleSpec("ftfy", None)
    monkeypatch.setitem(sys.modules, "ftfy", stand_in)
    monkeypatch.setattr(i2v, "ftfy", stand_in, raising=False)


@pytest.fixture
def no_loading(monkeypatch):
    """Loading any weights fails the test: what it checks must be refused before."""
    monkeypatch.setattr(gen_module, "load_pipeline", lambda *a, **k: pytest.fail("weights loaded"))


def fake_model(root, class_name: str, **configs):
    """A model folder of configs alone (``model_index.json`` naming ``class_name``, and
    ``{subfolder}/config.json``): what ralu reads before loading anything."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name, **configs.pop("index", {})}))
    for sub, cfg in configs.items():
        (root / sub).mkdir(exist_ok=True)
        name = "scheduler_config.json" if sub == "scheduler" else "config.json"
        (root / sub / name).write_text(json.dumps(cfg))
    return root


def write_clip(path, frames: int, size: int = 64):
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), (size, size), fps=8, macro_block_size=1)
    writer.send(None)
    for k in range(frames):
        writer.send(np.asarray(tiny_image(size, size, seed=k)).tobytes())
    writer.close()
    return path


# -- the files they make, and --from -------------------------------------------------------------

def test_img2img_png_regenerates_bit_for_bit_and_a_changed_image_is_refused(img2img_dir, tmp_path, capsys):
    image = tmp_path / "cat.png"
    tiny_image(64, 96).save(image)                           # 96 x 64: the run's size, none given
    out = tmp_path / "edit.png"
    args = ["generate", "--model", str(img2img_dir), "--prompt", "a red cat", "--image", str(image),
            "--strength", "0.6", *SMALL, "--out", str(out)]
    assert main(args) == 0
    recipe = read_recipe(out)
    want = {"path": str(image), "sha256": __import__("hashlib").sha256(image.read_bytes()).hexdigest(),
            "bytes": image.stat().st_size, "width": 96, "height": 64}
    assert recipe["inputs"] == {"image": want} and (recipe["width"], recipe["height"]) == (96, 64)
    assert (recipe["strength"], recipe["strength_used"], recipe["guidance_used"]) == (0.6, 0.6, 7.0)
    assert recipe["schedule_at_call"] and recipe["schedule"]["start"] > 0   # solved for the strength
    assert Image.open(out).size == (96, 64)
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    capsys.readouterr()
    assert main(args) == 0                                   # the same command: done already
    assert "nothing to do: 1 image(s) already there" in capsys.readouterr().out

    tiny_image(64, 96, seed=3).save(image)                   # the input changes under the same name
    changed = __import__("hashlib").sha256(image.read_bytes()).hexdigest()
    assert main(["generate", "--from", str(out), "--out", str(tmp_path / "third.png")]) == 2
    err = one_line(capsys)
    assert f"its recipe's image '{image}'" in err and want["sha256"] in err and changed in err
    assert not (tmp_path / "third.png").exists()
    assert main(args) == 2                                   # resume: a changed input is another job
    assert "differs in inputs" in one_line(capsys)


def test_wan_i2v_clip_regenerates_bit_for_bit(i2v_dir, tmp_path, ftfy):
    image = tmp_path / "first.png"
    tiny_image(64, 64).save(image)
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--model", str(i2v_dir), "--prompt", "a red cat", "--image", str(image), "--height", "64",
                 "--width", "64", "--num-frames", "5", *SMALL, "--out", str(out)]) == 0
    recipe = json.loads((tmp_path / "clip.json").read_text())
    assert recipe["inputs"]["image"]["sha256"] == __import__("hashlib").sha256(image.read_bytes()).hexdigest()
    assert (recipe["num_frames"], recipe["schedule_source"]) == (5, "wan21-i2v-480p-7x") and "strength" not in recipe
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.fixture(scope="module")
def kontext_dir(tmp_path_factory):
    """A tiny FLUX.1 Kontext (tests/tiny.py's) with the tiny FLUX.1 text encoders, saved."""
    from tiny import tiny_kontext

    from ralu_torch.testing import with_text

    path = tmp_path_factory.mktemp("tiny-kontext")
    with_text(tiny_kontext()).save_pretrained(path)
    return path


def test_kontext_edit_png_regenerates_bit_for_bit_and_a_changed_image_is_refused(kontext_dir, tmp_path, capsys):
    """An editing model: its output size is its own (the model's 1024 x 1024, not the image's), the
    recipe records the reference image's SHA-256, --from makes the same PNG and refuses a changed image."""
    image = tmp_path / "cat.png"
    tiny_image(64, 96).save(image)
    out = tmp_path / "edit.png"
    assert main(["generate", "--model", str(kontext_dir), "--prompt", "make it red", "--image", str(image), *SMALL,
                 "--out", str(out)]) == 0
    recipe = read_recipe(out)
    digest = __import__("hashlib").sha256(image.read_bytes()).hexdigest()
    assert recipe["inputs"]["image"] == {"path": str(image), "sha256": digest, "bytes": image.stat().st_size,
                                         "width": 96, "height": 64}
    assert (recipe["width"], recipe["height"], recipe["schedule_source"]) == (1024, 1024, "flux-kontext-dev-7x")
    assert Image.open(out).size == (1024, 1024) and "strength" not in recipe
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    capsys.readouterr()
    tiny_image(64, 96, seed=5).save(image)
    assert main(["generate", "--from", str(out), "--out", str(tmp_path / "third.png")]) == 2
    err = one_line(capsys)
    assert f"its recipe's image '{image}' is not the file it recorded: SHA-256 {digest} recorded" in err
    assert not (tmp_path / "third.png").exists()


def test_qwen_image_edit_s_size_without_one_given_is_the_pipeline_s_own():
    """The size ralu generate gives an edit without --height/--width (read before loading, from the
    configs) is the one the pipeline's own sizing gives the image (the backend's call_size, which
    tests/test_references.py holds to the stock pipeline's output)."""
    from tiny import tiny_qwen_edit

    from ralu_torch.backends import backend_for
    from ralu_torch.backends.families import conditioned_pipeline, read_pipeline_config

    for plus in (False, True):
        pipe = tiny_qwen_edit(plus=plus)
        rule, backend = conditioned_pipeline(type(pipe).__name__)[1].size, backend_for(pipe)
        for width, height in ((96, 64), (64, 200), (300, 300)):
            own = backend.call_size("a cat", None, None, {"image": tiny_image(height, width)})
            assert rule(read_pipeline_config(pipe), width, height) == own


def test_a_prompts_file_names_an_image_per_line(img2img_dir, tmp_path, capsys):
    """Paths relative to the prompts file's folder; each line's size is its image's; a line may set
    its strength; images of one input share a batch, and --from regenerates a batch member."""
    folder = tmp_path / "set"
    folder.mkdir()
    tiny_image(64, 64).save(folder / "a.png")
    tiny_image(64, 96, seed=1).save(folder / "b.png")
    (folder / "p.txt").write_text('{"prompt": "a red cat", "image": "a.png"}\n'
                                  '{"prompt": "a blue dog", "image": "b.png", "strength": 0.8}\n')
    out = tmp_path / "out"
    assert main(["generate", "--model", str(img2img_dir), "--prompts", str(folder / "p.txt"), "--num-images", "2",
                 "--batch-size", "2", *SMALL, "--out-dir", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["width"], r["height"], r["strength"], r["batch_size"]) for r in lines] == [
        (64, 64, 0.6, 2), (64, 64, 0.6, 2), (96, 64, 0.8, 2), (96, 64, 0.8, 2)]
    assert [r["inputs"]["image"]["path"] for r in lines] == [str(folder / n) for n in ("a.png", "a.png", "b.png",
                                                                                        "b.png")]
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out / "00003.png"), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out / "00003.png")))


def test_eval_runs_an_img2img_model_on_the_same_input_for_every_configuration(img2img_dir, tmp_path, capsys):
    image = tmp_path / "cat.png"
    tiny_image(64, 64).save(image)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    out = tmp_path / "eval"
    args = ["eval", "--model", str(img2img_dir), "--configs", "baseline:4", "flux-dev-7x", "--image", str(image),
            "--strength", "0.6", "--height", "64", "--width", "64", "--prompts", str(prompts), "--out-dir",
            str(out), "--metrics", "psnr", "--repeats", "1", "--sheet", "0", *SMALL, "-q"]
    assert main(args) == 0
    recipes = [read_recipe(p) for p in sorted((out / "images").glob("*/00000.png"))]
    assert len(recipes) == 2 and all(r["inputs"] == recipes[0]["inputs"] for r in recipes)
    assert recipes[0]["inputs"]["image"]["path"] == str(image) and all(r["strength"] == 0.6 for r in recipes)
    capsys.readouterr()
    tiny_image(64, 64, seed=7).save(image)                   # another input under the same name: other results
    assert main(args) == 2
    err = one_line(capsys)
    assert "holds the results of another ralu eval (it differs in inputs)" in err, err


# -- bad input, before loading ---------------------------------------------------------------------

FLUX_TRANSFORMER = {"guidance_embeds": True}
WAN_TRANSFORMER = {"in_channels": 36, "num_attention_heads": 2, "attention_head_dim": 12, "num_layers": 1,
                   "image_dim": 32}
MODELS = {
    "t2i": ("FluxPipeline", {"transformer": FLUX_TRANSFORMER}),
    "img2img": ("FluxImg2ImgPipeline", {"transformer": FLUX_TRANSFORMER}),
    "fill": ("FluxFillPipeline", {"transformer": FLUX_TRANSFORMER}),
    "zimage": ("ZImageImg2ImgPipeline", {"scheduler": {"shift": 6.0}}),
    "i2v": ("WanImageToVideoPipeline", {"transformer": WAN_TRANSFORMER}),
    "flf2v": ("WanImageToVideoPipeline", {"transformer": {**WAN_TRANSFORMER, "pos_embed_seq_len": 10}}),
    "ti2v": ("WanImageToVideoPipeline", {"index": {"expand_timesteps": True},
                                         "transformer": {**WAN_TRANSFORMER, "in_channels": 48, "image_dim": None}}),
    "kontext": ("FluxKontextPipeline", {"transformer": FLUX_TRANSFORMER}),
    "qwen-edit": ("QwenImageEditPipeline", {"vae": {"temperal_downsample": [False, True, True]}}),
    "v2v": ("WanVideoToVideoPipeline", {"transformer": {**WAN_TRANSFORMER, "in_channels": 16, "image_dim": None}}),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input files of every kind a test below needs, made once."""
    d = tmp_path_factory.mktemp("inputs")
    tiny_image(64, 64).save(d / "cat.png")
    tiny_image(64, 64).convert("L").save(d / "grey.png")
    tiny_image(32, 32).save(d / "small.png")
    tiny_image(72, 72).save(d / "offgrid.png")
    clear = tiny_image(64, 64).convert("RGBA")
    clear.putpixel((3, 3), (0, 0, 0, 0))
    clear.save(d / "clear.png")
    tiny_image(64, 64).convert("RGBA").save(d / "opaque.png")
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(d / "deep.png")
    frames = [tiny_image(64, 64, seed=k) for k in range(3)]
    frames[0].save(d / "moving.gif", save_all=True, append_images=frames[1:])
    (d / "cut.png").write_bytes((d / "cat.png").read_bytes()[:200])
    (d / "noise.png").write_bytes(bytes(range(256)) * 4)
    (d / "folder.png").mkdir()
    write_clip(d / "clip.mp4", 5)
    write_clip(d / "six.mp4", 6)
    return d


BAD = [
    ("t2i", ["--image", "cat.png"], "--image: ralu generate gives FluxPipeline no files (a text-to-image model"),
    ("t2i", ["--strength", "0.5"], "--strength: FluxPipeline does not start from an image or a clip, so it takes no "
                                   "strength"),
    ("img2img", [], "FluxImg2ImgPipeline needs --image FILE: the image to start from"),
    ("img2img", ["--image", "cat.png", "--mask", "cat.png"], "--mask: FluxImg2ImgPipeline takes no mask, it takes "
                                                             "--image; --mask is for FluxFillPipeline"),
    ("img2img", ["--image", "cat.png", "--strength", "0"], "--strength: strength must lie in (0, 1]"),
    ("img2img", ["--image", "cat.png", "--strength", "1.5"], "--strength: strength must lie in (0, 1]"),
    ("img2img", ["--image", "cat.png", "--strength", "nan"], "--strength: strength must lie in (0, 1]"),
    ("img2img", ["--image", "missing.png"], "--image 'missing.png': no such file"),
    ("img2img", ["--image", "folder.png"], "--image 'folder.png' is a directory, not a file"),
    ("img2img", ["--image", "cut.png"], "--image 'cut.png': cannot decode it as an image"),
    ("img2img", ["--image", "noise.png"], "--image 'noise.png': cannot decode it as an image"),
    ("img2img", ["--image", "clip.mp4"], "--image 'clip.mp4' is a clip; FluxImg2ImgPipeline takes an image here"),
    ("img2img", ["--image", "moving.gif"], "--image 'moving.gif' holds 3 frames (an animation)"),
    ("img2img", ["--image", "clear.png"], "--image 'clear.png' has transparent pixels"),
    ("img2img", ["--image", "deep.png"], "--image 'deep.png' is a I;16 image; FluxImg2ImgPipeline takes RGB"),
    ("img2img", ["--image", "offgrid.png"], "must be positive multiples of 32 pixels for this schedule (16 pixels per "
                                            "token x downsampling 2), got 72x72 (the size of 'offgrid.png'; give "
                                            "--height and --width to resize it)"),
    ("fill", ["--image", "cat.png"], "FluxFillPipeline needs --mask FILE: the mask (white: the region to fill)"),
    ("fill", ["--image", "cat.png", "--mask", "small.png"], "--mask 'small.png' is 32x32 and its image"),
    ("fill", ["--image", "cat.png", "--mask", "cat.png", "--strength", "0.5"], "--strength: FluxFillPipeline does not "
                                                                               "start from an image or a clip"),
    ("zimage", ["--image", "cat.png", "--height", "128"], "ZImageImg2ImgPipeline runs at its image's size, 64x64"),
    ("i2v", ["--num-frames", "5"], "WanImageToVideoPipeline needs --image FILE: the clip's first frame"),
    ("i2v", ["--image", "cat.png", "--last-image", "cat.png"], "--last-image: this WanImageToVideoPipeline model "
                                                                "takes no last_image: this Wan 2.1 I2V model's image "
                                                                "embedder takes one image's CLIP tokens"),
    ("flf2v", ["--image", "cat.png"], "WanImageToVideoPipeline needs --last-image FILE: the clip's last frame (Wan "
                                      "2.1 FLF2V)"),
    ("ti2v", ["--image", "cat.png", "--last-image", "cat.png"], "takes no last_image: Wan 2.2 TI2V conditions its "
                                                                 "clip on the first frame only"),
    ("i2v", ["--image", "clip.mp4"], "--image 'clip.mp4' is a clip; WanImageToVideoPipeline takes an image here"),
    ("kontext", ["--image", "clip.mp4"], "--image 'clip.mp4' is a clip; FluxKontextPipeline takes an image here"),
    ("kontext", ["--image", "clear.png"], "--image 'clear.png' has transparent pixels"),
    ("kontext", ["--image", "cat.png", "--strength", "0.5"], "--strength: FluxKontextPipeline does not start from "
                                                             "an image or a clip"),
    ("kontext", ["--image", "cat.png", "--mask", "cat.png"], "--mask: FluxKontextPipeline takes no mask, it takes "
                                                             "--image"),
    ("kontext", ["--image", "cat.png", "--height", "64", "--width", "96"], "FluxKontextPipeline rescales its size to "
     "its max_area: 96x64 (width x height) would become 1248x832; give --width 1248 --height 832 (a size it keeps)"),
    ("qwen-edit", ["--num-images", "1"], "QwenImageEditPipeline needs --image FILE: the image to edit"),
    ("qwen-edit", ["--image", "moving.gif"], "--image 'moving.gif' holds 3 frames (an animation)"),
    ("v2v", ["--video", "cat.png"], "--video 'cat.png' is one image; WanVideoToVideoPipeline starts from a clip"),
    ("v2v", ["--video", "six.mp4"], "--video 'six.mp4': a clip of 6 frames; frames must be 4k + 1"),
    ("v2v", ["--video", "clip.mp4", "--num-frames", "5"], "--num-frames: WanVideoToVideoPipeline makes a clip of its "
                                                          "--video's frames; leave it out"),
    ("v2v", ["--video", "clip.mp4", "--image", "cat.png"], "--image: WanVideoToVideoPipeline takes no image, it takes "
                                                           "--video"),
]


@pytest.mark.parametrize("model, argv, msg", BAD, ids=[f"{m}:{' '.join(a)}" for m, a, _ in BAD])
def test_bad_input_is_one_line_before_loading(model, argv, msg, files, tmp_path, capsys, monkeypatch, no_loading,
                                              ftfy):
    name, configs = MODELS[model]
    folder = fake_model(tmp_path / model, name, **configs)
    monkeypatch.chdir(files)
    out = tmp_path / ("x.mp4" if name.startswith("Wan") else "x.png")
    assert main(["generate", "--model", str(folder), "--prompt", "a cat", *argv, *SMALL, "--out", str(out)]) == 2
    assert msg in one_line(capsys)


@pytest.mark.parametrize("line, msg", [
    ('{"prompt": "a", "image": "cat.png", "mask": "cat.png"}', 'p.txt:1: "mask": FluxImg2ImgPipeline takes no mask'),
    ('{"prompt": "a", "image": "missing.png"}', 'p.txt:1: "image" \'{d}/missing.png\': no such file'),
    ('{"prompt": "a", "image": "cat.png", "strength": 2}', 'p.txt:1: "strength": strength must lie in (0, 1]'),
    ('{"prompt": "a", "image": 3}', 'p.txt:1: "image" must be a path (a non-empty string), got 3'),
    ('{"prompt": "a"}', 'p.txt:1: FluxImg2ImgPipeline needs --image FILE (or a "image" on each line): the image to '
                        "start from"),
])
def test_a_prompts_file_line_s_bad_input_names_the_line(line, msg, files, tmp_path, capsys, no_loading):
    folder = fake_model(tmp_path / "m", *MODELS["img2img"][:1], **MODELS["img2img"][1])
    (files / "p.txt").write_text(line + "\n")
    assert main(["generate", "--model", str(folder), "--prompts", str(files / "p.txt"), *SMALL,
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert msg.format(d=files) in one_line(capsys)


def test_a_pipeline_whose_call_needs_a_missing_module_is_refused_before_loading(files, tmp_path, capsys,
                                                                               monkeypatch, no_loading):
    monkeypatch.setitem(sys.modules, "ftfy", None)           # as if ftfy were not installed
    folder = fake_model(tmp_path / "i2v", *MODELS["i2v"][:1], **MODELS["i2v"][1])
    assert main(["generate", "--model", str(folder), "--prompt", "a cat", "--image", str(files / "cat.png"), *SMALL,
                 "--out", str(tmp_path / "x.mp4")]) == 2
    assert "WanImageToVideoPipeline needs ftfy, which is not installed" in one_line(capsys)


def test_opaque_and_grey_images_are_read_as_rgb_without_loss(files):
    """An alpha channel whose every pixel is opaque, and a grey image, lose nothing as RGB: taken."""
    rgb = np.asarray(tiny_image(64, 64))
    assert np.array_equal(np.asarray(decode_image(str(files / "opaque.png"), "image", "--image", "P")), rgb)
    grey = np.asarray(decode_image(str(files / "grey.png"), "image", "--image", "P"))
    assert grey.shape == (64, 64, 3) and np.array_equal(grey[..., 0], np.asarray(Image.open(files / "grey.png")))


@pytest.mark.parametrize("inputs", [
    ["not a dict"], {"image": "cat.png"}, {"image": {"path": "cat.png", "sha256": "abc"}},
    {"mystery": {"path": "cat.png", "sha256": "0" * 64}}, {"image": {"path": 3, "sha256": "0" * 64}},
])
def test_a_recipe_s_inputs_are_checked_before_use(inputs):
    with pytest.raises(UsageError, match="its recipe's '?inputs"):
        check_recipe({"format": "ralu-image/1", "inputs": inputs}, "x.png")


# -- the class: any file is taken or refused in one line ---------------------------------------------

MODES = ("RGB", "RGBA", "L", "LA", "1", "P", "I", "I;16", "F", "CMYK", "YCbCr")


@settings(max_examples=40)
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(("PNG", "TIFF", "WEBP", "JPEG", "GIF", "BMP")),
       alpha=st.sampled_from((255, 0)), cut=st.one_of(st.none(), st.integers(0, 400)), kind=st.sampled_from(("image",
                                                                                                              "mask")))
def test_any_file_is_read_losslessly_or_refused_in_one_line(tmp_path_factory, mode, fmt, alpha, cut, kind):
    """Whatever the mode, format or truncation of a file, :func:`read_input` either takes it (its
    size as PIL reads it; the pixels as the pipeline gets them, of the file's size) or refuses it
    with a UsageError: never another exception."""
    import io

    img = tiny_image(16, 24)
    if mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        img.putpixel((0, 0), (1, 2, 3, alpha))
    try:
        img = img.convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return                                               # this Pillow cannot write the mode in the format
    data = buf.getvalue() if cut is None else buf.getvalue()[:cut]
    path = tmp_path_factory.mktemp("fuzz") / f"x.{fmt.lower()}"
    path.write_bytes(data)
    try:
        f = read_input(str(path), kind, "--image", "P")
    except UsageError as err:
        assert "\n" not in str(err)
        return
    assert (f.width, f.height) == (24, 16) and f.bytes == len(data)
    assert decode_image(str(path), kind, "--image", "P").size == (24, 16)
