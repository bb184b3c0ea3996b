"""device_map: a model dispatched by accelerate (hooks on every module, the last four decoder
layers offloaded to disk, their weights on "meta" until a hook loads them) prunes and generates
exactly as the plain model. PDrop ranks with an offloaded layer's own projections (layer 6)."""
import pytest

from conftest import greedy, inputs, load
import llava_star.hf
from llava_star import MethodConfig


def dispatched(path, offload_dir, next_=False):
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    cls = LlavaNextForConditionalGeneration if next_ else LlavaForConditionalGeneration
    # NeXT's image_newline is a bare parameter of the model: accelerate requires a device for it
    # and then warns that the key names no submodule
    dm = {"model.image_newline": "cpu"} if next_ else {}
    dm.update({"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu", "lm_head": "cpu",
          "model.language_model.embed_tokens": "cpu", "model.language_model.norm": "cpu",
          "model.language_model.rotary_emb": "cpu"})
    dm.update({f"model.language_model.layers.{i}": "cpu" if i < 4 else "disk" for i in range(8)})
    return cls.from_pretrained(path, device_map=dm, offload_folder=str(offload_dir)).eval()


@pytest.mark.filterwarnings("ignore:The following device_map keys do not match any submodules")
@pytest.mark.parametrize("name,budget,variant", [("star", 58, "1.5"), ("pdrop", 29, "1.5"), ("star", 58, "next")])
def test_dispatched_model_prunes_and_generates_as_the_plain_one(tiny_hf, tiny_hf_next, images, tmp_path, name,
                                                                  budget, variant):
    cfg = MethodConfig.from_name(name, budget=budget)
    path = tiny_hf_next if variant == "next" else tiny_hf
    proc, plain = load(path, star=cfg)
    batch = inputs(proc, [images["coffee"], images["chelsea"]], ["What is shown?", "Describe the colors."])
    want = greedy(plain, batch, n=4).tolist()
    want_kept = [[k.tolist() for k in r.decoder_kept] + [r.stage1_kept.tolist()] for r in plain.star_record]
    model = dispatched(path, tmp_path, next_=variant == "next")
    assert "_old_forward" in vars(model)  # accelerate really wrapped it
    assert str(model.model.language_model.layers[6].self_attn.q_proj.weight.device) == "meta"
    llava_star.hf.apply(model, cfg)
    assert greedy(model, batch, n=4).tolist() == want
    assert [[k.tolist() for k in r.decoder_kept] + [r.stage1_kept.tolist()] for r in model.star_record] == want_kept
    llava_star.hf.remove(model)
    assert len(greedy(model, batch, n=1)[0]) == 1  # the stock forward is back behind the hook
