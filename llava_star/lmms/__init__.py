"""lmms-eval plugin: `--model llava_star`, every pruning method on every lmms-eval image task.

    python -m lmms_eval --model llava_star --model_args pretrained=liuhaotian/llava-v1.5-7b,method=star,budget=58 \\
        --tasks mme --batch_size 4 --log_samples --output_path logs/

setup.py registers `manifest` under lmms-eval's `lmms_eval.models` entry-point group; the
model is `llava_star.lmms.model.LlavaStar`, its `--model_args` are `llava_star.lmms.model_args`.
Importing this package loads neither lmms-eval, torch nor llava.
"""

MODEL_ID = "llava_star"
MODEL_CLASS = "llava_star.lmms.model.LlavaStar"


def manifest():
    """lmms-eval's registration record for `--model llava_star` (called by lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
